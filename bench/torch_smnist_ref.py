#!/usr/bin/env python3
"""bench/torch_smnist_ref.py: PyTorch versions of the sequential-MNIST EFLA / DeltaNet
models, with the memory updated token by token in a Python loop (as the published reference
does), timed per training step. It is the baseline of the "efla at least 20x faster per
step" target, and bench/smnist_parity.py imports its models to replay efla's training step
for step. Written from the models' descriptions, not copied from any code.

    PYTHONUNBUFFERED=1 python3 bench/torch_smnist_ref.py                 (cuda, batch 128)
    python3 bench/torch_smnist_ref.py --device cpu --batch 2 --seq-len 16 --steps 1   (check)

Two architectures (--model), parameter names identical to efla's state dict:

published (the EFLA paper's released sMNIST model; efla's default, nn.SequenceClassifier
arch 'published'), d = 64, T = 784:
    h_t = GELU(W_in x_t + pos_t)       W_in: Linear(1, d, no bias), PyTorch's default init;
                                        pos: [T, d] ~ N(0, 0.02^2)
    q, k, v = Linear(d, d, no bias)(h)  xavier uniform
    beta_t = sigmoid(Linear(d, 1)(h_t)) PyTorch's default weight init, bias -2
    k L2-normalised for DeltaNet only; then for t = 0 .. T-1 (S [B, d, d] from 0):
      lambda_t = max(|k_t|^2, 1e-6),  alpha_t = -expm1(-beta_t lambda_t) / (lambda_t + 1e-6)
                                       (EFLA; DeltaNet: alpha_t = beta_t)
      S = S + alpha_t k_t (v_t - S^T k_t)^T
    logits = Linear(d, 10)(LayerNorm(S_T^T q_T))    q_T raw (the published loop normalises
                                        q_t but reads out with the raw last query), no scale,
                                        no output projection, no residual
    AdamW on every parameter (weight decay 0.01).

efla-variant (efla's earlier rendition): W_in with bias, q L2-normalised, o_t = S_t^T q_t *
d^-0.5 at every token, an output projection, the residual h + o, LayerNorm, Linear(d, 10) on
the last token; every Linear xavier uniform, biases zero; AdamW's weight decay on the
matrices only (biases, norms and 1-d parameters in a group without decay).

Both: cross-entropy; lr 3e-3 for EFLA, 1e-3 for DeltaNet; gradient-norm clip 1.0.

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
    """efla's (and flash-linear-attention's) l2norm: x / sqrt(sum(x^2) + eps)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def delta_loop(q, k, v, alpha, readout_all):
    """S_t = S_{t-1} + alpha_t k_t (v_t - S_{t-1}^T k_t)^T token by token; returns S_t^T q_t for
    every t ([B, T, d]) when readout_all, else S_T^T q_T ([B, d])."""
    B, T, d = k.shape
    S = k.new_zeros(B, d, v.shape[-1])
    outs = []
    for t in range(T):
        k_t = k[:, t]
        pred = torch.bmm(k_t.unsqueeze(1), S).squeeze(1)  # S^T k_t
        S = S + k_t.unsqueeze(2) * (alpha[:, t, None] * (v[:, t] - pred)).unsqueeze(1)
        if readout_all:
            outs.append(torch.bmm(q[:, t].unsqueeze(1), S).squeeze(1))
    if readout_all:
        return torch.stack(outs, 1)
    return torch.bmm(q[:, -1].unsqueeze(1), S).squeeze(1)


class PosEmb(nn.Module):
    def __init__(self, T, d):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(T, d) * 0.02)


class PublishedReadout(nn.Module):
    """The published memory layer: last-token readout with the raw query."""

    def __init__(self, d, method):
        super().__init__()
        self.method = method
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.b_proj = nn.Linear(d, 1)
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(lin.weight)
        nn.init.constant_(self.b_proj.bias, -2.0)

    def forward(self, h):
        q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        beta = torch.sigmoid(self.b_proj(h)).squeeze(-1)
        if self.method == "efla":
            lam = (k * k).sum(-1).clamp(min=1e-6)
            alpha = -torch.expm1(-beta * lam) / (lam + 1e-6)
        else:
            k = F.normalize(k, p=2, dim=-1)
            alpha = beta
        return delta_loop(q, k, v, alpha, readout_all=False)


class PublishedModel(nn.Module):
    def __init__(self, method, d=64, T=784, n_classes=10):
        super().__init__()
        self.input_proj = nn.Linear(1, d, bias=False)
        self.pos_emb = PosEmb(T, d)
        self.attn = PublishedReadout(d, method)
        self.norm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, n_classes)

    def forward(self, x):  # x [B, T] pixels
        T = x.shape[1]
        h = F.gelu(self.input_proj(x.unsqueeze(-1)) + self.pos_emb.weight[:T])
        return self.classifier(self.norm(self.attn(h)))

    def param_groups(self, weight_decay):
        return [{"params": list(self.parameters()), "weight_decay": weight_decay}]


class VariantAttention(nn.Module):
    """efla's DeltaAttention, one head: readout at every token, output projection."""

    def __init__(self, d, method):
        super().__init__()
        self.d, self.method = d, method
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.b_proj = nn.Linear(d, 1)
        self.o_proj = nn.Linear(d, d, bias=False)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.b_proj, self.o_proj):
            nn.init.xavier_uniform_(lin.weight)
        nn.init.constant_(self.b_proj.bias, -2.0)

    def forward(self, x):  # x [B, T, d]
        q = l2_normalise(self.q_proj(x))
        k = self.k_proj(x)
        if self.method == "deltanet":
            k = l2_normalise(k)
        v = self.v_proj(x)
        beta = torch.sigmoid(self.b_proj(x)).squeeze(-1)  # [B, T]
        if self.method == "efla":
            lam = (k * k).sum(-1)
            alpha = -torch.expm1(-beta * lam) / lam
        else:
            alpha = beta
        o = delta_loop(q, k, v, alpha, readout_all=True) * self.d ** -0.5
        return self.o_proj(o)


class VariantModel(nn.Module):
    def __init__(self, method, d=64, T=784, n_classes=10):
        super().__init__()
        self.input_proj = nn.Linear(1, d)
        self.pos_emb = PosEmb(T, d)
        self.attn = VariantAttention(d, method)
        self.norm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, n_classes)
        for lin in (self.input_proj, self.classifier):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x):  # x [B, T] pixels
        T = x.shape[1]
        h = F.gelu(self.input_proj(x.unsqueeze(-1)) + self.pos_emb.weight[:T])
        h = self.norm(h + self.attn(h))
        return self.classifier(h[:, -1])

    def param_groups(self, weight_decay):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            (no_decay if p.dim() < 2 or name.startswith("norm.") or name.endswith("bias") else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


MODELS = {"published": PublishedModel, "efla-variant": VariantModel}


def build_model(method, arch="published", T=784):
    return MODELS[arch](method, T=T)


LR = {"efla": 3e-3, "deltanet": 1e-3}
NAMES = {"efla": "EFLA", "deltanet": "DeltaNet"}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(method, args, device):
    torch.manual_seed(0)
    model = build_model(method, args.model, T=args.seq_len).to(device)
    model.train()
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=LR[method])
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
    p.add_argument("--model", default="published", choices=sorted(MODELS), help="architecture")
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
