#!/usr/bin/env bash
# perf/replay.sh [EVENTS] [PACE] [CONFIG] : replays a day of generated EVE events at PACE times
# the recorded pace (file://eve.json?pace=PACE) and reports whether the engine kept up, and its
# end-to-end latency. The events' timestamps cover 86,400 s (perf/gen_eve.py --span 86400), so
# the replay is scheduled to take 86400/PACE s.
#   EVENTS  generated events (default 1000000)
#   PACE    replay speed (default 2000: 43.2 s)
#   CONFIG  a (pass-through) or c (5-field tuple counter), perf/root-X (default a)
# Environment:
#   DFM_BIN     binary (default ~/.cache/dfm-target/release/dragonfly-mle)
#   REPLAY_DIR  work dir (default /tmp/dfm-replay; eve.json reused while its stamp matches)
#   REPLAY_ARGS engine arguments (default "--shards 2")
# Prints, every 5 s, the lag behind the schedule (dragonfly_input_pace_lag_seconds); at the end:
# the scheduled and the actual duration, the largest lag the engine had (pace_lag_max_ms of its
# last stats line), "kept up" (largest lag <= 0.1 s + 1% of the scheduled duration)
# or "fell behind", and the p50/p90/p99 of the time from reading an event to handing its
# record to the output (dragonfly_end_to_end_quantile_seconds, whole run).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
events=${1:-1000000}
pace=${2:-2000}
cfg=${3:-a}
bin=${DFM_BIN:-$HOME/.cache/dfm-target/release/dragonfly-mle}
work=${REPLAY_DIR:-/tmp/dfm-replay}
read -r -a args <<< "${REPLAY_ARGS:---shards 2}"
span=86400
case $cfg in a|c) ;; *) echo "perf/replay.sh: CONFIG must be a or c" >&2; exit 2 ;; esac
[ -x "$bin" ] || { echo "perf/replay.sh: no binary at $bin (cargo build --release, or set DFM_BIN)" >&2; exit 1; }

mkdir -p "$work"
stamp="events=$events span=$span seed=1"
if [ "$(cat "$work/eve.stamp" 2>/dev/null)" != "$stamp" ]; then
    python3 "$here/gen_eve.py" --events "$events" --seed 1 --span "$span" -o "$work/eve.json" >&2
    echo "$stamp" > "$work/eve.stamp"
fi
rm -rf "$work/root" "$work/logs"
cp -rL "$here/root-$cfg" "$work/root"
mkdir -p "$work/logs"
ln -sf "$work/eve.json" "$work/logs/eve.json"
sed -i "s|file://eve.json|file://eve.json?pace=$pace|" "$work/root/config/config.lua"
grep -q "pace=$pace" "$work/root/config/config.lua" || { echo "perf/replay.sh: root-$cfg has no file://eve.json input" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

metric() { # NAME LABEL-FILTER: the value of the first matching sample of /metrics
    curl -s "http://127.0.0.1:$port/metrics" | awk -v n="$1" -v f="$2" '$1 ~ "^"n"(\\{|$)" && index($1, f) { print $2; exit }'
}

start=$(date +%s.%N)
"$bin" -r "$work/root" -l "$work/logs" --http "127.0.0.1:$port" "${args[@]}" > "$work/summary.txt" 2> "$work/stderr.txt" &
pid=$!
max_lag=0
last_print=0
e2e=""
while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    lag=$(metric dragonfly_input_pace_lag_seconds 'input="eve"' || true)
    [ -n "$lag" ] || continue
    max_lag=$(python3 -c "print(max($max_lag, $lag))")
    q=$(curl -s "http://127.0.0.1:$port/metrics" | grep '^dragonfly_end_to_end_quantile_seconds' | grep -v 'output="log"\|output="stats"' || true)
    [ -n "$q" ] && e2e=$q
    now=$(date +%s)
    if [ $((now - last_print)) -ge 5 ]; then
        echo "t=$(python3 -c "print(round($(date +%s.%N) - $start, 1))") s: lag ${lag} s" >&2
        last_print=$now
    fi
done
wait "$pid" || { echo "perf/replay.sh: the engine failed:" >&2; cat "$work/stderr.txt" >&2; exit 1; }
end=$(date +%s.%N)
echo "summary: $(cat "$work/summary.txt")"
# The engine's own record of its largest lag (the last stats line, written at exit).
max_ms=$(tail -n 1 "$work/logs/dragonfly-mle-stats.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["inputs"]["eve"]["pace_lag_max_ms"])')
python3 -c "
start, end, span, pace, lag = $start, $end, $span, $pace, $max_ms / 1000
took = end - start
ok = lag <= 0.1 + 0.01 * span / pace
print(f'scheduled {span / pace:.1f} s, took {took:.1f} s; largest lag behind the schedule {lag:.3f} s: ' + ('kept up' if ok else 'fell behind'))
"
echo "end-to-end latency (seconds, whole run):"
echo "$e2e" | sed 's/^dragonfly_end_to_end_quantile_seconds/  /'
