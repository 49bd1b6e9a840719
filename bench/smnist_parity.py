#!/usr/bin/env python3
"""bench/smnist_parity.py: PyTorch's half of the sMNIST parity check (bench/smnist_parity.sh
runs both halves). Reads the file bench/smnist_parity.lua wrote (efla's initial weights, the
batches efla trained on, efla's losses, gradient norms and parameters after every step),
builds the same model in PyTorch (bench/torch_smnist_ref.py), loads efla's weights, trains on
the same batches in the same order with the same AdamW groups and clip, and prints per step
both losses, their relative difference, both gradient norms, the largest parameter difference
(absolute) and the largest relative difference of a parameter tensor, |p_torch - p_efla| /
|p_efla| (Frobenius norms). The relative norm, not the largest entry, is the criterion: an
entry whose gradient is ~1e-10 (far below AdamW's eps 1e-8) moves by lr * g / (|g| + eps), so
float32 rounding noise in that gradient moves it by up to ~lr/50 on either side; one such
entry of k_proj does exactly that (docs/RESULTS.md, "sMNIST parity").

    python3 bench/smnist_parity.py /tmp/smnist_parity.h5 [--tol 1e-4] [--threads 1]

Exit status 0 when every step's loss and every parameter tensor agree to --tol (relative);
1 otherwise. float32, CPU, no TF32.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_smnist_ref import build_model  # noqa: E402


def attr_json(f, key):
    """A JSON root attribute of an efla checkpoint (long ones live in /efla_strings)."""
    if key in f.attrs:
        v = f.attrs[key]
    else:
        v = f["efla_strings/" + key][()]
    if isinstance(v, bytes):
        v = v.decode()
    return json.loads(v)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="the HDF5 file bench/smnist_parity.lua wrote")
    p.add_argument("--tol", type=float, default=1e-4, help="relative tolerance (loss and parameters)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False

    with h5py.File(args.file, "r") as f:
        meta = attr_json(f, "meta_json")
        metrics = attr_json(f, "metrics_json")
        cfg = attr_json(f, "config_json")
        init = {name: torch.from_numpy(np.array(f["model/" + name.replace(".", "/")])) for name in meta["names"]}
        xs = torch.from_numpy(np.array(f["parity/x"]))
        ys = torch.from_numpy(np.array(f["parity/y"])).long() - 1  # efla's classes are 1-based
        efla_params = np.array(f["parity/params"])
    method, arch = meta["method"], cfg.get("arch", "efla-variant")
    print(f"parity: {method}, model {arch}, {meta['steps']} steps of batch {meta['batch']}, lr {meta['lr']}, "
          f"weight decay {meta['weight_decay']}, clip {meta['clip']}; torch {torch.__version__}, "
          f"{args.threads} thread(s); efla {meta.get('threads')} thread(s)")

    model = build_model(method, arch, T=cfg["seq_len"])
    names = [n for n, _ in model.named_parameters()]
    if sorted(names) != sorted(meta["names"]):
        print("parameter names differ:\n  efla  " + " ".join(sorted(meta["names"])) + "\n  torch " + " ".join(sorted(names)))
        return 1
    with torch.no_grad():
        for n, prm in model.named_parameters():
            if tuple(prm.shape) != tuple(init[n].shape):
                print(f"{n}: torch shape {tuple(prm.shape)}, efla {tuple(init[n].shape)}")
                return 1
            prm.copy_(init[n])
    # the same AdamW groups: compare the decay each parameter gets
    groups = model.param_groups(meta["weight_decay"])
    torch_wd = {id(q): g["weight_decay"] for g in groups for q in g["params"]}
    params = dict(model.named_parameters())
    for n, wd in zip(meta["names"], meta["param_weight_decay"]):
        if abs(torch_wd[id(params[n])] - wd) > 0:
            print(f"weight-decay group differs for {n}: efla {wd}, torch {torch_wd[id(params[n])]}")
            return 1
    opt = torch.optim.AdamW(groups, lr=meta["lr"])

    # efla's flat parameter rows are in meta.names order
    offsets, o = {}, 0
    for n, shape in zip(meta["names"], meta["shapes"]):
        size = int(np.prod(shape)) if shape else 1
        offsets[n] = (o, size)
        o += size

    ok, worst_loss, worst_param = True, 0.0, 0.0
    print(f"{'step':>4} {'efla loss':>12} {'torch loss':>12} {'rel diff':>9} {'efla |g|':>10} {'torch |g|':>10} "
          f"{'max |dp|':>9} {'rel |dp|':>9}  worst tensor")
    model.train()
    for s in range(meta["steps"]):
        logits = model(xs[s])
        loss = F.cross_entropy(logits, ys[s])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), meta["clip"]))
        opt.step()
        le, lt = metrics["loss"][s], loss.item()
        rel_loss = abs(le - lt) / max(abs(le), 1e-12)
        max_abs, max_rel, worst = 0.0, 0.0, ""
        with torch.no_grad():
            for n, prm in model.named_parameters():
                a, size = offsets[n]
                e = torch.from_numpy(efla_params[s, a:a + size]).view_as(prm)
                diff = prm - e
                d = diff.abs().max().item()
                r = diff.norm().item() / max(e.norm().item(), 1e-12)
                max_abs = max(max_abs, d)
                if r > max_rel:
                    max_rel, worst = r, n
        worst_loss, worst_param = max(worst_loss, rel_loss), max(worst_param, max_rel)
        ok = ok and rel_loss <= args.tol and max_rel <= args.tol
        print(f"{s + 1:4d} {le:12.7f} {lt:12.7f} {rel_loss:9.2e} {metrics['grad_norm'][s]:10.5f} {gnorm:10.5f} "
              f"{max_abs:9.2e} {max_rel:9.2e}  {worst}")
    print(f"parity {method} ({arch}): worst loss rel diff {worst_loss:.2e}, worst parameter rel diff "
          f"{worst_param:.2e} over {meta['steps']} steps: {'AGREE' if ok else 'DIFFER'} (tol {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
