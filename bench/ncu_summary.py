#!/usr/bin/env python3
"""ncu_summary.py: one table row per kernel from Nsight Compute's details page.

    ncu --import REPORT.ncu-rep --page details > details.txt
    python3 bench/ncu_summary.py details.txt

Reads the sections bench/delta_rule_ncu.sh asks for (SpeedOfLight, Occupancy, WarpStateStats,
MemoryWorkloadAnalysis_Tables) and prints, per kernel: duration, L1/shared and SM throughput,
achieved occupancy, the share of shared-memory load and store wavefronts that are bank
conflicts (with ncu's average conflict degree), and the share of the warps' cycles spent at
block barriers. A figure ncu did not print is '-'. This is what docs/BENCHMARKS.md run 11's
"where the time goes" table came from.
"""
import re
import sys


def metric(block, name):
    m = re.search(r"\n\s+" + re.escape(name) + r"\s+(\S+)?\s+([\d.,]+)(?:\n|$)", block)
    return m.group(2) if m else "-"


def conflicts(block, kind):
    m = re.search(r"causes on average a ([\d.]+) - way bank\s+conflict across all \d+ shared " + kind +
                  r" requests.*?which represent\s+([\d.]+)% of", block, re.S)
    return "%s %% (%s-way)" % (m.group(2), m.group(1)) if m else "-"


def barrier(block):
    m = re.search(r"CTA\s+barrier.*?about ([\d.]+)% of the total average of ([\d.]+) cycles", block, re.S)
    return "%s %%" % m.group(1) if m else "-"


def kernel_name(text):
    """a kernel's name as ncu prints it (details or source page), short: no return type,
    namespaces, template casts or argument list; __nv_bfloat16 as bf16"""
    name = re.sub(r"\(anonymous namespace\)::|\((?:int|bool)\)", "", text)
    name = re.sub(r"^void\s+", "", name.split("(")[0].strip())
    return re.sub(r"^(?:\w+::)*(?:<?unnamed>::)?", "", name).replace("__nv_bfloat16", "bf16")


def rows(text):
    """(kernel, duration, L1 %, SM %, occupancy %, load conflicts, store conflicts, barrier) per kernel"""
    out = []
    for block in re.split(r"\n  (?=\S.*\(\d+, \d+, \d+\)x\(\d+, \d+, \d+\))", "\n" + text)[1:]:
        name = kernel_name(block)
        m = re.search(r"\n\s+Duration\s+(\S+)\s+([\d.,]+)(?:\n|$)", block)
        duration = "%s %s" % (m.group(2), m.group(1)) if m else "-"
        out.append((name, duration, metric(block, "L1/TEX Cache Throughput"), metric(block, "Compute (SM) Throughput"),
                    metric(block, "Achieved Occupancy"), conflicts(block, "load"), conflicts(block, "store"), barrier(block)))
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: ncu_summary.py DETAILS.txt   (ncu --import REPORT --page details > DETAILS.txt)")
    try:
        text = open(sys.argv[1], errors="replace").read()
    except OSError as e:
        sys.exit("ncu_summary: cannot read %s: %s" % (sys.argv[1], e.strerror))
    table = rows(text)
    if not table:
        sys.exit("ncu_summary: no kernel in %s (is it ncu's --page details output?)" % sys.argv[1])
    print("| kernel | duration | L1/shared % | SM % | achieved occupancy % | shared loads: conflicts | "
          "shared stores: conflicts | warp cycles at barriers |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        print("| `%s` | %s |" % (r[0], " | ".join(r[1:])))


if __name__ == "__main__":
    main()
