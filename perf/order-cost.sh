#!/usr/bin/env bash
# perf/order-cost.sh: the cost of ordered output, measured by alternating runs of configuration
# (a) with ordered output and with `ordered = false` (same minute, same machine state).
# Usage: perf/order-cost.sh [RUNS] [-- ARGS FOR THE BINARY]; run perf/run.sh once first (it
# generates $PERF_DIR/eve.json).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
runs=${1:-5}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
bin=${DFM_BIN:-$HOME/.cache/dfm-target/release/dragonfly-mle}
work=${PERF_DIR:-/tmp/dfm-perf}
[ -f "$work/eve.json" ] || { echo "perf/order-cost.sh: run perf/run.sh first (no $work/eve.json)" >&2; exit 1; }
rm -rf "$work/root-ord" "$work/root-unord"
cp -rL "$here/root-a" "$work/root-ord"
cp -rL "$here/root-a" "$work/root-unord"
sed -i 's|uri = "file://out.json<" }|uri = "file://out.json<", ordered = false }|' "$work/root-unord/config/config.lua"
rate() { "$bin" -r "$1" -l "$work" "${@:2}" | sed -E 's/.*\(([0-9]+) events\/s\).*/\1/'; }
: > "$work/order-cost.tsv"
for _ in $(seq "$runs"); do
    echo "ordered $(rate "$work/root-ord" "$@")" >> "$work/order-cost.tsv"
    echo "unordered $(rate "$work/root-unord" "$@")" >> "$work/order-cost.tsv"
done
median() { grep "^$1 " "$work/order-cost.tsv" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "ordered: $(median ordered) events/s, unordered: $(median unordered) events/s (medians of $runs alternating runs)"
