#!/usr/bin/env bash
# delta_rule_op_trace.sh: the kernels of one efla.ops.delta_rule forward+backward, with their
# durations under ncu, as a table (bench/delta_rule_op_trace.lua makes the calls). ncu locks the
# clocks and serialises kernels, so the shares are what to read, not the microseconds.
#
#   bash bench/delta_rule_op_trace.sh [ARGS of delta_rule_op_trace.lua]     (GPU machine, bundle/ carried)
#
# Out: the table on stdout, ncu's CSV in ${OUT:-/tmp/efla-op-trace}/trace.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${OUT:-/tmp/efla-op-trace}
mkdir -p "$DIR"
. bundle/bin/efla-env.sh
command -v ncu >/dev/null || { echo "delta_rule_op_trace: ncu (Nsight Compute) is not on PATH" >&2; exit 2; }
ncu --csv --metrics gpu__time_duration.sum bundle/bin/efla bench/delta_rule_op_trace.lua "$@" > "$DIR/trace.csv"
python3 - "$DIR/trace.csv" <<'PY'
import csv, re, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 14 and r[0].isdigit()]
calls = None
for line in open(sys.argv[1]):
    m = re.search(r"delta_rule_op_trace: (\d+) (forward\+backward|decoding step) calls", line)
    if m: calls = int(m.group(1))
if not rows or not calls:
    sys.exit("delta_rule_op_trace: no kernel rows in ncu's output (see %s)" % sys.argv[1])
per = {}
for r in rows:
    name = re.sub(r"\(.*", "", r[4]).replace("void ", "").replace("<unnamed>::", "")
    per[name] = per.get(name, 0.0) + float(r[14].replace(",", "")) / 1e3 / calls   # ns -> us per call
total = sum(per.values())
print("| kernel | us per call under ncu | share |\n|---|---|---|")
for name, us in sorted(per.items(), key=lambda x: -x[1]):
    print("| `%s` | %.0f | %.0f %% |" % (name, us, 100 * us / total))
print("| total | %.0f | |" % total)
PY
