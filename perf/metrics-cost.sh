#!/usr/bin/env bash
# perf/metrics-cost.sh: the cost of metrics, latency histograms and the HTTP endpoint, measured
# by alternating runs of configuration (a) (pass-through) with them on (the default, with the
# endpoint on an ephemeral port, scraped every second during the run) and off
# (`latency_histograms = false`, `--http off`), in the same minute on the same machine.
# Usage: perf/metrics-cost.sh [RUNS] [-- ARGS FOR THE BINARY]; run perf/run.sh once first (it
# generates $PERF_DIR/eve.json).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
runs=${1:-5}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
bin=${DFM_BIN:-$HOME/.cache/dfm-target/release/dragonfly-mle}
work=${PERF_DIR:-/tmp/dfm-perf}
[ -f "$work/eve.json" ] || { echo "perf/metrics-cost.sh: run perf/run.sh first (no $work/eve.json)" >&2; exit 1; }
rm -rf "$work/root-mon" "$work/root-moff"
cp -rL "$here/root-a" "$work/root-mon"
cp -rL "$here/root-a" "$work/root-moff"
echo 'latency_histograms = false' >> "$work/root-moff/config/config.lua"
echo 'http_address = "127.0.0.1:0"' >> "$work/root-mon/config/config.lua"

# Scrapes /metrics every 100 ms while the engine runs (the address is in its log).
scrape() {
    local log=$work/dragonfly-mle.log addr=""
    for _ in $(seq 100); do
        addr=$(grep -o '"address":"[^"]*"' "$log" 2>/dev/null | tail -1 | cut -d'"' -f4 || true)
        [ -n "$addr" ] && break
        sleep 0.02
    done
    [ -n "$addr" ] || return 0
    while exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" 2>/dev/null; do
        printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
        cat <&3 > /dev/null
        exec 3>&-
        sleep 1
    done
}
# Prints "<events/s> <CPU seconds>" of one run (CPU: user + sys, less sensitive than wall
# time to other tenants of a shared machine).
rate() {
    local r
    r=$(/usr/bin/time -f "cpu %U %S" "$bin" -r "$1" -l "$work" "${@:2}" 2>&1 | tr '\n' ' ')
    echo "$(echo "$r" | sed -E 's/.*\(([0-9]+) events\/s\).*/\1/') $(echo "$r" | sed -E 's/.*cpu ([0-9.]+) ([0-9.]+).*/\1 \2/' | awk '{print $1 + $2}')"
}
: > "$work/metrics-cost.tsv"
for _ in $(seq "$runs"); do
    : > "$work/dragonfly-mle.log"
    scrape & scraper=$!
    echo "on $(rate "$work/root-mon" "$@")" >> "$work/metrics-cost.tsv"
    wait "$scraper" 2>/dev/null || true
    echo "off $(rate "$work/root-moff" --http off "$@")" >> "$work/metrics-cost.tsv"
done
median() { grep "^$1 " "$work/metrics-cost.tsv" | awk -v c="$2" '{print $c}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
on=$(median on 2); off=$(median off 2); con=$(median on 3); coff=$(median off 3)
echo "metrics on: $on events/s, $con CPU s; off: $off events/s, $coff CPU s (medians of $runs alternating runs)"
echo "throughput on/off = $(echo "scale=3; $on / $off" | bc); CPU on/off = $(echo "scale=3; $con / $coff" | bc)"
