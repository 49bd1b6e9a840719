#!/usr/bin/env python3
"""delta_rule_traffic.py: the bytes the chunked delta rule's kernels must move through device
memory (cuda/delta_rule_chunk.cu: each kernel reads each of its inputs once and writes each output
once, perfect reuse inside a kernel), per kernel, for bfloat16 and float32 inputs at the issue's
shapes, and the time those bytes take at a given bandwidth: a floor that no kernel design with these
buffers can beat, to set beside measured times (docs/BENCHMARKS.md).

Every buffer between the kernels has the inputs' element (W, U, T, X, tril(Q K^T), V', dV', the
chunk states and their gradients), so float32 moves twice bfloat16's bytes at the same chunk size;
it runs at chunk 32 where bfloat16 runs at 64 (float tiles), which doubles the chunk states' share.
A model, not a measurement: no GPU needed.

  python3 bench/delta_rule_traffic.py [--bandwidth TB/s] [--shapes 'B,T,H,d;...'] [--float32-chunk C]
"""
import argparse

# per (chunk, head): (elements read, elements written) of each kernel, C tokens, dk = dv = d
KERNELS = [
    # forward: G, the solve, W = T K, U = T V; T and X kept for the backward
    ("prep (fwd)", lambda C, d: (2 * C * d, 2 * C * d + 2 * C * C)),
    # W, U, K in; V' and the chunk's entering state out
    ("state_scan", lambda C, d: (3 * C * d, C * d + d * d)),
    # Q, K, the state, V' in; O out
    ("out", lambda C, d: (3 * C * d + d * d, C * d)),
    # backward: T, K, Q in; W and tril(Q K^T) out
    ("prep (bwd)", lambda C, d: (C * C + 2 * C * d, C * d + C * C)),
    # Q, K, W, dO, tril(Q K^T) in; dV' and the gradient leaving the chunk out
    ("bwd_scan", lambda C, d: (4 * C * d + C * C, C * d + d * d)),
    # K, Q, V, dO, dV', the state and its gradient, T, X in; dq, dk, dv out
    ("bwd_chunk", lambda C, d: (5 * C * d + 2 * d * d + 2 * C * C, 3 * C * d)),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bandwidth", type=float, default=3.35, help="device memory bandwidth in TB/s (default: the H100 SXM's nominal 3.35)")
    ap.add_argument("--shapes", default="8,2048,16,128;4,8192,16,128;16,4096,32,64;128,784,1,64",
                    help="B,T,H,d;... (default: the issue's four)")
    ap.add_argument("--float32-chunk", type=int, default=32, choices=(16, 32, 64),
                    help="float32's chunk size (default 32, what the library runs at d = 128; 64: what larger float tiles would save)")
    a = ap.parse_args()
    if a.bandwidth <= 0:
        ap.error("--bandwidth must be positive (TB/s), e.g. --bandwidth 4.8 for an H200")
    shapes = []
    for s in a.shapes.split(";"):
        try:
            B, T, H, d = (int(x) for x in s.split(","))
        except ValueError:
            ap.error(f"--shapes: '{s}' is not B,T,H,d (four integers), e.g. 8,2048,16,128")
        shapes.append((B, T, H, d))

    dtypes = [("bfloat16", 2, 64), ("float32", 4, a.float32_chunk)]   # element bytes, chunk size
    names = [k[0] for k in KERNELS]
    print(f"compulsory device-memory traffic, GB (floor in ms at {a.bandwidth} TB/s)")
    print("| shape | dtype (chunk) | " + " | ".join(names) + " | fwd+bwd | floor ms | float32 / bf16 |")
    print("|---|---|" + "---|" * (len(names) + 3))
    for B, T, H, d in shapes:
        totals = {}
        for dt, e, C in dtypes:
            chunks = B * H * -(-T // C)   # every sequence padded to whole chunks
            gb = [chunks * e * sum(f(C, d)) / 1e9 for _, f in KERNELS]
            totals[dt] = sum(gb)
            ratio = f"{totals[dt] / totals['bfloat16']:.2f}x" if dt != "bfloat16" else ""
            print(f"| B={B} T={T} H={H} d={d} | {dt} ({C}) | " + " | ".join(f"{x:.3f}" for x in gb) +
                  f" | {totals[dt]:.3f} | {totals[dt] / a.bandwidth:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
