#!/usr/bin/env python3
"""tracebench's macro benchmark harness (issue 9): accuracy under load against the
simulator, memory, prompt preparation, parse throughput and, on request, the peers.

Python standard library only. Every number comes with the command that produced it in
the run's results.json; the tables it prints are the ones in docs/PERFORMANCE.md.

  scripts/bench/run.py accuracy [--rates 50,200,...] [--modes small,full] [--repeats 3]
  scripts/bench/run.py table                  (the accuracy tables of WORK/accuracy.json)
  scripts/bench/run.py memory | prompts | parse | machine
  scripts/bench/run.py peers [--rates 50,200,1000] [--only ...] (see peers.py)
  scripts/bench/run.py peers-table WORK/peers.json [...]

Results and raw files go under --work (default /tmp/tracebench-bench). The method, the
machine and the results are in docs/PERFORMANCE.md.

The release binary is taken from $TRACEBENCH_BIN, else
$CARGO_TARGET_DIR/release/tracebench, else target/release/tracebench; the simulator's
from $TRACEBENCH_SIM_BIN, else the same (to compare one client against two simulators).
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs  # noqa: E402
import truth  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TRACE = Path(os.environ.get("TRACEBENCH_TRACES", REPO.parent / "shared" / "traces")) \
    / "mooncake_conversation_trace.jsonl"

# The slice: the first 2,000 records, bursts kept, outputs capped at 32 tokens.
RECORDS = 2000
OUTPUT_TOKENS = 32
SMALL_INPUT_TOKENS = 512
RATES = [50, 200, 500, 1000, 2000, 5000]

# The simulator on one core, the client on the other.
SIM_CORE, CLIENT_CORE = 0, 1


def binary():
    """Path of the tracebench release binary."""
    if os.environ.get("TRACEBENCH_BIN"):
        return os.environ["TRACEBENCH_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", REPO / "target")
    path = Path(target) / "release" / "tracebench"
    if not path.is_file():
        sys.exit(f"no release binary at {path}: run `cargo build --release` or set TRACEBENCH_BIN")
    return str(path)


def sim_binary():
    """Path of the binary whose `sim` is the ground truth: $TRACEBENCH_SIM_BIN, else ours."""
    return os.environ.get("TRACEBENCH_SIM_BIN") or binary()


def replay_argv(base_url, rate, mode, out_dir, records=RECORDS, trace=TRACE):
    """The tracebench replay command of one accuracy cell."""
    argv = [binary(), "replay", "--trace", str(trace), "--limit", str(records),
            "--target-rate", str(rate), "--max-output-tokens", str(OUTPUT_TOKENS),
            "--base-url", base_url, "--model", "tracebench-sim", "--no-calibrate",
            "--no-progress", "--lookahead", str(records), "--output", str(out_dir), "--force"]
    if mode == "small":
        argv += ["--max-input-tokens", str(SMALL_INPUT_TOKENS)]
    return argv


def accuracy_cell(work, mode, rate, rep, extra=()):
    """One replay against a fresh simulator; the joined accuracy figures plus CPU."""
    cell = work / f"{mode}-{rate}-{rep}"
    cell.mkdir(parents=True, exist_ok=True)
    chunk_log = cell / "chunks.jsonl"
    load = procs.load_average()
    with procs.Sim(sim_binary(), SIM_CORE, chunk_log, log_path=cell / "sim.log") as sim:
        argv = replay_argv(sim.base_url, rate, mode, cell / "run") + list(extra)
        argv = procs.pinned(CLIENT_CORE, argv)
        measured = procs.run_measured(argv, cell / "replay.out", cell / "replay.err")
    if measured.code != 0:
        raise RuntimeError(f"replay exited {measured.code}: see {cell / 'replay.err'}")
    result = truth.accuracy(cell / "run" / "requests.jsonl", chunk_log)
    result.update(burst_figures(cell / "run" / "requests.jsonl"))
    result.update(cpu_figures(measured, result, rate))
    result["sim_cpu_s"] = sim.cpu_s
    # First touches of memory: slow in a VM whose host backs pages lazily (see Method).
    result["client_minor_faults"] = measured.minor_faults
    result["client_max_rss_mib"] = measured.max_rss_mib
    result["sim_minor_faults"] = sim.minor_faults
    result["sim_max_rss_mib"] = sim.max_rss_mib
    result["load_average_before"] = load
    result["sched"] = {"nice": procs.NICE, "policy": procs.SCHED or "other"}
    result["command"] = " ".join(replay_argv("URL", rate, mode, "OUT") + list(extra))
    return result


def burst_figures(requests_path):
    """How bursts leave: requests sharing one scheduled instant, the first one's lag and the
    gap between consecutive sends of a burst (ms, p50 and p99). The send lag's tail in a
    bursty trace is the first lag plus the burst's position times the gap."""
    bursts = {}
    for r in truth.read_requests(requests_path):
        if r.get("sent_s") is not None:
            bursts.setdefault(r["scheduled_s"], []).append(r["sent_s"])
    first, gaps = [], []
    for scheduled, sends in bursts.items():
        sends.sort()
        first.append((sends[0] - scheduled) * 1e3)
        gaps += [(b - a) * 1e3 for a, b in zip(sends, sends[1:])]
    figure = lambda values: {"p50": truth.percentile(sorted(values), 50),  # noqa: E731
                             "p99": truth.percentile(sorted(values), 99)} if values else None
    return {"burst_first_lag_ms": figure(first), "burst_gap_ms": figure(gaps),
            "bursts": len(bursts)}


def cpu_figures(measured, result, rate):
    """Client CPU: whole process, and inside the sending window per 1,000 arrivals/s."""
    figures = {"client_cpu_s": measured.cpu_s, "client_wall_s": measured.wall_s,
               "client_max_rss_mib": measured.max_rss_mib}
    offset, window = result["clock_offset_unix_s"], result["window_s"]
    if offset and window and window[1] > window[0]:
        cpu = measured.cpu_between(offset + window[0], offset + window[1])
        cores = cpu / (window[1] - window[0])
        figures["window_cpu_s"] = cpu
        figures["window_minor_faults"] = measured.faults_between(offset + window[0],
                                                                 offset + window[1])
        figures["window_cores"] = cores
        figures["cores_per_1000_rps"] = cores / (rate / 1000.0)
    return figures


def median_of(results, path):
    """Median over repeats of a nested figure (path like 'ttft_ms.p99'); None if missing."""
    values = []
    for r in results:
        value = r
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


ACCURACY_HEADER = (
    "| prompts | offered /s | sent % of offered | send lag p50 / p99 ms | TTFT p50 / p99 ms "
    "(truth) | TTFT error p50 / p99 ms | ITL p50 / p99 ms (truth) | \\|ITL error\\| p99 ms | "
    "client cores (per 1,000/s) | ok |\n|---|---|---|---|---|---|---|---|---|---|")


def accuracy_row(mode, rate, results):
    """One markdown row: medians over the repeats."""
    m = lambda path: median_of(results, path)  # noqa: E731
    sent_pct = None
    if m("sent_rate") and m("offered_rate"):
        sent_pct = 100.0 * m("sent_rate") / m("offered_rate")
    return (f"| {mode} | {rate:,} | {fmt(sent_pct, 1)} | {fmt(m('send_lag_ms.p50'), 3)} / "
            f"{fmt(m('send_lag_ms.p99'), 3)} | {fmt(m('ttft_ms.p50'))} / {fmt(m('ttft_ms.p99'))}"
            f" ({fmt(m('ttft_truth_ms.p50'))} / {fmt(m('ttft_truth_ms.p99'))}) | "
            f"{fmt(m('ttft_err_ms.p50'), 3)} / {fmt(m('ttft_err_ms.p99'), 3)} | "
            f"{fmt(m('itl_ms.p50'))} / {fmt(m('itl_ms.p99'))} ({fmt(m('itl_truth_ms.p50'))} / "
            f"{fmt(m('itl_truth_ms.p99'))}) | {fmt(m('itl_abs_err_ms.p99'), 3)} | "
            f"{fmt(m('window_cores'), 3)} ({fmt(m('cores_per_1000_rps'), 3)}) | "
            f"{int(m('ok') or 0)}/{int(m('requests') or 0)} |")


def cmd_accuracy(args):
    work = Path(args.work)
    rows, everything = [ACCURACY_HEADER], {}
    for mode in args.modes.split(","):
        for rate in [int(r) for r in args.rates.split(",")]:
            extra = shlex.split(args.replay_args)
            results = [accuracy_cell(work, mode, rate, rep, extra) for rep in range(args.repeats)]
            everything[f"{mode}-{rate}"] = results
            rows.append(accuracy_row(mode, rate, results))
            print(rows[-1], flush=True)
    save(work, "accuracy", everything)
    print("\n".join(rows))


def cmd_table(args):
    """Prints the accuracy table of a saved WORK/accuracy.json again."""
    saved = json.loads((Path(args.work) / "accuracy.json").read_text())
    print(f"measured {saved['machine']['date_utc']} UTC on {saved['machine']['cpu']}")
    rows = [ACCURACY_HEADER]
    for key, results in saved["results"].items():
        mode, rate = key.rsplit("-", 1)
        rows.append(accuracy_row(mode, int(rate), results))
    print("\n".join(rows))
    detail = ["| prompts | offered /s | upload p50 / p99 ms | sim body read p50 / p99 ms | "
              "TTFT error from the head p50 / p99 ms | first-token delivery p50 / p99 ms "
              "| first of a burst p50 / gap in a burst p50 ms | sim CPU s | load before |",
              "|---|---|---|---|---|---|---|---|---|"]
    for key, results in saved["results"].items():
        mode, rate = key.rsplit("-", 1)
        m = lambda path: median_of(results, path)  # noqa: E731
        detail.append(f"| {mode} | {int(rate):,} | {fmt(m('upload_ms.p50'), 3)} / "
                      f"{fmt(m('upload_ms.p99'), 3)} | {fmt(m('body_read_ms.p50'), 3)} / "
                      f"{fmt(m('body_read_ms.p99'), 3)} | {fmt(m('ttft_err_head_ms.p50'), 3)} / "
                      f"{fmt(m('ttft_err_head_ms.p99'), 3)} | {fmt(m('delivery_ms.p50'), 3)} / "
                      f"{fmt(m('delivery_ms.p99'), 3)} | {fmt(m('burst_first_lag_ms.p50'), 3)} / "
                      f"{fmt(m('burst_gap_ms.p50'), 3)} | {fmt(m('sim_cpu_s'))} | "
                      f"{fmt(m('load_average_before'), 1)} |")
    print("\n" + "\n".join(detail))
    arrival = ["| prompts | offered /s | sim queue (arrived → head) p50 / p99 ms | "
               "upload to the socket p50 / p99 ms | TTFT error from the arrival p50 / p99 ms "
               "| first-token delivery p50 / p99 ms | client page faults in the run "
               "| peak RSS client / sim MiB |",
               "|---|---|---|---|---|---|---|---|"]
    for key, results in saved["results"].items():
        mode, rate = key.rsplit("-", 1)
        m = lambda path: median_of(results, path)  # noqa: E731
        if m("ttft_err_arrived_ms.p50") is None:
            continue
        arrival.append(f"| {mode} | {int(rate):,} | {fmt(m('sim_queue_ms.p50'), 3)} / "
                       f"{fmt(m('sim_queue_ms.p99'), 3)} | {fmt(m('upload_socket_ms.p50'), 3)} / "
                       f"{fmt(m('upload_socket_ms.p99'), 3)} | "
                       f"{fmt(m('ttft_err_arrived_ms.p50'), 3)} / "
                       f"{fmt(m('ttft_err_arrived_ms.p99'), 3)} | "
                       f"{fmt(m('delivery_ms.p50'), 3)} / {fmt(m('delivery_ms.p99'), 3)} | "
                       f"{fmt(m('window_minor_faults'), 0)} | "
                       f"{fmt(m('client_max_rss_mib'), 0)} / {fmt(m('sim_max_rss_mib'), 0)} |")
    if len(arrival) > 2:
        print("\n" + "\n".join(arrival))


def cmd_memory(args):
    """Peak RSS replaying the whole conversation trace, time-compressed, short outputs."""
    work = Path(args.work) / "memory"
    work.mkdir(parents=True, exist_ok=True)
    with procs.Sim(sim_binary(), SIM_CORE, work / "chunks.jsonl", log_path=work / "sim.log") as sim:
        argv = [binary(), "replay", "--trace", str(TRACE), "--target-rate", str(args.rate),
                "--max-output-tokens", str(OUTPUT_TOKENS), "--base-url", sim.base_url,
                "--model", "tracebench-sim", "--no-calibrate", "--no-progress",
                "--output", str(work / "run"), "--force"]
        m = procs.run_measured(procs.pinned(CLIENT_CORE, argv), work / "out", work / "err")
    ok = sum(1 for r in truth.read_requests(work / "run" / "requests.jsonl")
             if r["outcome"] == "ok")
    result = {"code": m.code, "wall_s": m.wall_s, "cpu_s": m.cpu_s,
              "max_rss_mib": m.max_rss_mib, "ok": ok, "rate": args.rate,
              "command": " ".join(argv).replace(sim.base_url, "URL")}
    save(Path(args.work), "memory", result)
    print(json.dumps(result, indent=2))


def cmd_prompts(args):
    """`tracebench prompts`: blocks on the whole trace, random on 1,000 records."""
    work = Path(args.work) / "prompts"
    work.mkdir(parents=True, exist_ok=True)
    cases = {"blocks-all": ["--prompt", "blocks"],
             "random-1000": ["--prompt", "random", "--limit", "1000"]}
    results = {}
    for name, extra in cases.items():
        argv = [binary(), "prompts", "--trace", str(TRACE), "--output",
                str(work / f"{name}.jsonl")] + extra
        m = procs.run_measured(argv, work / f"{name}.out", work / f"{name}.err")
        results[name] = {"code": m.code, "wall_s": m.wall_s, "cpu_s": m.cpu_s,
                         "max_rss_mib": m.max_rss_mib, "command": " ".join(argv)}
        (work / f"{name}.jsonl").unlink(missing_ok=True)
        print(name, json.dumps(results[name]), flush=True)
    save(Path(args.work), "prompts", results)


def cmd_parse(args):
    """The criterion micro-benchmarks of the SSE reader and the trace reader, built with
    `cargo bench --no-run`, then run pinned to core 1 under the harness's scheduling (so
    that other work on the machine does not count as parse time)."""
    results = {}
    for bench in ["sse_parse", "trace_parse"]:
        build = subprocess.run(["cargo", "bench", "--bench", bench, "--no-run"], cwd=REPO,
                               capture_output=True, text=True)
        exe = next((line.split("(", 1)[1].rstrip(")") for line in build.stderr.splitlines()
                    if "Executable" in line and "(" in line), None)
        if exe is None:
            sys.exit(f"cargo bench --bench {bench} --no-run: no executable\n{build.stderr}")
        argv = procs.pinned(CLIENT_CORE, [exe, "--bench"])
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        results[bench] = {"code": proc.returncode, "stdout": proc.stdout[-8000:],
                          "command": f"cargo bench --bench {bench} --no-run; " + " ".join(argv)}
        print(proc.stdout[-4000:], flush=True)
    save(Path(args.work), "parse", results)


def machine():
    """The machine the numbers were measured on."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                  if line.startswith("Model name")), "unknown")
    # A VM's model name can be as vague as "AMD EPYC": family and model tell hosts apart.
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    family = fields.get("CPU family", "?").strip()
    model_number = fields.get("Model", "?").strip()
    version = subprocess.run([binary(), "--version"], capture_output=True, text=True).stdout
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "cpu": model, "cpu_family_model": f"{family}/{model_number}",
            "cores": os.cpu_count(), "kernel": platform.release(),
            "tracebench": version.strip(), "commit": commit,
            "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30}


def save(work, name, data):
    """Writes WORK/NAME.json with the machine description next to the data."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "results": data}, indent=1))
    print(f"saved {path}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/tracebench-bench",
                        help="where runs, logs and NAME.json results go")
    sub = parser.add_subparsers(dest="cmd", required=True)
    acc = sub.add_parser("accuracy", help="TTFT/ITL vs the simulator's truth, send lag, CPU")
    acc.add_argument("--rates", default=",".join(str(r) for r in RATES))
    acc.add_argument("--modes", default="small,full")
    acc.add_argument("--repeats", type=int, default=3)
    acc.add_argument("--replay-args", default="",
                     help="more tracebench replay arguments, e.g. '--http-client reqwest'")
    mem = sub.add_parser("memory", help="peak RSS replaying the whole conversation trace")
    mem.add_argument("--rate", type=float, default=500)
    sub.add_parser("prompts", help="prompt preparation time and peak RSS")
    sub.add_parser("parse", help="SSE and trace parse micro-benchmarks (cargo bench)")
    sub.add_parser("machine", help="print the machine description")
    sub.add_parser("table", help="print the tables of a saved WORK/accuracy.json")
    peers = sub.add_parser("peers", help="the peers side by side (installs them; slow)")
    peers.add_argument("--rates", default="50,200,1000", help="offered rates, small prompts")
    peers.add_argument("--full-rates", default="50",
                       help="offered rates with full prompts ('' for none)")
    peers.add_argument("--only", default="",
                       help="comma list of tracebench,aiperf,guidellm,inference-perf,sglang")
    peers.add_argument("--records", type=int, default=RECORDS)
    ptable = sub.add_parser("peers-table", help="side-by-side and ratio tables of peers.json")
    ptable.add_argument("files", nargs="+", help="peers.json files of `run.py peers`")
    args = parser.parse_args()
    if args.cmd == "peers-table":
        import peers as peer_bench
        print(peer_bench.table(args.files))
        return
    if args.cmd == "peers":
        import peers as peer_bench
        peer_bench.main(args)
        return
    if args.cmd == "machine":
        print(json.dumps(machine(), indent=2))
        return
    {"accuracy": cmd_accuracy, "table": cmd_table, "memory": cmd_memory, "prompts": cmd_prompts,
     "parse": cmd_parse}[args.cmd](args)


if __name__ == "__main__":
    main()
