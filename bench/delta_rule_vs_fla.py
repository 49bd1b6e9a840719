#!/usr/bin/env python3
"""delta_rule_vs_fla.py: efla's delta rule next to flash-linear-attention's chunk_delta_rule,
on identical inputs, in one run on the GPU machine (driven by bench/delta_rule_vs_fla.sh).

  phase 'inputs'  draws the inputs (bf16 q, k, v, beta, dO; fixed seeds) as raw files
  phase 'fla'     times fla's forward and forward+backward (triton's do_bench, median, after
                  its autotuning) and writes fla's outputs and gradients of the accuracy cases
  phase 'report'  reads efla's timings and outputs (written by delta_rule_vs_fla.lua), computes
                  an fp64 recurrence for the accuracy cases, prints both tables
  phase 'kernels' fla's time per kernel in one forward+backward (torch.profiler), at the timing
                  shapes or --shape B T H D: PYTHONPATH=.peers python3 bench/delta_rule_vs_fla.py kernels

fla computes DeltaNet's update S += b k (v - S^T k); fed b = alpha (EFLA's exact step size,
computed here from beta and |k|^2 with autograd, so that fla's gradients reach beta and k
through alpha just as efla's do) it computes EFLA. fla is not part of efla: its `fla/` package
is carried from a git-ignored folder (.peers/) and put on PYTHONPATH by the shell script.
"""
import argparse
import json
import math
import os
import sys

import torch

TIME_SHAPES = [(8, 2048, 16, 128), (4, 8192, 16, 128), (16, 4096, 32, 64), (128, 784, 1, 64)]
# accuracy cases: (name, B, T, H, d, key scale); keys are randn * scale / sqrt(d)
# accuracy cases: (name, B, T, H, d, key scale); keys are randn * scale / sqrt(d). H and d as in
# the timing shapes, so that fla reuses its autotuned kernels
ACC_CASES = [("unit keys", 1, 512, 16, 128, 1.0), ("large keys (saturating)", 1, 512, 16, 128, 4.0),
             ("tiny keys", 1, 512, 16, 128, 1e-2), ("d=64 H=1 long", 2, 2048, 1, 64, 1.0)]


def efla_alpha(beta, k):
    """alpha = (1 - exp(-beta*lambda)) / lambda with its series near 0 (docs/MATH.md §3), float32"""
    lam = (k.float() ** 2).sum(-1)
    x = beta.float() * lam
    small = x.abs() < 1e-4
    xs = torch.where(small, torch.ones_like(x), x)
    phi = torch.where(small, 1 - x / 2 + x * x / 6, -torch.expm1(-xs) / xs)
    return beta.float() * phi


def inputs(B, T, H, d, kscale, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)
    q = r(B, T, H, d).bfloat16()
    k = (r(B, T, H, d) * (kscale / math.sqrt(d))).bfloat16()
    v = r(B, T, H, d).bfloat16()
    beta = torch.rand(B, T, H, device="cuda", generator=g).bfloat16()
    do = r(B, T, H, d).bfloat16()
    return q, k, v, beta, do


def save(dirname, name, t):
    t.detach().contiguous().cpu().view(torch.uint8).numpy().tofile(os.path.join(dirname, name))


def fla_run(leaves, do, backward):
    """fla's EFLA on leaves = (q, k, v, beta); with backward, also their gradients"""
    from fla.ops.delta_rule import chunk_delta_rule
    qq, kk, vv, bb = leaves
    for x in leaves:
        x.grad = None
    a = efla_alpha(bb, kk).to(torch.bfloat16)
    o, _ = chunk_delta_rule(qq, kk, vv, a, scale=1 / math.sqrt(qq.shape[-1]))
    if backward:
        o.backward(do)
        return o, [x.grad for x in leaves]
    return o, None


def make_leaves(q, k, v, beta, grad):
    return [x.detach().clone().requires_grad_(grad) for x in (q, k, v, beta)]


def phase_inputs(a):
    """the inputs of every timing and accuracy case, as raw files, and manifest.json"""
    os.makedirs(a.dir, exist_ok=True)
    man = {"time": [], "acc": []}
    for (B, T, H, d) in TIME_SHAPES:
        name = f"B{B}_T{T}_H{H}_d{d}"
        for x, n in zip(inputs(B, T, H, d, 1.0, 1), "q k v beta do".split()):
            save(a.dir, f"{name}.{n}", x)
        man["time"].append({"name": name, "B": B, "T": T, "H": H, "d": d})
    for i, (label, B, T, H, d, ks) in enumerate(ACC_CASES):
        name = f"acc{i}"
        for x, n in zip(inputs(B, T, H, d, ks, 100 + i), "q k v beta do".split()):
            save(a.dir, f"{name}.{n}", x)
        man["acc"].append({"name": name, "label": label, "B": B, "T": T, "H": H, "d": d})
    json.dump(man, open(os.path.join(a.dir, "manifest.json"), "w"), indent=1)


def load_inputs(a, c):
    B, T, H, d = c["B"], c["T"], c["H"], c["d"]
    return [load(a.dir, f"{c['name']}.{x}", (B, T, H) if x == "beta" else (B, T, H, d), torch.bfloat16)
            for x in "q k v beta do".split()]


def phase_fla(a):
    """fla's timings (triton's do_bench, median, after its autotuning) and accuracy outputs"""
    import triton.testing
    man = json.load(open(os.path.join(a.dir, "manifest.json")))
    times = {}
    for c in man["time"]:
        q, k, v, beta, do = load_inputs(a, c)
        plain, grad = make_leaves(q, k, v, beta, False), make_leaves(q, k, v, beta, True)
        with torch.no_grad():
            fwd = triton.testing.do_bench(lambda: fla_run(plain, do, False), warmup=50, rep=300,
                                          return_mode="median")
        fb = triton.testing.do_bench(lambda: fla_run(grad, do, True), warmup=50, rep=300, return_mode="median")
        times[c["name"]] = {"fwd_ms": fwd, "fwdbwd_ms": fb}
        print(f"fla {c['name']}: fwd {fwd:.3f} ms, fwd+bwd {fb:.3f} ms", flush=True)
    json.dump(times, open(os.path.join(a.dir, "fla_times.json"), "w"), indent=1)
    for c in man["acc"]:
        q, k, v, beta, do = load_inputs(a, c)
        o, g = fla_run(make_leaves(q, k, v, beta, True), do, True)
        for x, n in zip([o] + g, "o dq dk dv dbeta".split()):
            save(a.dir, f"{c['name']}.fla.{n}", x.float())


def phase_kernels(a):
    """fla's time per kernel (torch.profiler, CUDA time a call) in one forward+backward at each
    timing shape, to set beside efla's EFLA_DELTA_RULE_PROFILE=1 workbench rows: which of fla's
    steps is faster than efla's counterpart. The alpha made in PyTorch (efla_alpha) is counted
    too, under its elementwise kernels' names."""
    from torch.profiler import profile, ProfilerActivity
    shapes = [tuple(a.shape)] if a.shape else TIME_SHAPES
    for (B, T, H, d) in shapes:
        q, k, v, beta, do = inputs(B, T, H, d, 1.0, 1)
        leaves = make_leaves(q, k, v, beta, True)
        for _ in range(5):   # autotuning and compilation out of the way
            fla_run(leaves, do, True)
        torch.cuda.synchronize()
        n = 20
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                fla_run(leaves, do, True)
            torch.cuda.synchronize()
        rows = [(e.self_device_time_total / n, e.count // n, e.key) for e in prof.key_averages()
                if e.self_device_time_total > 0]
        rows.sort(reverse=True)
        total = sum(r[0] for r in rows)
        print(f"fla kernels, B={B} T={T} H={H} d={d}, one forward+backward: {total / 1000:.3f} ms of kernel time")
        print("| us a call | launches | kernel |\n|---|---|---|")
        for us, cnt, name in rows:
            print(f"| {us:.1f} | {cnt} | {name[:90]} |")


def reference(q, k, v, beta, do):
    """fp64 recurrence with autograd: S_t = S + alpha k (v - S^T k)^T, o_t = scale S_t^T q"""
    leaves = [x.double().detach().requires_grad_(True) for x in (q, k, v, beta)]
    qq, kk, vv, bb = leaves
    B, T, H, d = qq.shape
    lam = (kk ** 2).sum(-1)
    x = bb * lam
    small = x.abs() < 1e-4
    xs = torch.where(small, torch.ones_like(x), x)
    al = bb * torch.where(small, 1 - x / 2 + x * x / 6, -torch.expm1(-xs) / xs)
    S = torch.zeros(B, H, d, vv.shape[-1], dtype=torch.float64, device=q.device)
    outs = []
    for t in range(T):
        kt, vt, qt, at = kk[:, t], vv[:, t], qq[:, t], al[:, t]
        u = vt - torch.einsum("bhkv,bhk->bhv", S, kt)
        S = S + at[..., None, None] * kt[..., :, None] * u[..., None, :]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, qt) / math.sqrt(d))
    o = torch.stack(outs, 1)
    o.backward(do.double())
    return [o] + [x.grad for x in leaves]


def load(dirname, name, shape, dtype):
    import numpy as np
    raw = np.fromfile(os.path.join(dirname, name), dtype=np.uint8)
    return torch.from_numpy(raw).view(dtype).reshape(shape).cuda()


def phase_report(a):
    man = json.load(open(os.path.join(a.dir, "manifest.json")))
    def times(who):
        p = os.path.join(a.dir, f"{who}_times.json")
        return json.load(open(p)) if os.path.exists(p) else {}
    fla_t, efla_t = times("fla"), times("efla")
    # efla twice: each call between synchronisations (host cost included), and pipelined (calls
    # queued back to back, as do_bench queues fla's); the ratios use the pipelined figures
    print("\n| shape (bf16, dk = dv) | efla fwd ms (sync / pipelined) | fla fwd ms | fla/efla | "
          "efla fwd+bwd ms (sync / pipelined) | fla fwd+bwd ms | fla/efla |")
    print("|---|---|---|---|---|---|---|")
    for c in man["time"]:
        n = c["name"]
        e, f = efla_t.get(n, {}), fla_t.get(n, {})
        ms = lambda x: f"{x:.3f}" if x else "n/a"
        ratio = lambda x, y: f"**{x / y:.2f}x**" if x and y else "n/a"
        ef, eb, ff, fb = e.get("fwd_ms"), e.get("fwdbwd_ms"), f.get("fwd_ms"), f.get("fwdbwd_ms")
        efp, ebp = e.get("fwd_pipelined_ms"), e.get("fwdbwd_pipelined_ms")
        print(f"| B={c['B']} T={c['T']} H={c['H']} d={c['d']} | {ms(ef)} / {ms(efp)} | {ms(ff)} | {ratio(ff, efp)} | "
              f"{ms(eb)} / {ms(ebp)} | {ms(fb)} | {ratio(fb, ebp)} |")
    # the accuracy target: efla never less accurate than fla on the same inputs
    print("\n| accuracy case (bf16) | tensor | efla err | fla err | efla <= fla |")
    print("|---|---|---|---|---|")
    worse = 0
    for c in man["acc"]:
        n, B, T, H, d = c["name"], c["B"], c["T"], c["H"], c["d"]
        shp = {"o": (B, T, H, d), "dq": (B, T, H, d), "dk": (B, T, H, d), "dv": (B, T, H, d), "dbeta": (B, T, H)}
        ref = reference(*load_inputs(a, c))
        for i, t in enumerate("o dq dk dv dbeta".split()):
            r = ref[i]
            errs = []
            for who in ("efla", "fla"):
                p = os.path.join(a.dir, f"{n}.{who}.{t}")
                if not os.path.exists(p):
                    errs.append(None)
                    continue
                x = load(a.dir, f"{n}.{who}.{t}", shp[t], torch.float32).double()
                errs.append(((x - r).norm() / r.norm().clamp_min(1e-300)).item())
            cell = lambda e: "missing" if e is None else f"{e:.3e}"   # 4 digits: close cells apart
            ok = "n/a" if None in errs else "yes" if errs[0] <= errs[1] else f"**no** (+{100 * (errs[0] / errs[1] - 1):.2f} %)"
            worse += ok.startswith("**no**")
            print(f"| {c['label']} B={B} T={T} H={H} d={d} | {t} | {cell(errs[0])} | {cell(errs[1])} | {ok} |")
    print(f"\nefla less accurate than fla in {worse} cell(s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["inputs", "fla", "report", "kernels"])
    ap.add_argument("--dir", default="/tmp/efla-vs-fla", help="exchange folder for inputs, outputs and timings")
    ap.add_argument("--shape", type=int, nargs=4, metavar=("B", "T", "H", "D"),
                    help="kernels phase: one shape instead of the four timing shapes")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("delta_rule_vs_fla.py: needs a CUDA GPU")
    {"inputs": phase_inputs, "fla": phase_fla, "report": phase_report, "kernels": phase_kernels}[a.phase](a)


if __name__ == "__main__":
    main()
