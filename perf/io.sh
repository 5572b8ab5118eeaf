#!/usr/bin/env bash
# perf/io.sh: throughput of the sources and sinks with the pass-through configuration (a):
# unix datagram and stream socket inputs, Kafka in -> Kafka out (tansu broker, in memory),
# gzip input, and the Parquet output when the build has it.
#
# Usage: perf/io.sh [EVENTS] [RUNS] [-- ARGS FOR THE ENGINE...]
#   EVENTS  generated events (default 1000000); RUNS runs per case, median shown (default 3)
# Environment:
#   DFM_BIN      binary (default ~/.cache/dfm-target/release/dragonfly-mle)
#   PERF_DIR     work dir (default /tmp/dfm-perf-io); PERF_CASES (default "dgram stream kafka gzip parquet")
#   PRODUCERS    socket producer threads (default 4); TANSU: broker binary (default tansu in PATH or ~/.cargo/bin)
#   DGRAM_QLEN   if set, net.unix.max_dgram_qlen for the dgram case (needs root; restored
#                afterwards). The kernel default, 10 datagrams, makes producers stall as soon as
#                the reader is 10 datagrams behind; the value in force is printed either way.
# The load generator sends datagrams with sendmmsg (64 per call) and stream lines through a
# 1 MiB buffer; it shares the machine's cores with the engine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
events=1000000
runs=3
extra=()
npos=0
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *)
            [[ "$1" =~ ^[0-9]+$ ]] || { echo "perf/io.sh: expected a number, got '$1'" >&2; exit 2; }
            case $npos in 0) events=$1 ;; 1) runs=$1 ;; *) echo "perf/io.sh: too many arguments" >&2; exit 2 ;; esac
            npos=$((npos + 1)); shift ;;
    esac
done
bin=${DFM_BIN:-$HOME/.cache/dfm-target/release/dragonfly-mle}
work=${PERF_DIR:-/tmp/dfm-perf-io}
cases=${PERF_CASES:-dgram stream kafka gzip parquet}
producers=${PRODUCERS:-4}
tansu=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
die() { echo "perf/io.sh: FAIL: $*" >&2; exit 1; }
[ -x "$bin" ] || die "no binary at $bin (CARGO_TARGET_DIR=~/.cache/dfm-target cargo build --release)"
mkdir -p "$work"
work=$(cd "$work" && pwd)

input=$work/eve.json
if [ ! -f "$input" ] || [ "$(wc -l < "$input")" -ne "$events" ]; then
    echo "input: generating $events events"
    python3 "$here/gen_eve.py" --events "$events" --seed 1 --flows 50000 -o "$input"
fi
size=$(stat -c %s "$input")
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
now() { date +%s.%N; }

# A root with the pass-through filter and analyzer of perf/root-a and the given URIs.
make_root() { # in_uri out_uri
    local root=$work/root
    rm -rf "$root"; cp -rL "$here/root-a" "$root"
    cat > "$root/config/config.lua" <<EOF
inputs = { { tag = "eve", uri = "$1", script = "filter.lua", default_analyzer = "a" } }
analyzers = { { tag = "a", script = "pass-through.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "$2" } }
stats_interval = 1
EOF
    echo "$root"
}

# Waits until $1 has $2 bytes (pass-through output is byte-identical to the input).
wait_size() {
    local t0; t0=$(now)
    while [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -lt "$2" ]; do
        sleep 0.02
        if [ "$(echo "$(now) - $t0 > 600" | bc)" = 1 ]; then die "timed out waiting for $1"; fi
    done
    return 0
}

results=$work/results.tsv
: > "$results"
socket_case() { # name scheme
    local sock=$work/in.sock root
    root=$(make_root "$2://$sock" "file://$work/out.json<")
    for i in $(seq 1 "$runs"); do
        rm -f "$work/out.json"
        "$bin" -r "$root" -l "$work" --run-dir "$work/run" ${extra[@]+"${extra[@]}"} > "$work/engine.out" 2>&1 &
        local pid=$!
        while [ ! -S "$sock" ]; do sleep 0.02; done
        local t0; t0=$(now)
        "$bin" bench-send "$2://$sock" "$input" "$producers" > "$work/send.out"
        wait_size "$work/out.json" "$size"
        local t1; t1=$(now)
        kill -INT "$pid"; wait "$pid" || true
        local rate; rate=$(echo "$events / ($t1 - $t0)" | bc -l)
        printf '%s run %d: %.0f events/s (%s)\n' "$1" "$i" "$rate" "$(cat "$work/send.out")"
        printf '%s\t%.0f\n' "$1" "$rate" >> "$results"
    done
}

# A run that ends by itself (file input): the engine's own summary gives the rate.
file_case() { # name in_uri out_uri
    local root s rate
    root=$(make_root "$2" "$3")
    for i in $(seq 1 "$runs"); do
        rm -rf "$work/pq"
        s=$("$bin" -r "$root" -l "$work" ${extra[@]+"${extra[@]}"} | grep -m1 'events read')
        rate=$(printf '%s\n' "$s" | sed -n 's/.*(\([0-9.]*\) events\/s).*/\1/p')
        echo "$1 run $i: $s"
        printf '%s\t%s\n' "$1" "$rate" >> "$results"
    done
}

for c in $cases; do
    case "$c" in
        dgram)
            qfile=/proc/sys/net/unix/max_dgram_qlen
            old_qlen=$(cat "$qfile")
            if [ -n "${DGRAM_QLEN:-}" ]; then
                echo "$DGRAM_QLEN" > "$qfile" || die "cannot set net.unix.max_dgram_qlen (root needed)"
            fi
            echo "dgram: net.unix.max_dgram_qlen = $(cat "$qfile"), $producers producer(s)"
            socket_case dgram ipc
            [ -z "${DGRAM_QLEN:-}" ] || echo "$old_qlen" > "$qfile" ;;
        stream) socket_case stream ipc+stream ;;
        gzip)
            gzip -1 -c "$input" > "$work/eve.json.gz"
            file_case gzip "file://$work/eve.json.gz" "file://$work/out.json<" ;;
        parquet) file_case parquet "file://$input" "parquet://$work/pq/eve" ;;
        kafka)
            [ -x "$tansu" ] || die "tansu not found (cargo install tansu --locked --features dynostore)"
            port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
            "$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
                --storage-engine memory://tansu/ > "$work/tansu.log" 2>&1 &
            tpid=$!
            trap 'kill $tpid 2>/dev/null || true' EXIT
            while ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.1; done
            for i in $(seq 1 "$runs"); do
                "$tansu" topic create --broker "tcp://127.0.0.1:$port" --partitions 4 "in$i" > /dev/null
                "$tansu" topic create --broker "tcp://127.0.0.1:$port" --partitions 4 "out$i" > /dev/null
                echo "kafka run $i: $("$bin" bench-kafka-produce "127.0.0.1:$port" "in$i" "$input")"
                root=$(make_root "kafka://127.0.0.1:$port/in$i?group=perf$i&offset=earliest" "kafka://127.0.0.1:$port/out$i")
                t0=$(now)
                rm -f "$work/dragonfly-mle-stats.log"
                "$bin" -r "$root" -l "$work" --run-dir "$work/run" ${extra[@]+"${extra[@]}"} > "$work/engine.out" 2>&1 &
                pid=$!
                # Timed by the engine's own counter (stats every second, read every 50 ms):
                # a consumer counting at the same time would compete for the 2 cores.
                while ! tail -n 1 "$work/dragonfly-mle-stats.log" 2>/dev/null | grep -q "\"out\":{\"written\":$events,"; do
                    sleep 0.05
                    if [ "$(echo "$(now) - $t0 > 600" | bc)" = 1 ]; then die "kafka run $i: timed out"; fi
                done
                t1=$(now)
                kill -INT "$pid"; wait "$pid" || true
                "$bin" bench-kafka-count "127.0.0.1:$port" "out$i" "$events" > "$work/count.out" || die "kafka run $i: $(cat "$work/count.out")"
                rate=$(echo "$events / ($t1 - $t0)" | bc -l)
                printf 'kafka run %d: %.0f events/s in -> engine -> out, engine start included (then %s)\n' "$i" "$rate" "$(cat "$work/count.out")"
                printf 'kafka\t%.0f\n' "$rate" >> "$results"
            done
            kill "$tpid" 2>/dev/null || true ;;
        *) die "unknown case $c" ;;
    esac
done

echo
echo "| case | events/s (median of $runs) |"
echo "|---|---:|"
for c in $cases; do
    m=$(awk -F'\t' -v c="$c" '$1 == c { print $2 }' "$results" | median 2>/dev/null || true)
    [ -n "$m" ] && printf '| %s | %.0f |\n' "$c" "$m"
done
