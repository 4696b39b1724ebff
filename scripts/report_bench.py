#!/usr/bin/env python3
"""Times `tracebench report` on a synthetic run: N requests of 1-300 output tokens, one
chunk per token (12,000 requests are about 1.8 M chunks and a 40 MB requests.jsonl).

Usage: scripts/report_bench.py [N] [TRACEBENCH_BINARY]
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 12000
binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/tracebench"
random.seed(1)
run_dir = tempfile.mkdtemp(prefix="tracebench-report-bench-")
run = {
    "schema_version": 1, "tracebench_version": "bench", "started_at": "2026-01-01T00:00:00Z",
    "trace": "synthetic", "base_url": "http://127.0.0.1:9/v1", "model": "m", "tokenizer": "t",
    "prompt_mode": "random", "seed": 1, "goodput": {"ttft_ms": 500.0, "tpot_ms": None, "e2el_ms": None},
    "max_concurrency": None, "calibration": None, "config": {},
}
with open(os.path.join(run_dir, "run.json"), "w") as f:
    json.dump(run, f)
with open(os.path.join(run_dir, "requests.jsonl"), "w") as f:
    t = 1.0
    for i in range(n):
        t += random.expovariate(20)
        sent = t + 0.001
        out = random.randint(1, 300)
        chunks = [sent + 0.1 + 0.02 * k for k in range(out)]
        f.write(json.dumps({
            "index": i, "line": i + 1, "scheduled_s": t, "sent_s": sent,
            "first_token_s": chunks[0], "end_s": chunks[-1], "queue_wait_ms": None,
            "session_wait_ms": None, "input_tokens": 1000, "output_tokens": out,
            "prompt_tokens": 1000, "completion_tokens": out, "completion_source": "usage",
            "cached_tokens": 100, "chunk_s": chunks, "outcome": "ok", "error": None,
        }) + "\n")
start = time.monotonic()
subprocess.run([binary, "report", run_dir], check=True, stdout=subprocess.DEVNULL)
print(f"{n} requests: tracebench report took {time.monotonic() - start:.2f} s ({run_dir})")
