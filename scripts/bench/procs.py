"""Processes of the harness: the simulator, a measured client, CPU sampling from /proc.

Every process is started by the harness and stopped by its own pid; nothing is killed by
name. CPU is read from /proc/PID/stat (utime + stime, clock ticks) by a sampling thread,
so the CPU spent inside the sending window can be told from start-up and prompt building.
"""

import os
import signal
import socket
import subprocess
from pathlib import Path
import threading
import time

TICKS_PER_S = os.sysconf("SC_CLK_TCK")

# How often the CPU sampler reads /proc: fine enough for windows of a second or more.
SAMPLE_PERIOD_S = 0.05


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout_s=30.0):
    """Blocks until something accepts on 127.0.0.1:port; raises if proc exits first or
    after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


# Highest CFS weight for the measured processes: other work on this shared machine (builds)
# then gets almost none of the two pinned cores while a benchmark runs. With the kernel's
# autogroup scheduling a process's nice only counts inside its session's group, so each
# measured process starts its own session and its group gets the same nice (see
# `start`). Set TRACEBENCH_BENCH_NICE=0 to measure without it.
NICE = os.environ.get("TRACEBENCH_BENCH_NICE", "-20")


# `fifo` (the default) runs the measured processes under SCHED_FIFO priority 1 (chrt): they
# then preempt any ordinary process at once, as if the two cores were theirs; the kernel
# still keeps 5 % of each core for others. TRACEBENCH_BENCH_SCHED=other turns it off.
SCHED = os.environ.get("TRACEBENCH_BENCH_SCHED", "fifo")


def pinned(core, argv):
    """argv run on one core with taskset at nice NICE (nice, chrt and taskset all exec, so
    the pid stays the program's)."""
    policy = ["chrt", "-f", "1"] if SCHED == "fifo" else []
    return ["nice", "-n", NICE] + policy + ["taskset", "-c", str(core)] + list(argv)


def start(argv, **kwargs):
    """Popen in a new session whose autogroup gets nice NICE (when the kernel has one)."""
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    try:
        with open(f"/proc/{proc.pid}/autogroup", "w") as f:
            f.write(NICE)
    except OSError:
        pass
    return proc


def load_average():
    """The 1-minute load average before a run: other work competing for the cores."""
    return os.getloadavg()[0]


# Without a tokenizer the simulator estimates prompt lengths from their bytes, which puts
# some of the longest Mooncake prompts (87 k tokens) over its default 131,072: accept all.
SIM_MAX_MODEL_LEN = 4_000_000


class Sim:
    """`tracebench sim` in fixed mode, pinned, with a chunk log; a context manager."""

    def __init__(self, binary, core, chunk_log, ttft_ms=50, itl_ms=10, log_path=None):
        # The simulator appends to its chunk log: a cell run again starts from an empty one.
        Path(chunk_log).unlink(missing_ok=True)
        self.port = free_port()
        self.argv = pinned(core, [binary, "sim", "--port", str(self.port), "--timing", "fixed",
                                  "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms),
                                  "--no-tokenize", "--chunk-log", str(chunk_log),
                                  "--max-model-len", str(SIM_MAX_MODEL_LEN)])
        self.log_path = log_path or os.devnull
        self.proc = None

    def __enter__(self):
        self.log = open(self.log_path, "w")
        self.proc = start(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc)
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        _, _, rusage = _wait4(self.proc, 30)
        self.cpu_s = rusage.ru_utime + rusage.ru_stime
        self.minor_faults = rusage.ru_minflt
        self.max_rss_mib = rusage.ru_maxrss / 1024.0
        self.log.close()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"


def proc_counters(pid):
    """(utime + stime in seconds, minor page faults) of pid, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S, int(fields[7])


class Measured:
    """The result of `run_measured`: exit code, wall time, rusage and CPU samples."""

    def __init__(self, code, wall_s, rusage, samples, started_unix_s):
        self.code = code
        self.wall_s = wall_s
        self.cpu_s = rusage.ru_utime + rusage.ru_stime
        self.max_rss_mib = rusage.ru_maxrss / 1024.0
        self.minor_faults = rusage.ru_minflt
        self.samples = samples
        self.started_unix_s = started_unix_s

    def cpu_between(self, t0_unix, t1_unix):
        """CPU seconds spent between two Unix instants, interpolated from the samples."""
        return cpu_at(self.samples, t1_unix) - cpu_at(self.samples, t0_unix)

    def faults_between(self, t0_unix, t1_unix):
        """Minor page faults between two Unix instants, interpolated from the samples."""
        return value_at(self.samples, t1_unix, 2) - value_at(self.samples, t0_unix, 2)


def cpu_at(samples, t):
    """Cumulative CPU at Unix time t, linear between the two nearest samples."""
    return value_at(samples, t, 1)


def value_at(samples, t, column):
    """A cumulative counter of the samples (1: CPU s, 2: minor faults) at Unix time t,
    linear between the two nearest samples."""
    if not samples:
        return 0.0
    if t <= samples[0][0]:
        return samples[0][column]
    for a, b in zip(samples, samples[1:]):
        if a[0] <= t <= b[0]:
            ta, tb, va, vb = a[0], b[0], a[column], b[column]
            return va + (vb - va) * (t - ta) / (tb - ta) if tb > ta else vb
    return samples[-1][column]


def run_measured(argv, stdout_path, stderr_path, env=None, timeout_s=1800):
    """Runs argv to its end, sampling its CPU; returns a Measured."""
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        started = time.time()
        proc = start(argv, stdout=out, stderr=err, env=env)
        samples = []
        done = threading.Event()
        sampler = threading.Thread(target=_sample, args=(proc.pid, samples, done), daemon=True)
        sampler.start()
        _, status, rusage = _wait4(proc, timeout_s)
        done.set()
        sampler.join()
        return Measured(os.waitstatus_to_exitcode(status), time.time() - started, rusage,
                        samples, started)


def _wait4(proc, timeout_s):
    """os.wait4 on proc with a bound: SIGTERM after timeout_s, SIGKILL 30 s later."""
    deadline, signals = time.monotonic() + timeout_s, [signal.SIGTERM, signal.SIGKILL]
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, rusage
        if time.monotonic() > deadline and signals:
            proc.send_signal(signals.pop(0))
            deadline = time.monotonic() + 30
        time.sleep(0.02)


def _sample(pid, samples, done):
    while not done.is_set():
        counters = proc_counters(pid)
        if counters is not None:
            samples.append((time.time(), *counters))
        done.wait(SAMPLE_PERIOD_S)
