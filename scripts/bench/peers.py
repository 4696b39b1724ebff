"""The peers side by side (`run.py peers`): AIPerf, GuideLLM, inference-perf and SGLang's
bench_serving replay the same Mooncake slice against the same pinned simulator as
tracebench, and every client is judged by the same server-side figures, read from the
simulator's chunk log alone (the peers send no request ids, so no per-request join):

  arrival rate   (n − 1) / (last − first `received`)
  arrival lag    per request, in arrival order against the sorted schedule:
                 (received_i − scheduled_i) − min over j of the same; p50 / p99
  TTFT truth     first token write − received, p50 / p99
and the client's own TTFT p50 / p99 as it reports it (its export file).

Peers live in venvs under $TRACEBENCH_PEERS (default /root/.cache/tracebench/peers), made
with Python 3.12 (`install()`; $TRACEBENCH_PEERS_PYTHON, else `python3.12` if it runs, else
pyenv's ~/.pyenv/versions/3.12*); tokenizers come from a local folder, offline.
"""

import glob
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import procs
import truth

PEERS_DIR = Path(os.environ.get("TRACEBENCH_PEERS", "/root/.cache/tracebench/peers"))
TOKENIZER_CANDIDATES = ["/root/.cache/tracebench/tokenizers/qwen3/tokenizer.json",
                        "/root/.cache/tracebench/llama/tokenizers/qwen3/tokenizer.json"]
MOONCAKE_BLOCK = 512


def python312():
    """The interpreter the venvs are made with (a pyenv shim of a version that is not
    selected fails, so each candidate is run once)."""
    if os.environ.get("TRACEBENCH_PEERS_PYTHON"):
        return os.environ["TRACEBENCH_PEERS_PYTHON"]
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    for candidate in ["python3.12"] + pyenv:
        try:
            if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
                return candidate
        except OSError:
            continue
    return "python3.12"


def tokenizer_json():
    """The Qwen3 tokenizer.json ($TRACEBENCH_PEERS_TOKENIZER, else the first that exists)."""
    if os.environ.get("TRACEBENCH_PEERS_TOKENIZER"):
        return Path(os.environ["TRACEBENCH_PEERS_TOKENIZER"])
    found = [Path(p) for p in TOKENIZER_CANDIDATES if Path(p).exists()]
    return found[0] if found else Path(TOKENIZER_CANDIDATES[0])

# What each peer's venv gets: SGLang without its dependencies (torch, kernels), plus what
# its benchmark module imports.
INSTALL = {
    "aiperf": [["aiperf"]],
    "guidellm": [["guidellm"]],
    "inference-perf": [["inference-perf"]],
    "sglang": [["--no-deps", "sglang"],
               ["aiohttp", "numpy", "tqdm", "requests", "transformers", "pillow", "msgspec",
                "orjson", "pybase64", "datasets", "psutil", "starlette", "pyzmq", "IPython"]],
}

# SGLang's benchmark module, run without the `__init__.py` of `sglang` and `sglang.srt.utils`
# (both import torch; the benchmark needs only `sglang.srt.utils.network`, which does not)
# and with the one constant it takes from the server package stubbed.
SGLANG_SHIM = '''import importlib.util, runpy, sys, types
from pathlib import Path
site = Path(importlib.util.find_spec("aiohttp").origin).parent.parent
for name in ["sglang", "sglang.srt", "sglang.srt.utils"]:
    pkg = types.ModuleType(name); pkg.__path__ = [str(site.joinpath(*name.split(".")))]
    sys.modules[name] = pkg
stub = types.ModuleType("sglang.srt.disaggregation.utils")
stub.FAKE_BOOTSTRAP_HOST = "2.2.2.2"
sys.modules["sglang.srt.disaggregation.utils"] = stub
sys.argv = ["bench_serving"] + sys.argv[1:]
runpy.run_module("sglang.bench_serving", run_name="__main__")
'''

# A minimal Qwen-style chat template for the local tokenizer folder.
TOKENIZER_CONFIG = {
    "tokenizer_class": "Qwen2TokenizerFast", "model_max_length": 1048576,
    "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
    "clean_up_tokenization_spaces": False,
    "chat_template": "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + "
                     "m['content'] + '<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt"
                     " %}{{'<|im_start|>assistant\\n'}}{% endif %}",
}


def install(peers=None):
    """Creates the venvs of `peers` (default: all) that are missing; returns {peer: None or
    why it failed}."""
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    status = {}
    for peer, steps in INSTALL.items():
        if peers is not None and peer not in peers:
            continue
        venv = PEERS_DIR / peer
        if (venv / "bin" / "python").exists():
            status[peer] = None
            continue
        log = open(PEERS_DIR / f"{peer}.install.log", "w")
        code = subprocess.run([python312(), "-m", "venv", str(venv)], stdout=log,
                              stderr=log).returncode
        for args in steps:
            if code == 0:
                code = subprocess.run([str(venv / "bin" / "pip"), "install", "-q"] + args,
                                      stdout=log, stderr=log).returncode
        status[peer] = None if code == 0 else f"pip install failed (see {log.name})"
    return status


def tokenizer_dir():
    """A local tokenizer folder (tokenizer.json + tokenizer_config.json)."""
    folder = PEERS_DIR / "tok-qwen3"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "tokenizer.json").exists():
        (folder / "tokenizer.json").write_bytes(tokenizer_json().read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    return folder


# bench_serving's Mooncake prompt is, per hash id, the id's digits then 128 × "hi" (not a
# 512-token block), in a chat template with a fixed sentence: measured with the Qwen3
# tokenizer, 21 tokens of overhead and ~134 per id (128 + the id's 5–6 digits + 1). Its
# slice gets as many ids as make the record's input length (to within half an id).
SGLANG_OVERHEAD_TOKENS = 21
SGLANG_ID_TOKENS = 134


def sglang_hash_ids(hash_ids, input_length):
    """Hash ids whose bench_serving prompt has ~`input_length` tokens: each 512-token block
    h becomes the ids 4h .. 4h+3 (so shared prefixes stay shared), as many as needed."""
    count = max(1, round((input_length - SGLANG_OVERHEAD_TOKENS) / SGLANG_ID_TOKENS))
    per_block = MOONCAKE_BLOCK // 128
    last = len(hash_ids) - 1
    return [hash_ids[min(i // per_block, last)] * per_block + i % per_block
            for i in range(count)]


def write_slice(source, path, records, rate, mode, style="ms"):
    """The slice as Mooncake JSONL, timestamps rescaled to `rate` (records / duration, as
    tracebench's --target-rate); small mode caps inputs at 512 tokens (one hash block);
    every output is capped at 32. `style`: "ms" integer-ms timestamps (the trace's own);
    "s" seconds (GuideLLM reads Mooncake timestamps as seconds); "sglang" fractional ms
    and hash ids rewritten for bench_serving's prompt builder (`sglang_hash_ids`).
    Returns the scheduled offsets, seconds."""
    with open(source) as f:
        rows = [json.loads(next(f)) for _ in range(records)]
    t0 = rows[0]["timestamp"]
    factor = (len(rows) / rate) / ((rows[-1]["timestamp"] - t0) / 1000.0)
    offsets = []
    with open(path, "w") as out:
        for row in rows:
            offsets.append((row["timestamp"] - t0) / 1000.0 * factor)
            stamp = {"ms": round(offsets[-1] * 1000), "s": round(offsets[-1], 6),
                     "sglang": round(offsets[-1] * 1000, 3)}[style]
            row = dict(row, timestamp=stamp,
                       output_length=min(row["output_length"], 32))
            if mode == "small":
                row["input_length"] = min(row["input_length"], MOONCAKE_BLOCK)
                row["hash_ids"] = row["hash_ids"][:1]
            if style == "sglang":
                row["hash_ids"] = sglang_hash_ids(row["hash_ids"], row["input_length"])
            out.write(json.dumps(row) + "\n")
    return offsets


def server_figures(chunk_log, offsets):
    """What the simulator saw: arrival rate and lag, TTFT truth."""
    sim = truth.read_chunk_log(chunk_log)
    entries = [(v[0], v[1]) for v in sim.values() if v[0] is not None]
    received = sorted(r for r, _ in entries)
    scheduled = sorted(offsets)[:len(received)]
    deltas = [r / 1e9 - s for r, s in zip(received, scheduled)]
    lags = [(d - min(deltas)) * 1e3 for d in deltas] if deltas else []
    ttft = [(tokens[0] - r) / 1e6 for r, tokens in entries if tokens]
    return {"arrivals": len(received), "arrival_rate": truth.rate([r / 1e9 for r in received]),
            "offered_rate": truth.rate(offsets), "arrival_lag_ms": truth.summary(lags),
            "ttft_truth_ms": truth.summary(ttft), "with_tokens": len(ttft)}


# AIPerf offline accepts only a hub-style id found in a hub cache: the folder's files are
# laid out as the hub cache of the id `local/qwen3` under HF_HOME.
HUB_ID = "local/qwen3"
HUB_COMMIT = "0" * 40


def hub_home():
    """An HF_HOME whose hub cache holds the local tokenizer as `local/qwen3`."""
    home = PEERS_DIR / "hf-home"
    repo = home / "hub" / "models--local--qwen3"
    snapshot = repo / "snapshots" / HUB_COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        (snapshot / name).write_bytes((tokenizer_dir() / name).read_bytes())
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(HUB_COMMIT)
    return home


def aiperf_argv(base, slice_path, out_dir):
    return [str(PEERS_DIR / "aiperf" / "bin" / "aiperf"), "profile", "--model", "tracebench-sim",
            "--url", base, "--endpoint-type", "chat", "--streaming",
            "--input-file", str(slice_path), "--custom-dataset-type", "mooncake_trace",
            "--fixed-schedule", "--tokenizer", HUB_ID,
            "--extra-inputs", "ignore_eos:true", "--output-artifact-dir", str(out_dir),
            "--ui-type", "none"]


def aiperf_ttft(out_dir):
    """AIPerf's own TTFT p50/p99 (ms) from its JSON export."""
    for path in Path(out_dir).rglob("*aiperf*.json"):
        data = json.loads(path.read_text())
        ttft = data.get("time_to_first_token") or data.get("records", {}).get(
            "time_to_first_token")
        if isinstance(ttft, dict):
            return {"p50": ttft.get("p50"), "p99": ttft.get("p99")}
    return None


def sglang_argv(base, slice_path, out_dir, records):
    """bench_serving's Mooncake replay: only its native backend (`sglang`, POST /generate)
    replays timestamps; slowdown 1 (the slice is already at the rate), one round per
    record, no warm-up request (it would reach the server as an extra arrival)."""
    shim = PEERS_DIR / "sglang_shim.py"
    shim.write_text(SGLANG_SHIM)
    return [str(PEERS_DIR / "sglang" / "bin" / "python"), str(shim), "--backend", "sglang",
            "--base-url", base, "--model", "tracebench-sim", "--tokenizer", str(tokenizer_dir()),
            "--dataset-name", "mooncake", "--dataset-path", str(slice_path),
            "--mooncake-slowdown-factor", "1", "--mooncake-num-rounds", "1",
            "--num-prompts", str(records), "--warmup-requests", "0",
            "--output-file", str(Path(out_dir) / "sglang.jsonl"), "--disable-tqdm"]


def sglang_ttft(out_dir):
    """bench_serving's own TTFT p50/p99 (ms) and mean prompt length (its tokenizer's count)
    from its output file."""
    path = Path(out_dir) / "sglang.jsonl"
    if not path.exists():
        return None
    data = json.loads(path.read_text().splitlines()[-1])
    mean_input = data.get("total_input_tokens", 0) / max(data.get("completed") or 1, 1)
    return {"p50": data.get("median_ttft_ms"), "p99": data.get("p99_ttft_ms"),
            "completed": data.get("completed"), "mean_input_tokens": mean_input}


def guidellm_argv(base, slice_path, out_dir):
    return [str(PEERS_DIR / "guidellm" / "bin" / "guidellm"), "run",
            "--backend", json.dumps({"kind": "openai_http", "target": base,
                                     "model": "tracebench-sim"}),
            "--profile", json.dumps({"kind": "replay", "schedule_turn": "timestamp"}),
            "--data", json.dumps({"kind": "mooncake",
                                  "source": {"kind": "json_file", "path": str(slice_path)}}),
            "--tokenizer", json.dumps({"kind": "hf_auto", "model": str(tokenizer_dir())}),
            "--output", json.dumps({"kind": "json", "path": str(Path(out_dir) / "out.json")})]


def guidellm_ttft(out_dir):
    """GuideLLM's own TTFT p50/p99 (ms) from its JSON output."""
    path = Path(out_dir) / "out.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())["benchmarks"][0]["metrics"]
    ttft = metrics["time_to_first_token_ms"]["successful"]
    return {"p50": ttft["percentiles"].get("p50", ttft["median"]),
            "p99": ttft["percentiles"].get("p99")}


def azure_csv(slice_path, csv_path):
    """The Mooncake slice as an Azure-LLM-style CSV (inference-perf replays only that)."""
    base = 1_700_000_000.0
    import datetime
    with open(slice_path) as f, open(csv_path, "w") as out:
        out.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for line in f:
            row = json.loads(line)
            stamp = datetime.datetime.fromtimestamp(base + row["timestamp"] / 1000.0,
                                                    datetime.timezone.utc)
            out.write(f"{stamp.strftime('%Y-%m-%d %H:%M:%S.%f')},{row['input_length']},"
                      f"{row['output_length']}\n")


def inference_perf_argv(base, slice_path, out_dir, records, rate):
    """inference-perf with a config file: /v1/completions (its trace replay supports no
    other API), random prompts of the trace's lengths, the trace's timing."""
    csv_path = Path(out_dir) / "trace.csv"
    azure_csv(slice_path, csv_path)
    trace = {"file": str(csv_path), "format": "AzurePublicDataset"}
    config = {
        "api": {"type": "completion", "streaming": True},
        "data": {"type": "random", "trace": trace},
        "load": {"type": "trace_replay", "trace": trace, "num_workers": 1,
                 "stages": [{"rate": rate, "duration": max(1, math.ceil(records / rate))}]},
        "server": {"type": "vllm", "model_name": "tracebench-sim", "base_url": base,
                   "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": str(tokenizer_dir())},
        "storage": {"local_storage": {"path": str(Path(out_dir) / "reports")}},
    }
    config_path = Path(out_dir) / "config.json"
    config_path.write_text(json.dumps(config, indent=1))
    return [str(PEERS_DIR / "inference-perf" / "bin" / "inference-perf"), "--config_file",
            str(config_path)]


def inference_perf_ttft(out_dir):
    """inference-perf's own TTFT p50/p99 (ms) from its summary report."""
    for path in Path(out_dir).rglob("*summary*.json"):
        data = json.loads(path.read_text())
        ttft = (data.get("successes", {}).get("latency", {}).get("time_to_first_token"))
        if isinstance(ttft, dict):
            scale = 1000.0 if (ttft.get("median") or 1) < 10 else 1.0
            return {"p50": ttft.get("median", 0) * scale, "p99": ttft.get("p99", 0) * scale}
    return None


def run_peer(peer, mode, rate, work, binary, records):
    """One peer in one cell: its command, exit code, server figures and own TTFT."""
    cell = work / f"{peer}-{mode}-{rate}"
    cell.mkdir(parents=True, exist_ok=True)
    slice_path = cell / "slice.jsonl"
    offsets = write_slice(run_trace(), slice_path, records, rate, mode,
                          style={"guidellm": "s", "sglang": "sglang"}.get(peer, "ms"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(hub_home()))
    (cell / "out").mkdir(exist_ok=True)
    with procs.Sim(binary, 0, cell / "chunks.jsonl", log_path=cell / "sim.log") as sim:
        base = f"http://127.0.0.1:{sim.port}"
        argv = {"aiperf": lambda: aiperf_argv(base, slice_path, cell / "out"),
                "guidellm": lambda: guidellm_argv(base, slice_path, cell / "out"),
                "inference-perf": lambda: inference_perf_argv(base, slice_path, cell / "out",
                                                              records, rate),
                "sglang": lambda: sglang_argv(base, slice_path, cell / "out", records)}[peer]()
        m = procs.run_measured(procs.pinned(1, argv), cell / "stdout", cell / "stderr", env=env,
                               timeout_s=600)
    result = {"peer": peer, "mode": mode, "rate": rate, "code": m.code, "cpu_s": m.cpu_s,
              "wall_s": m.wall_s, "max_rss_mib": m.max_rss_mib,
              "command": " ".join(argv).replace(base, "URL")}
    result.update(server_figures(cell / "chunks.jsonl", offsets))
    own = {"aiperf": aiperf_ttft, "guidellm": guidellm_ttft, "sglang": sglang_ttft,
           "inference-perf": inference_perf_ttft}[peer]
    result["own_ttft_ms"] = own(cell / "out")
    return result


def run_trace():
    from run import TRACE
    return TRACE


def tracebench_cell(binary, mode, rate, work, records):
    """tracebench in the same cell, judged by the same server-side figures."""
    from run import replay_argv
    cell = work / f"tracebench-{mode}-{rate}"
    cell.mkdir(parents=True, exist_ok=True)
    offsets = write_slice(run_trace(), cell / "slice.jsonl", records, rate, mode)
    with procs.Sim(binary, 0, cell / "chunks.jsonl", log_path=cell / "sim.log") as sim:
        argv = replay_argv(sim.base_url, rate, mode, cell / "run", records=records)
        m = procs.run_measured(procs.pinned(1, argv), cell / "stdout", cell / "stderr")
    result = {"peer": "tracebench", "mode": mode, "rate": rate, "code": m.code,
              "cpu_s": m.cpu_s, "wall_s": m.wall_s, "max_rss_mib": m.max_rss_mib}
    result.update(server_figures(cell / "chunks.jsonl", offsets))
    requests = truth.read_requests(cell / "run" / "requests.jsonl")
    ttft = [(r["first_token_s"] - r["sent_s"]) * 1e3 for r in requests
            if r.get("first_token_s") is not None]
    result["own_ttft_ms"] = truth.summary(ttft)
    return result


def row(r):
    fmt = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    own = r.get("own_ttft_ms") or {}
    pct = None
    if r.get("arrival_rate") and r.get("offered_rate"):
        pct = 100 * r["arrival_rate"] / r["offered_rate"]
    return (f"| {r['peer']} | {r['mode']} | {r['rate']:,} | {fmt(pct, 1)} | "
            f"{fmt(r['arrival_lag_ms']['p50'])} / {fmt(r['arrival_lag_ms']['p99'])} | "
            f"{fmt(own.get('p50'))} / {fmt(own.get('p99'))} | "
            f"{fmt(r['ttft_truth_ms']['p50'])} / {fmt(r['ttft_truth_ms']['p99'])} | "
            f"{fmt(r['cpu_s'], 1)} | {r['with_tokens']}/{r['arrivals']} | {r['code']} |")


HEADER = ("| client | prompts | offered /s | arrived % of offered | arrival lag p50 / p99 ms |"
          " its TTFT p50 / p99 ms | truth TTFT p50 / p99 ms | client CPU s | streamed / "
          "arrived | exit |\n|---|---|---|---|---|---|---|---|---|---|")


def median_merge(runs):
    """One result from repeated runs of a cell: the median of every number (nested dicts
    too), the other fields of the first run, `runs` = how many."""
    def merge(values):
        first = values[0]
        if isinstance(first, dict):
            return {k: merge([v.get(k) for v in values if isinstance(v, dict)])
                    for k in first}
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(set(map(str, values))) == 1 or len(numbers) != len(values):
            return first
        if all(isinstance(v, int) for v in numbers):
            return statistics.median_low(numbers)
        return statistics.median(numbers)
    merged = merge(runs)
    merged["runs"] = len(runs)
    return merged


def table(paths):
    """The side-by-side table and the ratios to tracebench from saved peers.json files;
    a cell measured in several files is their median (`median_merge`)."""
    cells = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["results"]:
            cells.setdefault((r["peer"], r["mode"], r["rate"]), []).append(r)
    results = [median_merge(runs) for runs in cells.values()]
    order = {"tracebench": 0, "aiperf": 1, "guidellm": 2, "inference-perf": 3, "sglang": 4}
    results.sort(key=lambda r: (r["mode"] != "small", r["rate"], order.get(r["peer"], 9)))
    ours = {(r["mode"], r["rate"]): r for r in results if r["peer"] == "tracebench"}
    ratios = ["| client | prompts | offered /s | arrival lag p99 ÷ ours | client CPU ÷ ours | "
              "its TTFT p99 − truth p99, ms (ours) |", "|---|---|---|---|---|---|"]
    for r in results:
        base = ours.get((r["mode"], r["rate"]))
        if r["peer"] == "tracebench" or base is None:
            continue
        lag = r["arrival_lag_ms"]["p99"] / max(base["arrival_lag_ms"]["p99"], 1e-9)
        own = (r.get("own_ttft_ms") or {}).get("p99")
        mine = (base.get("own_ttft_ms") or {}).get("p99")
        gap = "–" if own is None else f"{own - r['ttft_truth_ms']['p99']:.1f}"
        our_gap = "–" if mine is None else f"{mine - base['ttft_truth_ms']['p99']:.1f}"
        ratios.append(f"| {r['peer']} | {r['mode']} | {r['rate']:,} | {lag:,.0f}× | "
                      f"{r['cpu_s'] / base['cpu_s']:.0f}× | {gap} ({our_gap}) |")
    return "\n".join([HEADER] + [row(r) for r in results]) + "\n\n" + "\n".join(ratios)


def main(args):
    from run import binary, save
    work = Path(args.work) / "peers"
    work.mkdir(parents=True, exist_ok=True)
    cells = [("small", int(r)) for r in args.rates.split(",") if r] + \
        [("full", int(r)) for r in args.full_rates.split(",") if r]
    peers = [p for p in ["tracebench", "aiperf", "guidellm", "inference-perf", "sglang"]
             if not args.only or p in args.only.split(",")]
    status = install([p for p in peers if p != "tracebench"])
    results, rows = [], [HEADER]
    for mode, rate in cells:
        for peer in peers:
            if peer != "tracebench" and status.get(peer):
                rows.append(f"| {peer} | {mode} | {rate:,} | not run: {status[peer]} |")
                continue
            try:
                r = (tracebench_cell(binary(), mode, rate, work, args.records)
                     if peer == "tracebench"
                     else run_peer(peer, mode, rate, work, binary(), args.records))
            except Exception as err:  # a peer that cannot run is a row, not a crash
                rows.append(f"| {peer} | {mode} | {rate:,} | failed: {err} |")
                continue
            results.append(r)
            rows.append(row(r))
            print(rows[-1], flush=True)
    save(Path(args.work), "peers", results)
    print("\n".join(rows))


if __name__ == "__main__":
    sys.exit("run through scripts/bench/run.py peers")
