#!/usr/bin/env bash
# Prompt synthesis benchmark through the command line, with peak memory:
#   blocks mode for every record of the Mooncake conversation trace (prompts written to
#   /dev/null, a seeded sample of 1,000 re-encoded), RUNS times, median wall time and the
#   largest peak RSS; then random mode (the seed's algorithm) on the first 1,000 records once.
# Usage: scripts/bench_prompts.sh [RUNS]   (default 5). Results go in docs/PERFORMANCE.md.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS=${1:-5}
TRACE="${TRACEBENCH_TRACES:-$ROOT/../shared/traces}/mooncake_conversation_trace.jsonl"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tracebench/target}"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$CARGO_TARGET_DIR/release/tracebench"

# One timed run: prints "<wall seconds> <peak RSS KiB> <CPU seconds>".
timed() {
  local log
  log=$(mktemp)
  /usr/bin/time -v "$BIN" prompts --trace "$TRACE" --output /dev/null "$@" 2>"$log" >/dev/null || {
    cat "$log" >&2
    return 1
  }
  awk '/Elapsed \(wall clock\)/ { n = split($NF, t, ":"); s = t[n] + (n > 1 ? t[n-1] * 60 : 0) }
       /Maximum resident set size/ { rss = $NF }
       /User time|System time/ { cpu += $NF }
       END { printf "%.2f %d %.2f\n", s, rss, cpu }' "$log"
  rm -f "$log"
}

# Median wall time (and the CPU time of that run), largest peak RSS; load average alongside,
# since the machine may be shared.
summarise() {
  sort -n | awk '{ w[NR] = $1; c[NR] = $3; if ($2 > m) m = $2 }
    END { i = int((NR + 1) / 2)
          printf "median %.2f s wall (%.2f s CPU) of %d runs, peak RSS %.0f MiB\n", w[i], c[i], NR, m / 1024 }'
  echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
}

echo "blocks, all records, --verify 1000:"
for _ in $(seq "$RUNS"); do timed --prompt blocks --verify 1000; done | summarise
echo "blocks, all records, no verification:"
for _ in $(seq "$RUNS"); do timed --prompt blocks; done | summarise
echo "random, first 1,000 records:"
timed --prompt random --limit 1000 | summarise
