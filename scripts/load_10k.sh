#!/usr/bin/env bash
# Load test (issue 10 part 7): N concurrent streams (default 10,000) from `tracebench replay`
# against `tracebench sim` run as a separate process, both under /usr/bin/time -v.
# Prints outcome counts, peak concurrency, peak memory of both processes and any
# "Too many open files" (EMFILE) seen in either log.
#
# Usage: scripts/load_10k.sh [N]
# Environment: TRACEBENCH_BIN (default: $CARGO_TARGET_DIR/debug/tracebench), TTFT_MS (1000),
# ITL_MS (100), OUTPUT_TOKENS (40): each stream lasts about TTFT + ITL * (OUTPUT_TOKENS - 1),
# long enough for all N to be open at once. WORK (a fresh temporary directory) keeps the
# logs, the trace and the run.
set -euo pipefail

N=${1:-10000}
TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/tracebench/target}
BIN=${TRACEBENCH_BIN:-$TARGET_DIR/debug/tracebench}
TTFT_MS=${TTFT_MS:-1000}
ITL_MS=${ITL_MS:-100}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-40}
WORK=${WORK:-$(mktemp -d /tmp/tracebench-load.XXXXXX)}

# Every stream holds a socket on each side; the hard limit here is 20,000 per process.
ulimit -n 20000 || ulimit -n "$(ulimit -Hn)"
echo "open-files limit: $(ulimit -n); binary: $BIN; work dir: $WORK"

# All N records at one instant.
awk -v n="$N" -v out="$OUTPUT_TOKENS" 'BEGIN {
  for (i = 0; i < n; i++)
    printf "{\"timestamp\": 0, \"input_length\": 16, \"output_length\": %d}\n", out
}' > "$WORK/trace.jsonl"

# The simulator, on a free port, reporting its address on stderr.
/usr/bin/time -v -o "$WORK/sim.time" "$BIN" sim --port 0 --timing fixed --no-tokenize \
  --ttft-ms "$TTFT_MS" --itl-ms "$ITL_MS" 2> "$WORK/sim.log" &
TIME_PID=$!
# /usr/bin/time ignores SIGINT while it waits: signals go to the simulator itself.
SIM_PID=""
for _ in $(seq 1 50); do
  SIM_PID=$(pgrep -P "$TIME_PID" || true)
  [ -n "$SIM_PID" ] && break
  sleep 0.1
done
trap 'kill -INT "$SIM_PID" 2>/dev/null || true' EXIT
URL=""
for _ in $(seq 1 100); do
  URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$WORK/sim.log" | head -n 1 || true)
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { echo "the simulator did not start:"; cat "$WORK/sim.log"; exit 1; }
echo "simulator at $URL"

START=$(date +%s.%N)
/usr/bin/time -v -o "$WORK/replay.time" "$BIN" replay --base-url "$URL" \
  --model tracebench-sim --no-calibrate --no-progress --prompt random \
  --trace "$WORK/trace.jsonl" --output "$WORK/run" > "$WORK/replay.out" 2> "$WORK/replay.log" \
  || echo "replay exit code $?"
END=$(date +%s.%N)

# The simulator's /usr/bin/time report is written when it exits.
kill -INT "$SIM_PID"
wait "$TIME_PID" || true
trap - EXIT

peak_kib() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }
echo "wall time of the replay: $(echo "$END - $START" | bc) s"
jq -c '{sent: .summary.sent, completed: .summary.completed,
        failed_by_cause: .summary.failed_by_cause,
        max_concurrent_requests, duration_s: .summary.duration_s,
        p50_ttft_ms: .median_ttft_ms, p99_ttft_ms: .p99_ttft_ms}' "$WORK/run/summary.json"
echo "peak RSS: replay $(peak_kib "$WORK/replay.time") KiB, sim $(peak_kib "$WORK/sim.time") KiB"
EMFILE=$(cat "$WORK/replay.log" "$WORK/sim.log" "$WORK/run/requests.jsonl" \
  | grep -c 'Too many open files' || true)
echo "EMFILE mentions: $EMFILE"
