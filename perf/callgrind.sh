#!/usr/bin/env bash
# perf/callgrind.sh BIN [CONFIG] : instruction count of one dragonfly-mle run under
# callgrind, the way earlier sessions measured it (README "Benchmarks"):
#   valgrind --tool=callgrind BIN -r ROOT -l DIR --shards 1 --http off
# on 100,000 generated events (perf/gen_eve.py --events 100000 --seed 1 --flows 50000), and the md5
# of the output file (out.json in the log dir, as perf/run.sh sets it up).
#   BIN     the dragonfly-mle binary to measure
#   CONFIG  a, c or n (default c): perf/root-a (pass-through), perf/root-c (5-field tuple
#           counter) or perf/root-n (nested reads)
# Environment:
#   CG_WORK   work dir (default /tmp/dfm-cg/cg-<bin md5 prefix>-<config>; recreated each run)
#   CG_INPUT  input file (default /tmp/dfm-cg/eve100k.json; generated if missing)
#   CG_SRC    where root-a/, root-c/, root-n/, gen_eve.py are (default: this perf/ directory)
#   CG_EXTRA  extra valgrind options (e.g. "--cache-sim=yes")
# Prints: the command, the engine's summary line, "instructions: N" (valgrind's "Collected :"
# line, all threads), callgrind_annotate's total line, the output line count and its md5.
set -euo pipefail

bin=${1:?usage: callgrind.sh BIN [a|c|n]}
cfg=${2:-c}
case $cfg in a|c|n) ;; *) echo "callgrind.sh: CONFIG must be a, c or n, got '$cfg'" >&2; exit 2 ;; esac
bin=$(readlink -f "$bin")
[ -x "$bin" ] || { echo "callgrind.sh: no executable at $bin" >&2; exit 1; }
src=${CG_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
input=${CG_INPUT:-/tmp/dfm-cg/eve100k.json}
binid=$(md5sum "$bin" | cut -c1-8)
work=${CG_WORK:-/tmp/dfm-cg/cg-$binid-$cfg}
events=100000

if [ ! -f "$input" ]; then
    echo "generating $input" >&2
    mkdir -p "$(dirname "$input")"
    python3 "$src/gen_eve.py" --events $events --seed 1 --flows 50000 -o "$input.tmp"
    mv "$input.tmp" "$input"
fi
[ "$(wc -l < "$input")" -eq $events ] || { echo "callgrind.sh: $input is not $events lines" >&2; exit 1; }

# Same layout as perf/run.sh: the root copied (cp -rL) into the work dir, which is also the log
# dir (-l), so config.lua's relative file://eve.json and file://out.json< live there.
rm -rf "$work"
mkdir -p "$work"
cp -rL "$src/root-$cfg" "$work/root-$cfg"
ln "$input" "$work/eve.json" 2>/dev/null || cp "$input" "$work/eve.json"

cmd=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" ${CG_EXTRA:-}
     "$bin" -r "$work/root-$cfg" -l "$work" --shards 1 --http off)
echo "command: ${cmd[*]}"
start=$(date +%s)
status=0
"${cmd[@]}" >"$work/stdout" 2>"$work/stderr" || status=$?
end=$(date +%s)
if [ $status -ne 0 ]; then
    echo "callgrind.sh: run exited with status $status" >&2
    tail -n 30 "$work/stderr" >&2
    exit 1
fi
echo "elapsed under valgrind: $((end - start)) s"
echo "summary: $(grep -m1 'events read' "$work/stdout" || echo '(none)')"
collected=$(sed -n 's/^==[0-9]*== Collected : *\([0-9]*\).*/\1/p' "$work/stderr" | head -n 1)
echo "instructions: $collected ($(awk -v n="$collected" 'BEGIN { printf "%.1fM", n / 1e6 }'))"
callgrind_annotate "$work/callgrind.out" > "$work/annotate.txt" 2>/dev/null || true
echo "callgrind_annotate: $(grep -m1 -E 'PROGRAM TOTALS|^summary:|^totals:' "$work/annotate.txt" || echo '(n/a)')"
lines=$(wc -l < "$work/out.json")
echo "out.json: $lines lines, md5 $(md5sum < "$work/out.json" | cut -d' ' -f1)"
[ "$lines" -eq $events ] || { echo "callgrind.sh: out.json has $lines lines, expected $events" >&2; exit 1; }
