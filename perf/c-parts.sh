#!/usr/bin/env bash
# perf/c-parts.sh [RUNS] : where configuration (c)'s time goes, step by step. The analyzer of
# perf/root-c is grown one step at a time and each variant runs on the same input (the
# realistic-cardinality eve.json of perf/run.sh, made by it if missing), alternating, one
# shard unless arguments after -- say otherwise; the table gives the median user+system CPU
# per event and events/s of each. Then the script's own work without the engine: the same
# key building and counting in the engine's LuaJIT (inside setup(), on 1,000,000 generated
# tuples, no events flowing), for the floor of what the script costs.
#   c0  pass-through (no field read)
#   c1  + reads the five tuple fields
#   c2  + builds the key (tostring and concatenation): each key is garbage at once
#   c3  + counts in a table: each key is kept (the string table and the heap grow)
#   c4  + writes tuple_count (the full configuration (c))
#   c6  c0 + a table of 1,000,000 kept unique string keys, no field read
#   c7  c0 + a table of 1,000,000 integer keys
# Environment: DFM_BIN, PERF_DIR (as perf/run.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
runs=${1:-3}
shift || true
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--shards 1)
bin=${DFM_BIN:-$HOME/.cache/dfm-target/release/dragonfly-mle}
work=${PERF_DIR:-/tmp/dfm-perf}
[ -x "$bin" ] || { echo "perf/c-parts.sh: no binary at $bin (set DFM_BIN)" >&2; exit 1; }
if [ ! -s "$work/eve.json" ]; then
    PERF_CONFIGS=a "$here/run.sh" 1000000 1 >/dev/null
fi
events=$(wc -l < "$work/eve.json")
key='local key = tostring(msg.src_ip) .. "|" .. tostring(msg.src_port) .. "|" .. tostring(msg.dest_ip) .. "|" .. tostring(msg.dest_port) .. "|" .. tostring(msg.proto)'
count='local n = (counts[key] or 0) + 1
   counts[key] = n'
declare -A body=(
    [c0]=''
    [c1]='local a, b, c, d, e = msg.src_ip, msg.src_port, msg.dest_ip, msg.dest_port, msg.proto'
    [c2]="$key"
    [c3]="$key
   $count"
    [c4]="$key
   $count
   msg.tuple_count = n"
    [c6]='i = i + 1
   local key = "10.1.2.3|" .. i .. "|10.3.4.5|53|TCP"
   counts[key] = (counts[key] or 0) + 1'
    [c7]='i = i + 1
   counts[i] = (counts[i] or 0) + 1'
)
variants=(c0 c1 c2 c3 c4 c6 c7)
for v in "${variants[@]}"; do
    rm -rf "$work/root-$v"
    cp -r "$here/root-c" "$work/root-$v"
    cat > "$work/root-$v/analyzer/tuple-count.lua" <<EOF
-- perf/c-parts.sh variant $v
local counts = {}
local i = 0
function setup() end
function loop(msg)
   ${body[$v]}
   dragonfly.output_event(default_output, msg)
end
EOF
done
: > "$work/parts.tsv"
for r in $(seq "$runs"); do
    for v in "${variants[@]}"; do
        : > "$work/out.json"
        /usr/bin/time -o "$work/parts.time" -f '%U %S' "$bin" -r "$work/root-$v" -l "$work" "${args[@]}" > "$work/parts.out" 2>&1
        rate=$(sed -n 's/.*(\([0-9.]*\) events\/s).*/\1/p' "$work/parts.out" | tail -1)
        read -r u s < "$work/parts.time"
        echo -e "$v\t$rate\t$u\t$s" >> "$work/parts.tsv"
    done
done
echo "| variant | events/s (median) | CPU us/event (median) |"
echo "|---|---:|---:|"
for v in "${variants[@]}"; do
    rates=$(awk -v v="$v" '$1 == v {print $2}' "$work/parts.tsv" | sort -n)
    cpus=$(awk -v v="$v" -v n="$events" '$1 == v {printf "%.3f\n", ($3 + $4) * 1e6 / n}' "$work/parts.tsv" | sort -n)
    mid=$(( (runs + 1) / 2 ))
    echo "| $v | $(echo "$rates" | sed -n "${mid}p") | $(echo "$cpus" | sed -n "${mid}p") |"
done

# The floor: the script's own work in the engine's LuaJIT, no events flowing.
floor="$work/root-floor"
rm -rf "$floor"
cp -r "$here/root-c" "$floor"
cat > "$floor/filter/filter.lua" <<'EOF'
-- perf/c-parts.sh: the tuple counter's work alone, in setup(), on generated tuples.
local tnew = require("table.new")
function setup()
   local N = 1000000
   local src, sp, dst, dp, pr = tnew(N, 0), tnew(N, 0), tnew(N, 0), tnew(N, 0), tnew(N, 0)
   math.randomseed(1)
   local ips = {}
   for i = 1, 20000 do ips[i] = "10." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(0, 255) end
   local dports = { 53, 80, 443, 22, 3389, 8080 }
   for i = 1, N do
      src[i], sp[i] = ips[math.random(1, 10000)], math.random(1024, 65535)
      dst[i], dp[i] = ips[10000 + math.random(1, 10000)], dports[math.random(1, 6)]
      pr[i] = (i % 3 == 0) and "UDP" or "TCP"
   end
   collectgarbage() collectgarbage()
   local counts, kept = {}, 0
   local t0 = os.clock()
   for i = 1, N do
      local key = tostring(src[i]) .. "|" .. tostring(sp[i]) .. "|" .. tostring(dst[i]) .. "|" .. tostring(dp[i]) .. "|" .. tostring(pr[i])
      local n = (counts[key] or 0) + 1
      if n == 1 then kept = kept + 1 end
      counts[key] = n
   end
   error(string.format("FLOOR %.3f us/event, %d distinct keys", (os.clock() - t0) / N * 1e6, kept))
end
function loop(msg) end
EOF
"$bin" -r "$floor" -l "$work" --shards 1 2>&1 | grep -o 'FLOOR[^"]*' | head -1 || true
