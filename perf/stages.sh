#!/usr/bin/env bash
# perf/stages.sh [EVENTS] [RUNS] : each stage of the pipeline alone, on one core, on the same
# generated input (perf/gen_eve.py, the realistic-cardinality default of perf/run.sh), and a
# projected throughput for 2 to 64 cores from those costs.
#   parse-only   the reference: framing (memchr) + simd-json parse and routing: `bench-parse`
#   reader-only  the engine's reader: framing, the top-level walk for the route, lines copied
#                into batches for 2 shards: `bench-stage reader`
#   validate     the workers' full validation alone (part of worker-only): `bench-stage validate`
#   worker-only  validation + a pass-through filter and analyzer in LuaJIT, records encoded:
#                `bench-stage worker`
#   writer-only  one worker's records (128-event batches with end-of-event marks) merged in
#                order and written to a file: `bench-stage writer`
# Runs alternate (parse, reader, validate, worker, writer, parse, ...); medians of RUNS
# (default 3) are shown, with each stage's ratio to the parse-only rate of the same file.
# Environment: DFM_BIN (default ~/.cache/dfm-target/release/dragonfly-mle), STAGES_DIR
# (default /tmp/dfm-stages), PERF_EPHEMERAL (default 0.6, as perf/run.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
events=${1:-1000000}
runs=${2:-3}
bin=${DFM_BIN:-$HOME/.cache/dfm-target/release/dragonfly-mle}
work=${STAGES_DIR:-/tmp/dfm-stages}
eph=${PERF_EPHEMERAL:-0.6}
[ -x "$bin" ] || { echo "perf/stages.sh: no binary at $bin (cargo build --release, or set DFM_BIN)" >&2; exit 1; }
mkdir -p "$work"
input=$work/eve.json
stamp="events=$events seed=1 ephemeral=$eph gen=$(cksum < "$here/gen_eve.py" | cut -d' ' -f1)"
if [ "$(cat "$work/eve.stamp" 2>/dev/null)" != "$stamp" ]; then
    python3 "$here/gen_eve.py" --events "$events" --seed 1 --ephemeral "$eph" -o "$input" >&2
    echo "$stamp" > "$work/eve.stamp"
fi
rate() { sed -n 's/.*(\([0-9.]*\) events\/s).*/\1/p'; }
: > "$work/rates.tsv"
for i in $(seq "$runs"); do
    p=$("$bin" bench-parse "$input" | rate)
    r=$("$bin" bench-stage reader "$input" | rate)
    v=$("$bin" bench-stage validate "$input" | rate)
    w=$("$bin" bench-stage worker "$input" | rate)
    o=$("$bin" bench-stage writer "$input" | rate)
    echo "run $i: parse $p, reader $r, validate $v, worker $w, writer $o events/s"
    printf '%s\t%s\t%s\t%s\t%s\n' "$p" "$r" "$v" "$w" "$o" >> "$work/rates.tsv"
done
python3 - "$work/rates.tsv" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
p, r, v, w, o = (statistics.median(c) for c in zip(*rows))
print()
print("| stage (one core) | events/s | ns/event | ratio to parse-only |")
print("|---|---:|---:|---:|")
for name, x in (("parse-only (reference)", p), ("reader-only", r), ("validate (in the workers)", v),
                ("worker-only (validate + pass-through)", w), ("writer-only (ordered file)", o)):
    print(f"| {name} | {x:,.0f} | {1e9 / x:,.0f} | {x / p:.2f} x |")
print()
print("Projected throughput (events/s), pass-through, from these costs. Assumptions: one reader")
print("per input file (Suricata's threaded output: one eve.N.json per thread), every stage on")
print("its own core, stages scale linearly (no memory-bandwidth or cache limit), one writer; the")
print("best split of C cores into R readers + W workers + 1 writer:")
print()
print("| cores | readers | workers | events/s | bound by |")
print("|---:|---:|---:|---:|---|")
for c in (2, 4, 8, 16, 32, 64):
    best = None
    for R in range(1, c):
        W = c - 1 - R if c > 2 else 1
        if W < 1:
            continue
        t = min(R * r, W * w, o)
        bound = "writer" if t == o else ("readers" if R * r <= W * w else "workers")
        if best is None or t > best[2]:
            best = (R, W, t, bound)
    R, W, t, bound = best
    print(f"| {c} | {R} | {W} | {t:,.0f} | {bound} |")
PY
