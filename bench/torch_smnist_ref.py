#!/usr/bin/env python3
"""bench/torch_smnist_ref.py: a PyTorch version of the published sequential-MNIST EFLA model,
with its memory updated token by token in a Python loop (as the published reference does),
timed per training step. It is the baseline of the "efla at least 20x faster per step"
target; written from the model's description, not copied from any code.

    PYTHONUNBUFFERED=1 python3 bench/torch_smnist_ref.py                 (cuda, batch 128)
    python3 bench/torch_smnist_ref.py --device cpu --batch 2 --seq-len 16 --steps 1   (check)

Model (d = 64, T = 784): h = GELU(Linear(1, d)(x_t) + pos_emb[t]) with a learned position
embedding [T, d] (std 0.02); one attention layer: q, k, v = Linear(d, d, bias=False)(h),
beta_t = sigmoid(Linear(d, 1)(h)) with the bias initialised to -2, q L2-normalised, k left
as it is for EFLA (L2-normalised for DeltaNet), then for t = 0 .. T-1:
    lambda_t = max(|k_t|^2, 1e-6)
    alpha_t  = (1 - exp(-beta_t * lambda_t)) / (lambda_t + 1e-6)      (EFLA; DeltaNet: beta_t)
    S        = S + alpha_t k_t (v_t - S^T k_t)^T                       (S: [B, d, d], from 0)
    o_t      = S^T q_t * d^-0.5
then an output projection Linear(d, d, bias=False) (as in efla's DeltaAttention, so both
sides compute the same model; it costs nothing next to the loop), the residual h + o,
LayerNorm, and Linear(d, 10) on the last token. Loss cross-entropy; AdamW (lr 3e-3 for EFLA,
1e-3 for DeltaNet, weight decay 0.01); gradient-norm clip 1.0.

Timing: each step (forward, backward, clip, AdamW step, loss.item()) between
torch.cuda.synchronize() calls; warm-up steps first; the median is printed, with a markdown
row and RESULT lines that bench/gpu_bench.sh reads. float32 throughout (PyTorch's default
matmul precision: no TF32).
"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def l2_normalise(x, eps=1e-6):
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


class DeltaAttentionLoop(nn.Module):
    """One head of the delta rule, the memory updated token by token."""

    def __init__(self, d, method):
        super().__init__()
        self.d, self.method = d, method
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.b_proj = nn.Linear(d, 1)
        nn.init.constant_(self.b_proj.bias, -2.0)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x [B, T, d]
        B, T, d = x.shape
        q = l2_normalise(self.q_proj(x))
        k = self.k_proj(x)
        if self.method == "deltanet":
            k = l2_normalise(k)
        v = self.v_proj(x)
        beta = torch.sigmoid(self.b_proj(x)).squeeze(-1)  # [B, T]
        if self.method == "efla":
            lam = (k * k).sum(-1).clamp_min(1e-6)
            alpha = (1 - torch.exp(-beta * lam)) / (lam + 1e-6)
        else:
            alpha = beta
        scale = d ** -0.5
        S = x.new_zeros(B, d, d)
        outs = []
        for t in range(T):
            k_t, v_t, q_t = k[:, t], v[:, t], q[:, t]  # [B, d]
            pred = torch.bmm(k_t.unsqueeze(1), S).squeeze(1)  # S^T k_t: [B, d]
            u = alpha[:, t, None] * (v_t - pred)  # [B, d]
            S = S + k_t.unsqueeze(2) * u.unsqueeze(1)  # + alpha k (v - S^T k)^T
            outs.append(torch.bmm(q_t.unsqueeze(1), S).squeeze(1) * scale)  # S^T q_t
        o = torch.stack(outs, 1)  # [B, T, d]
        return self.o_proj(o)


class SMNISTModel(nn.Module):
    def __init__(self, method, d=64, T=784, n_classes=10):
        super().__init__()
        self.input_proj = nn.Linear(1, d)
        self.pos_emb = nn.Parameter(torch.randn(T, d) * 0.02)
        self.attn = DeltaAttentionLoop(d, method)
        self.norm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, n_classes)

    def forward(self, x):  # x [B, T] pixels
        T = x.shape[1]
        h = F.gelu(self.input_proj(x.unsqueeze(-1)) + self.pos_emb[:T])
        h = self.norm(h + self.attn(h))
        return self.classifier(h[:, -1])


LR = {"efla": 3e-3, "deltanet": 1e-3}
NAMES = {"efla": "EFLA", "deltanet": "DeltaNet"}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(method, args, device):
    torch.manual_seed(0)
    model = SMNISTModel(method, T=args.seq_len).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR[method], weight_decay=0.01)
    x = torch.rand(args.batch, args.seq_len, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    sync(device)
    times, start, loss = [], time.perf_counter(), float("nan")
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - t0)
        print(f"  torch {method} step {i + 1}: {times[-1] * 1e3:.1f} ms", file=sys.stderr)
        if len(times) >= 2 and time.perf_counter() - start > args.budget:
            break
    return statistics.median(times), min(times), len(times), loss


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=784)
    p.add_argument("--methods", default="efla", help="comma-separated: efla, deltanet")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--budget", type=float, default=40.0,
                   help="seconds at most for the timed steps of one method (after 2)")
    args = p.parse_args()
    device = torch.device(args.device)
    t_start = time.perf_counter()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows, results = [], {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if method not in LR:
            rows.append(f"| sMNIST train step, PyTorch loop, {method} | - | n/a | - | unknown method |")
            continue
        try:
            med, best, n, loss = run(method, args, device)
        except Exception as e:  # e.g. out of memory: report it, keep going
            msg = str(e).replace("\n", " ").replace("|", " ")[:200]
            rows.append(f"| sMNIST train step, PyTorch token loop, {NAMES[method]} | batch {args.batch}, "
                        f"{device.type} | n/a | - | failed: {msg} |")
            continue
        results[f"torch_{method}_ms"] = med * 1e3
        rows.append(f"| sMNIST train step, PyTorch token loop, {NAMES[method]} | batch {args.batch}, "
                    f"T {args.seq_len}, d_model 64, {device.type} | {med * 1e3:.1f} ({best * 1e3:.1f}) | "
                    f"{args.batch * args.seq_len / med / 1e3:.3g} k tokens/s | median of {n}; loss {loss:.3f} |")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"\n### sMNIST training step, PyTorch {torch.__version__} reference ({where})\n")
    print("| measurement | configuration | ms/step (best) | throughput | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(r)
    print(f"\n(PyTorch sMNIST benchmark took {time.perf_counter() - t_start:.1f} s)")
    for k, v in results.items():
        print(f"RESULT {k}={v:.4f}")


if __name__ == "__main__":
    main()
