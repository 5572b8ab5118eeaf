#!/usr/bin/env bash
# perf/run.sh: throughput benchmark of dragonfly-mle on generated EVE input, configurations (a), (b), (c) and (n).
#
# Usage: perf/run.sh [EVENTS] [RUNS] [-- ARGS FOR THE BINARY...]
#   EVENTS  number of generated events (default 1000000)
#   RUNS    runs per configuration; the table shows the median (default 3) and the spreads
#           (slowest below fastest) of the runs, of their paired ratios and of the parse-only
#           runs made beside them (the machine's own spread)
#   after --, arguments passed to every engine run, e.g. -- --shards 2
# Environment:
#   DFM_BIN       binary (default ~/.cache/dfm-target/release/dragonfly-mle)
#   PERF_DIR      work dir for eve.json, roots, out.json, logs (default /tmp/dfm-perf)
#   PERF_SEED     generator seed (default 1); PERF_FLOWS distinct flows (default 50000)
#   PERF_EPHEMERAL share of events given a fresh ephemeral client port (default 0.6: about
#                 640,000 distinct tuples per million events, as on a real link; 0 gives the
#                 50,000-flow input of the figures measured before 2026-12-05)
#   PERF_ORDERED  0 adds "ordered = false" to the output entry (default: ordered output)
#   PERF_CONFIGS  configurations to run (default "a b bp c n")
#   PERF_WARMUP   engine runs per configuration before the counted ones, shown, not counted
#                 (default 1: the first run after a pause was the slowest on the test VM)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
events=1000000
runs=3
extra=()
npos=0
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *)
            if ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
                echo "perf/run.sh: expected a positive number, got '$1' (usage: perf/run.sh [EVENTS] [RUNS] [-- ARGS])" >&2
                exit 2
            fi
            case $npos in
                0) events=$1 ;;
                1) runs=$1 ;;
                *) echo "perf/run.sh: too many arguments (put binary arguments after --)" >&2; exit 2 ;;
            esac
            npos=$((npos + 1)); shift ;;
    esac
done

bin=${DFM_BIN:-$HOME/.cache/dfm-target/release/dragonfly-mle}
work=${PERF_DIR:-/tmp/dfm-perf}
seed=${PERF_SEED:-1}
flows=${PERF_FLOWS:-50000}
ephemeral=${PERF_EPHEMERAL:-0.6}
ordered=${PERF_ORDERED:-1}
configs=${PERF_CONFIGS:-a b bp c n}
warmup=${PERF_WARMUP:-1}
[[ "$warmup" =~ ^[0-9]+$ ]] || die "PERF_WARMUP must be a number, got '$warmup'"

die() { echo "perf/run.sh: FAIL: $*" >&2; exit 1; }

[ -x "$bin" ] || die "no executable binary at $bin (set DFM_BIN or build with: CARGO_TARGET_DIR=~/.cache/dfm-target cargo build --release)"
if [ ! -x /usr/bin/time ]; then
    echo "perf/run.sh: /usr/bin/time missing, installing the 'time' package" >&2
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    fi
    [ -x /usr/bin/time ] || die "could not install /usr/bin/time"
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)

# --- input, generated once per (events, seed, flows, generator version) -------------------
input=$work/eve.json
stamp="events=$events seed=$seed flows=$flows ephemeral=$ephemeral gen=$(cksum < "$here/gen_eve.py" | cut -d' ' -f1)"
if [ -f "$input" ] && [ -f "$work/eve.stamp" ] && [ "$(cat "$work/eve.stamp")" = "$stamp" ]; then
    echo "input: reusing $input ($stamp)"
else
    rm -f "$work/eve.stamp"
    echo "input: generating $input ($stamp)"
    python3 "$here/gen_eve.py" --events "$events" --seed "$seed" --flows "$flows" --ephemeral "$ephemeral" -o "$input.tmp"
    mv "$input.tmp" "$input"
    echo "$stamp" > "$work/eve.stamp"
fi
lines=$(wc -l < "$input")
[ "$lines" -eq "$events" ] || die "$input has $lines lines, expected $events"
avg=$(( $(stat -c %s "$input") / events ))
cat "$input" > /dev/null  # warm the page cache so the first run does not pay for the disk

# The slowest of a column's values below its fastest, in percent ("-" for fewer than 2 values).
spread() { sort -g | awk '{ v[NR] = $1 } END { if (NR < 2 || v[NR] <= 0) print "-"; else printf "%.1f %%", 100 * (1 - v[1] / v[NR]) }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- parse-only rate (hidden subcommand) ---------------------------------------------------
parse_rate=""
: > "$work/parse.rates"
for i in $(seq 1 "$runs"); do
    if out=$(timeout 600 "$bin" bench-parse "$input" 2>"$work/parse.err") \
        && line=$(printf '%s\n' "$out" | grep -m1 '^parse-only:'); then
        echo "$line"
        printf '%s\n' "$line" | sed -n 's/.*(\([0-9.]*\) events\/s).*/\1/p' >> "$work/parse.rates"
    else
        echo "parse-only: unavailable"
        break
    fi
done
if [ -s "$work/parse.rates" ]; then
    parse_rate=$(median < "$work/parse.rates")
fi

# --- engine runs ----------------------------------------------------------------------------
results=$work/results.tsv
: > "$results"
for c in $configs; do
    # (bp) is (b) with pipeline = 64 on its counter analyzer.
    src_root=$here/root-${c%p}
    [ -d "$src_root" ] || die "no configuration directory $src_root"
    root=$work/root-$c
    rm -rf "$root"
    cp -rL "$src_root" "$root"
    if [ "$c" = bp ]; then
        sed -i 's|default_output = "" },|default_output = "", pipeline = 64 },|' "$root/config/config.lua"
        grep -q 'pipeline = 64' "$root/config/config.lua" || die "could not add pipeline = 64 to $root/config/config.lua"
    fi
    if [ "$ordered" = 0 ]; then
        sed -i 's|uri = "file://out.json<" }|uri = "file://out.json<", ordered = false }|' "$root/config/config.lua"
        grep -q 'out.json<", ordered = false }' "$root/config/config.lua" || die "could not add ordered = false to $root/config/config.lua"
    fi
    for i in $(seq 1 "$warmup"); do
        rm -f "$work/out.json"
        if "$bin" -r "$root" -l "$work" ${extra[@]+"${extra[@]}"} >"$work/stdout.$c" 2>"$work/stderr.$c"; then
            echo "($c) warm-up $i (not counted): $(grep -m1 'events read' "$work/stdout.$c" || echo 'no summary')"
        else
            tail -n 20 "$work/stderr.$c" >&2
            die "config ($c) warm-up run $i failed"
        fi
    done
    for i in $(seq 1 "$runs"); do
        # The parse-only rate right before the run: on a shared machine whose speed drifts,
        # each run's ratio is taken to its own neighbour (the "paired" column).
        paired=""
        if [ -n "$parse_rate" ]; then
            paired=$(timeout 600 "$bin" bench-parse "$input" 2>/dev/null | sed -n 's/.*(\([0-9.]*\) events\/s).*/\1/p' | head -n 1)
        fi
        rm -f "$work/out.json"
        status=0
        /usr/bin/time -f '%e %U %S %M' -o "$work/time.$c" \
            "$bin" -r "$root" -l "$work" ${extra[@]+"${extra[@]}"} >"$work/stdout.$c" 2>"$work/stderr.$c" || status=$?
        if [ "$status" -ne 0 ]; then
            echo "--- stdout" >&2; tail -n 20 "$work/stdout.$c" >&2
            echo "--- stderr" >&2; tail -n 40 "$work/stderr.$c" >&2
            echo "--- time" >&2; cat "$work/time.$c" >&2
            die "config ($c) run $i: $bin exited with status $status"
        fi
        summary=$(grep -m1 'events read' "$work/stdout.$c" || true)
        [ -n "$summary" ] || die "config ($c) run $i: no summary line on stdout: $(tail -n 5 "$work/stdout.$c")"
        echo "($c) run $i: $summary"
        out_lines=$(wc -l < "$work/out.json" 2>/dev/null || echo missing)
        if [ "$out_lines" != "$events" ]; then
            tail -n 20 "$work/stderr.$c" >&2
            die "config ($c) run $i: out.json has $out_lines lines, expected $events"
        fi
        rate=$(printf '%s\n' "$summary" | sed -n 's/.*(\([0-9.]*\) events\/s).*/\1/p')
        [ -n "$rate" ] || die "config ($c) run $i: cannot read events/s from: $summary"
        read -r wall user sys rss_kb < <(tail -n 1 "$work/time.$c")
        ratio_run=$(awk -v r="$rate" -v p="${paired:-0}" 'BEGIN { if (p > 0) printf "%.3f", r / p; else print "nan" }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$rate" "$wall" "$(echo "$user $sys" | awk '{ printf "%.2f", $1 + $2 }')" \
            "$(echo "$rss_kb" | awk '{ printf "%.1f", $1 / 1024 }')" "$ratio_run" "${paired:-nan}" >> "$results"
    done
done

# --- report ---------------------------------------------------------------------------------
report=$work/results.md
{
    echo
    echo "dragonfly-mle perf: $events events (~$avg bytes/line), $runs run(s) each, median shown"
    echo "binary: $bin; cpus: $(nproc); extra args: ${extra[*]:-(none)}; ordered output: $([ "$ordered" = 0 ] && echo no || echo yes)"
    if [ -n "$parse_rate" ]; then
        echo "parse-only (one core): $(printf '%.0f' "$parse_rate") events/s"
    else
        echo "parse-only: unavailable"
    fi
    echo
    echo "| config | events/s | wall s | CPU s (user+sys) | peak RSS MB | ratio to parse-only | paired ratio | spread: runs, paired ratios, parse-only beside them |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    for c in $configs; do
        col_all() { awk -F'\t' -v c="$c" -v k="$1" '$1 == c && $k != "nan" { print $k }' "$results"; }
        col() { col_all "$1" | median; }
        rate=$(col 2); wall=$(col 3); cpu=$(col 4); rss=$(col 5)
        paired_ratio=$(awk -F'\t' -v c="$c" '$1 == c && $6 != "nan" { print $6 }' "$results" | median || true)
        [ -n "$paired_ratio" ] || paired_ratio="n/a"
        if [ -n "$parse_rate" ]; then
            ratio=$(awk -v r="$rate" -v p="$parse_rate" 'BEGIN { printf "%.2f", r / p }')
        else
            ratio="n/a"
        fi
        case $c in
            a) name="(a) pass-through" ;;
            b) name="(b) hello-world chain (Redis INCR)" ;;
            bp) name="(b) same, pipeline = 64" ;;
            c) name="(c) 5-field tuple counter" ;;
            n) name="(n) nested reads" ;;
            *) name="($c)" ;;
        esac
        spreads="$(col_all 2 | spread), $(col_all 6 | spread), $(col_all 7 | spread)"
        printf '| %s | %.0f | %.2f | %.2f | %.1f | %s | %s | %s |\n' "$name" "$rate" "$wall" "$cpu" "$rss" "$ratio" "$paired_ratio" "$spreads"
    done
} | tee "$report"
echo
echo "(table saved to $report; per-run rows in $results)"
