#!/usr/bin/env bash
# perf/memcheck.sh: runs the hostile-script golden cases (and any case named on the command
# line) under valgrind's memcheck with the release binary, and fails when memcheck reports an
# invalid read or write, a use of uninitialised memory in the engine's own code, or when the
# output differs from the case's expected.json. Too slow for the default test run (a few
# minutes); run it by hand or in CI jobs that have the time.
#
# Usage: perf/memcheck.sh [CASE_DIR...]   (default: tests/golden/*hostile*; tests/golden/* for all)
# Environment: DFM_BIN (default: $CARGO_TARGET_DIR or ~/.cache/dragonfly-mle-target, release)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${DFM_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/dragonfly-mle-target}/release/dragonfly-mle}
command -v valgrind >/dev/null || { echo "perf/memcheck.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
[ -x "$bin" ] || { echo "perf/memcheck.sh: no binary at $bin (cargo build --release, or set DFM_BIN)" >&2; exit 2; }
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=("$here"/tests/golden/*hostile*)
status=0
for case in "${cases[@]}"; do
    case=$(cd "$case" && pwd)
    for shards in 1 2; do
        work=$(mktemp -d)
        mkdir -p "$work/logs"
        cp "$case/input.json" "$work/logs/"
        # No suppressions: every error memcheck reports counts.
        valgrind --tool=memcheck --error-exitcode=99 --track-origins=no --log-file="$work/memcheck.log" \
            "$bin" -r "$case" -l "$work/logs" --config "$case/config.lua" --no-pin --http off --shards "$shards" \
            > "$work/stdout" 2> "$work/stderr" || true
        errors=$(grep -Eo 'ERROR SUMMARY: [0-9]+' "$work/memcheck.log" | tail -1 | grep -Eo '[0-9]+$' || echo "?")
        invalid=$(grep -Ec 'Invalid (read|write)' "$work/memcheck.log" || true)
        same=yes
        cmp -s "$case/expected.json" "$work/logs/output.json" || same=no
        echo "$(basename "$case") --shards $shards: memcheck errors $errors, invalid reads/writes $invalid, output as expected: $same; $(tail -1 "$work/stdout")"
        if [ "$errors" != 0 ] || [ "$same" != yes ]; then
            status=1
            echo "  memcheck log kept in $work/memcheck.log" >&2
        else
            rm -rf "$work"
        fi
    done
done
exit $status
