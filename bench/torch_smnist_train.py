#!/usr/bin/env python3
"""bench/torch_smnist_train.py: train the published sMNIST model in PyTorch (the token-loop
rendition in bench/torch_smnist_ref.py) on efla's own split, over several seeds, and report
clean test accuracy per seed and mean ± std, so that efla's accuracy can be compared with the
published model's on identical digits (issue: sMNIST parity over seeds).

    efla bench/smnist_export.lua --out /tmp/smnist-export          # efla's split as raw bytes
    python3 bench/torch_smnist_train.py --data /tmp/smnist-export --seeds 1,2,3 --out torch_seeds.csv

Training follows the published script: PyTorch's own initialisation (torch.manual_seed(seed)),
a fresh random order every epoch (keeping the last partial batch, as torch's DataLoader does),
AdamW (weight decay 0.01 on every parameter), lr 3e-3 EFLA / 1e-3 DeltaNet (efla's recipe),
clip 1.0, batch 128, pixels x/255. float32 without TF32.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_smnist_ref import LR, build_model  # noqa: E402


def load(folder, split):
    x = np.fromfile(os.path.join(folder, f"{split}_images.u8"), dtype=np.uint8)
    y = np.fromfile(os.path.join(folder, f"{split}_labels.u8"), dtype=np.uint8)
    if x.size != y.size * 784:
        sys.exit(f"torch_smnist_train: {folder}/{split}_images.u8 has {x.size} bytes, expected {y.size} x 784")
    return torch.from_numpy(x.reshape(-1, 784).astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def train_and_test(method, seed, args, data, device):
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    model = build_model(method, args.model).to(device)
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=args.lr or LR[method])
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(args.epochs):
        order = torch.randperm(xtr.shape[0], generator=gen)
        for i in range(0, xtr.shape[0], args.batch):
            idx = order[i:i + args.batch]
            x, y = xtr[idx].to(device), ytr[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 512):
            pred = model(xte[i:i + 512].to(device)).argmax(-1).cpu()
            correct += int((pred == yte[i:i + 512]).sum())
    return correct / xte.shape[0], losses[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder written by bench/smnist_export.lua")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    p.add_argument("--methods", default="efla,deltanet", help="comma-separated: efla, deltanet")
    p.add_argument("--model", default="published", help="published or efla-variant")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="override the per-method rate")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="CSV of method, seed, clean accuracy, final loss")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    data = (load(args.data, "train"), load(args.data, "test"))
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; "
          f"{data[0][0].shape[0]} training / {data[1][0].shape[0]} test digits, {args.epochs} epoch(s)", flush=True)
    rows = []
    for method in args.methods.split(","):
        accs = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            t0 = time.perf_counter()
            acc, loss = train_and_test(method, seed, args, data, device)
            accs.append(acc)
            rows.append((method, seed, acc, loss))
            print(f"{method} seed {seed}: clean {acc:.4f}, final loss {loss:.4f}, {time.perf_counter() - t0:.1f} s", flush=True)
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        print(f"{method}: clean {statistics.mean(accs):.3f} ± {sd:.3f} over {len(accs)} seeds", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("method,seed,clean_accuracy,final_loss\n")
            for r in rows:
                f.write("%s,%d,%.6f,%.6f\n" % r)


if __name__ == "__main__":
    main()
