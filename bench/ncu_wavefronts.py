#!/usr/bin/env python3
"""ncu_wavefronts.py: where each kernel's shared-memory wavefronts go, by SASS opcode, from Nsight
Compute's source page (per-instruction counters, the SourceCounters section that
bench/delta_rule_ncu.sh collects):

    ncu --import REPORT.ncu-rep --page source --csv --print-source sass > source.csv
    python3 bench/ncu_wavefronts.py source.csv [--top N]

Prints per kernel its shared wavefronts against their ideal, then one row per opcode (STS.64,
LDGSTS..., LD.E: generic loads that reach shared memory) with its wavefronts, their ideal and the
excess, largest first. An excess of about the ideal is a 2-way conflict; cp.async (LDGSTS) and
generic loads appear here too, which ncu's details page counts under neither loads nor stores.
This is how docs/BENCHMARKS.md run 12 placed run 11's "4-way store conflicts". The file may be
gzip-compressed (.gz).
"""
import argparse
import collections
import csv
import gzip
import sys

from ncu_summary import kernel_name   # the same short names as the details page's table

COLS = ("L1 Wavefronts Shared", "L1 Wavefronts Shared Ideal", "L1 Wavefronts Shared Excessive")


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def read(path):
    """{kernel: [{column: value}]}: the source page's rows, kernel by kernel"""
    opener = gzip.open if path.endswith(".gz") else open
    kernels = collections.OrderedDict()
    kernel, header = None, None
    with opener(path, "rt", errors="replace") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[0] == "Kernel Name":
                kernel, header = kernel_name(row[1]), None
                kernels.setdefault(kernel, [])
            elif row and row[0] == "Address":
                header = row
            elif kernel is not None and header and len(row) == len(header):
                kernels[kernel].append(dict(zip(header, row)))
    return kernels


def opcode(source):
    words = source.split()
    if words and words[0].startswith("@"):   # a predicate
        words = words[1:]
    return words[0] if words else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="ncu's source page as CSV (--page source --csv --print-source sass)")
    ap.add_argument("--top", type=int, default=8, help="opcodes per kernel (default 8)")
    a = ap.parse_args()
    try:
        kernels = read(a.source)
    except OSError as e:
        sys.exit("ncu_wavefronts.py: cannot read %s: %s" % (a.source, e.strerror))
    rows = {k: v for k, v in kernels.items() if v and all(c in v[0] for c in COLS)}
    if not rows:
        sys.exit("ncu_wavefronts.py: no kernel with shared-memory wavefront counters in %s (ncu's source page as "
                 "CSV, from a profile with the SourceCounters section)" % a.source)
    for kernel, instrs in rows.items():
        total = collections.Counter()
        by_op = collections.defaultdict(collections.Counter)
        for ins in instrs:
            w = number(ins[COLS[0]])
            if not w:
                continue
            op = opcode(ins.get("Source", ""))
            for c in COLS:
                total[c] += number(ins[c])
                by_op[op][c] += number(ins[c])
        print("%s: %.3g shared wavefronts, ideal %.3g, excess %.3g" %
              (kernel, total[COLS[0]], total[COLS[1]], total[COLS[2]]))
        print("| opcode | wavefronts | ideal | excess | excess / ideal |\n|---|---|---|---|---|")
        for op, c in sorted(by_op.items(), key=lambda x: -x[1][COLS[0]])[:a.top]:
            ratio = c[COLS[2]] / c[COLS[1]] if c[COLS[1]] else 0.0
            print("| %s | %.3g | %.3g | %.3g | %.2f |" % (op, c[COLS[0]], c[COLS[1]], c[COLS[2]], ratio))


if __name__ == "__main__":
    main()
