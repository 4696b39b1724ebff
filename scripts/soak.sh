#!/usr/bin/env bash
# Soak test (issue 10 part 7): `tracebench replay` at a steady rate against a separate
# `tracebench sim` process for DURATION_S seconds (default 600), with the resident memory
# (VmRSS) of both sampled every SAMPLE_S seconds (default 10) into WORK/rss.csv. Reports
# the outcome counts and each process's memory growth from the first full minute to the
# end; the replay keeps every finished request's record for its summary, so it grows by
# about the size of those records (reported per 1,000 requests), the simulator not at all.
#
# Usage: scripts/soak.sh
# Environment: TRACEBENCH_BIN (default: $CARGO_TARGET_DIR/debug/tracebench), DURATION_S
# (600), RATE (20 requests/s), OUTPUT_TOKENS (20), TTFT_MS (100), ITL_MS (20), SAMPLE_S (10),
# WARM_S (60: growth is measured from the first sample after it),
# WORK (a fresh temporary directory).
set -euo pipefail

TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/tracebench/target}
BIN=${TRACEBENCH_BIN:-$TARGET_DIR/debug/tracebench}
DURATION_S=${DURATION_S:-600}
RATE=${RATE:-20}
OUTPUT_TOKENS=${OUTPUT_TOKENS:-20}
TTFT_MS=${TTFT_MS:-100}
ITL_MS=${ITL_MS:-20}
SAMPLE_S=${SAMPLE_S:-10}
WARM_S=${WARM_S:-60}
WORK=${WORK:-$(mktemp -d /tmp/tracebench-soak.XXXXXX)}
N=$((DURATION_S * RATE))
echo "binary: $BIN; $N requests at $RATE/s; work dir: $WORK"

awk -v n="$N" -v out="$OUTPUT_TOKENS" 'BEGIN {
  for (i = 0; i < n; i++)
    printf "{\"timestamp\": 0, \"input_length\": 64, \"output_length\": %d}\n", out
}' > "$WORK/trace.jsonl"

"$BIN" sim --port 0 --timing fixed --no-tokenize --ttft-ms "$TTFT_MS" --itl-ms "$ITL_MS" \
  2> "$WORK/sim.log" &
SIM_PID=$!
trap 'kill -INT "$SIM_PID" 2>/dev/null || true' EXIT
URL=""
for _ in $(seq 1 100); do
  URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$WORK/sim.log" | head -n 1 || true)
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { echo "the simulator did not start:"; cat "$WORK/sim.log"; exit 1; }

"$BIN" replay --base-url "$URL" --model tracebench-sim --no-calibrate --no-progress \
  --prompt random --request-rate "$RATE" --burstiness 50 --trace "$WORK/trace.jsonl" \
  --output "$WORK/run" > "$WORK/replay.out" 2> "$WORK/replay.log" &
REPLAY_PID=$!

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo ""; }
echo "elapsed_s,replay_rss_kib,sim_rss_kib,requests_done" > "$WORK/rss.csv"
START=$(date +%s)
while kill -0 "$REPLAY_PID" 2>/dev/null; do
  REPLAY_RSS=$(rss_kib "$REPLAY_PID")
  DONE=$( (wc -l < "$WORK/run/requests.jsonl") 2>/dev/null || echo 0)
  [ -n "$REPLAY_RSS" ] && echo "$(( $(date +%s) - START )),$REPLAY_RSS,$(rss_kib "$SIM_PID"),$DONE" \
    >> "$WORK/rss.csv"
  sleep "$SAMPLE_S"
done
wait "$REPLAY_PID" || echo "replay exit code $?"

jq -c '{sent: .summary.sent, completed: .summary.completed,
        failed_by_cause: .summary.failed_by_cause, duration_s: .summary.duration_s,
        p50_ttft_ms: .median_ttft_ms, p99_ttft_ms: .p99_ttft_ms}' "$WORK/run/summary.json"
# Growth from the first sample after WARM_S (60) s (warm: tokenizer, pools, buffers) to the last.
awk -v warm="$WARM_S" -F, 'NR > 1 && $1 >= warm && !base { base = 1; r0 = $2; s0 = $3; d0 = $4 }
  NR > 1 { r1 = $2; s1 = $3; d1 = $4; rmax = ($2 > rmax ? $2 : rmax); smax = ($3 > smax ? $3 : smax) }
  END {
    printf "replay RSS: %d KiB after warm-up, %d KiB at the end, peak %d KiB: %+d KiB over %d requests (%.1f KiB per 1,000)\n",
      r0, r1, rmax, r1 - r0, d1 - d0, (d1 > d0 ? (r1 - r0) * 1000 / (d1 - d0) : 0)
    printf "sim RSS:    %d KiB after warm-up, %d KiB at the end, peak %d KiB: %+d KiB\n", s0, s1, smax, s1 - s0
  }' "$WORK/rss.csv"
echo "samples: $WORK/rss.csv"
