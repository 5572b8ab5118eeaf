#!/usr/bin/env bash
# perf/ab.sh BIN_A BIN_B [CONFIG] [PAIRS] : alternating wall-clock runs of two
# dragonfly-mle binaries (A, B, A, B, ...) on 1,000,000 generated events, set up as perf/run.sh
# does (root copied with cp -rL into the work dir, which is the log dir holding eve.json and
# out.json; each run: BIN -r WORK/root-X -l WORK --shards 2 under /usr/bin/time).
#   CONFIG  a (pass-through), c (5-field tuple counter) or n (nested reads); default a
#   PAIRS   number of A/B pairs; default 5
# Environment:
#   AB_ARGS    engine arguments (default "--shards 2", as perf/run.sh ... -- --shards 2)
#   AB_EVENTS  generated events (default 1000000); AB_SEED (1), AB_FLOWS (50000),
#              AB_EPHEMERAL (0.6: the realistic cardinality) as perf/run.sh
#   AB_WORK    work dir (default /tmp/dfm-ab); eve.json is generated once and reused
#              while eve.stamp matches
#   AB_SRC     root-a/, root-c/, root-n/, gen_eve.py (default: this perf/ directory)
#   AB_MD5     1 (default): md5 of every out.json, and a check that A and B wrote the same bytes
# Prints one line per run (events/s from the engine's summary line, wall s, CPU s = user + sys,
# peak RSS MB, md5), then the medians of each binary and the ratio B/A; per-run rows are kept in
# WORK/ab.tsv. The parse-only rate of BIN_A (hidden bench-parse subcommand, one core) is printed
# before and after the runs as a gauge of the machine's speed at the time.
set -euo pipefail

usage="usage: ab.sh BIN_A BIN_B [a|c|n] [PAIRS]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
bin_a=$(readlink -f "$1"); bin_b=$(readlink -f "$2")
cfg=${3:-a}
pairs=${4:-5}
case $cfg in a|c|n) ;; *) echo "ab.sh: CONFIG must be a, c or n, got '$cfg' ($usage)" >&2; exit 2 ;; esac
[[ "$pairs" =~ ^[1-9][0-9]*$ ]] || { echo "ab.sh: PAIRS must be a positive number ($usage)" >&2; exit 2; }
for b in "$bin_a" "$bin_b"; do [ -x "$b" ] || { echo "ab.sh: no executable at $b" >&2; exit 1; }; done
read -r -a args <<< "${AB_ARGS:---shards 2}"
events=${AB_EVENTS:-1000000}
seed=${AB_SEED:-1}
flows=${AB_FLOWS:-50000}
ephemeral=${AB_EPHEMERAL:-0.6}
work=${AB_WORK:-/tmp/dfm-ab}
src=${AB_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
do_md5=${AB_MD5:-1}
[ -x /usr/bin/time ] || { echo "ab.sh: /usr/bin/time missing (apt-get install -y time)" >&2; exit 1; }

die() { echo "ab.sh: FAIL: $*" >&2; exit 1; }
mkdir -p "$work"
work=$(cd "$work" && pwd)

# --- input, as perf/run.sh: generated once per (events, seed, flows, generator) --------------
input=$work/eve.json
stamp="events=$events seed=$seed flows=$flows ephemeral=$ephemeral gen=$(cksum < "$src/gen_eve.py" | cut -d' ' -f1)"
if [ -f "$input" ] && [ -f "$work/eve.stamp" ] && [ "$(cat "$work/eve.stamp")" = "$stamp" ]; then
    echo "input: reusing $input ($stamp)"
else
    rm -f "$work/eve.stamp"
    echo "input: generating $input ($stamp)"
    python3 "$src/gen_eve.py" --events "$events" --seed "$seed" --flows "$flows" --ephemeral "$ephemeral" -o "$input.tmp"
    mv "$input.tmp" "$input"
    echo "$stamp" > "$work/eve.stamp"
fi
[ "$(wc -l < "$input")" -eq "$events" ] || die "$input is not $events lines"
cat "$input" > /dev/null  # warm the page cache

root=$work/root-$cfg
rm -rf "$root"
cp -rL "$src/root-$cfg" "$root"

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

parse_rate() {
    local out
    if out=$(timeout 600 "$bin_a" bench-parse "$input" 2>/dev/null) \
        && out=$(printf '%s\n' "$out" | grep -m1 '^parse-only:'); then
        echo "$out"
    else
        echo "parse-only: unavailable"
    fi
}

echo "A: $bin_a (md5 $(md5sum < "$bin_a" | cut -c1-12))"
echo "B: $bin_b (md5 $(md5sum < "$bin_b" | cut -c1-12))"
echo "config ($cfg), $events events, $pairs pair(s), args: ${args[*]}, cpus: $(nproc), $(date -u '+%F %T UTC')"
echo "before: $(parse_rate)"

tsv=$work/ab.tsv
: > "$tsv"
run_one() {  # label binary pair
    local label=$1 bin=$2 i=$3 status=0 summary rate wall user sys rss_kb cpu md5=-
    rm -f "$work/out.json"
    /usr/bin/time -f '%e %U %S %M' -o "$work/time.$label" \
        "$bin" -r "$root" -l "$work" "${args[@]}" >"$work/stdout.$label" 2>"$work/stderr.$label" || status=$?
    if [ $status -ne 0 ]; then
        tail -n 20 "$work/stdout.$label" "$work/stderr.$label" >&2
        die "$label run $i: exit status $status"
    fi
    summary=$(grep -m1 'events read' "$work/stdout.$label" || true)
    [ -n "$summary" ] || die "$label run $i: no summary line: $(tail -n 5 "$work/stdout.$label")"
    rate=$(printf '%s\n' "$summary" | sed -n 's/.*(\([0-9.]*\) events\/s).*/\1/p')
    [ -n "$rate" ] || die "$label run $i: cannot read events/s from: $summary"
    [ "$(wc -l < "$work/out.json")" -eq "$events" ] || die "$label run $i: out.json is not $events lines"
    [ "$do_md5" = 1 ] && md5=$(md5sum < "$work/out.json" | cut -d' ' -f1)
    read -r wall user sys rss_kb < <(tail -n 1 "$work/time.$label")
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rate" "$wall" "$cpu" \
        "$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')" "$md5" >> "$tsv"
    printf '%s run %d: %s events/s, wall %s s, CPU %s s, RSS %.1f MB, md5 %s\n' \
        "$label" "$i" "$rate" "$wall" "$cpu" "$(awk -v k="$rss_kb" 'BEGIN { print k / 1024 }')" "$md5"
}

for i in $(seq 1 "$pairs"); do
    run_one A "$bin_a" "$i"
    run_one B "$bin_b" "$i"
done
echo "after: $(parse_rate)"

col() { awk -F'\t' -v l="$1" -v k="$2" '$1 == l { print $k }' "$tsv" | median; }
echo
echo "| binary | events/s (median) | runs events/s | wall s | CPU s | peak RSS MB |"
echo "|---|---:|---|---:|---:|---:|"
for l in A B; do
    runs=$(awk -F'\t' -v l="$l" '$1 == l { printf "%s%s", sep, $2; sep = ", " }' "$tsv")
    printf '| %s | %.0f | %s | %.2f | %.2f | %.1f |\n' "$l" "$(col "$l" 2)" "$runs" "$(col "$l" 3)" "$(col "$l" 4)" "$(col "$l" 5)"
done
ra=$(col A 2); rb=$(col B 2); ca=$(col A 4); cb=$(col B 4)
echo
echo "B/A: events/s $(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.3f", b / a }'), CPU s $(awk -v a="$ca" -v b="$cb" 'BEGIN { printf "%.3f", b / a }')"
if [ "$do_md5" = 1 ]; then
    n=$(cut -f6 "$tsv" | sort -u | wc -l)
    if [ "$n" -eq 1 ]; then
        echo "output: all runs wrote the same bytes (md5 $(cut -f6 "$tsv" | head -n 1))"
    else
        echo "output: DIFFERENT bytes between runs:"; cut -f1,6 "$tsv" | sort | uniq -c
    fi
fi
echo "(per-run rows in $tsv)"
