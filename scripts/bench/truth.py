"""Join a replay's requests.jsonl with the simulator's chunk log and measure the error.

The simulator (`tracebench sim --chunk-log FILE`) writes one JSON line per moment of a
request: `arrived` (the kernel's receive stamp of its first bytes, before the
simulator's event loop read them), `head` (its head read, before the body), `received`
(body read, handler entered), `role`, `token` (each content chunk), `usage`,
`done`, each with `unix_ns` and the client's `x-request-id` header, which tracebench sets
to `tracebench-INDEX` (INDEX = the plan index in requests.jsonl). That header is the join
key; no clock needs to be shared for TTFT and ITL:

  TTFT truth  = sim first `token` write − sim `received`          (server clock only)
  TTFT error  = client TTFT (first_token_s − sent_s) − TTFT truth (the upload of the request
                plus the delivery of the first chunk plus the client's own delays)
  TTFT error from the head = client TTFT − (sim first `token` write − sim `head`): the same
                without the time the simulator took to receive and read the body, which a
                real server's TTFT includes too (a 55 KB prompt on a busy core); what is
                left is the client's own delays plus the head's and first chunk's transit
  TTFT error from the arrival = client TTFT − (sim first `token` write − sim `arrived`):
                the same, counting also the time the request's bytes waited in the
                simulator's socket for its busy event loop (its queue) as the server's, as
                any real server's TTFT does; what is left is the client's own delays and
                the loopback transit of the request and the first chunk
  ITL truth   = gap between consecutive sim `token` writes
  ITL error   = client gap between the same two chunks − ITL truth

The client's times are seconds from its run start, the simulator's are Unix ns. To put
both on one clock (for the arrival rate at the server and for the CPU window) the offset
is estimated as min over requests of (sim arrived − client sent; sim head, then sim
received where a log has no such event): the smallest one-way delay, which on loopback is tens of microseconds.

Percentiles: linear interpolation between closest ranks (numpy's default), the same
method as tracebench's own reports (src/metrics/distribution.rs).
"""

import json
import math


def percentile(sorted_values, p):
    """The p-th percentile (0-100) of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = (len(sorted_values) - 1) * p / 100.0
    lower, upper = math.floor(rank), math.ceil(rank)
    weight = rank - lower
    return sorted_values[lower] * (1 - weight) + sorted_values[upper] * weight


def summary(values):
    """p50, p99, max and count of a list of numbers (None entries are dropped)."""
    values = sorted(v for v in values if v is not None)
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": values[-1] if values else None,
    }


def read_requests(path):
    """requests.jsonl as a list of dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_chunk_log(path):
    """Per client request id (else the simulator's response id): (received_ns, [token
    write ns in order], head_ns, arrived_ns); the last two None for logs from before the
    `head` and `arrived` events."""
    by_id = {}
    with open(path) as f:
        for line in f:
            event = json.loads(line)
            # Clients without an `x-request-id` (most peers) are keyed by the simulator's id.
            key = event.get("client_request_id") or event.get("request_id")
            entry = by_id.setdefault(key, [None, [], None, None])
            if event["event"] == "received":
                entry[0] = event["unix_ns"]
            elif event["event"] == "token":
                entry[1].append((event["token_index"], event["unix_ns"]))
            elif event["event"] == "head":
                entry[2] = event["unix_ns"]
            elif event["event"] == "arrived":
                entry[3] = event["unix_ns"]
    return {k: (v[0], [ns for _, ns in sorted(v[1])], v[2], v[3]) for k, v in by_id.items()}


def arrival_ns(entry):
    """The earliest logged arrival of a request: `arrived`, else `head`, else `received`."""
    return next((ns for ns in (entry[3], entry[2], entry[0]) if ns is not None), None)


def clock_offset_s(requests, sim):
    """Estimated Unix seconds of the client's run start (see the module doc)."""
    deltas = []
    for r in requests:
        entry = sim.get(f"tracebench-{r['index']}")
        if entry and arrival_ns(entry) is not None and r.get("sent_s") is not None:
            deltas.append(arrival_ns(entry) / 1e9 - r["sent_s"])
    return min(deltas) if deltas else None


def rate(times_s):
    """Mean rate of a set of instants: (n − 1) / span; None under two instants."""
    times_s = sorted(t for t in times_s if t is not None)
    if len(times_s) < 2 or times_s[-1] == times_s[0]:
        return None
    return (len(times_s) - 1) / (times_s[-1] - times_s[0])


def join(requests, sim, offset=None):
    """Per-request measured and true TTFT/ITL (ms) and their differences; with a clock
    offset also the upload (client send → sim received) and the delivery of the first
    token (sim write → client read), ms."""
    out = {"ttft": [], "ttft_truth": [], "ttft_err": [], "ttft_err_head": [], "body_read": [],
           "ttft_err_arrived": [], "sim_queue": [], "upload_socket": [],
           "itl": [], "itl_truth": [], "itl_err": [], "upload": [], "delivery": [],
           "unmatched": 0, "token_count_mismatch": 0}
    for r in requests:
        if r["outcome"] != "ok" or r.get("first_token_s") is None:
            continue
        received, tokens, head, arrived = sim.get(f"tracebench-{r['index']}",
                                                  (None, [], None, None))
        if received is None or not tokens:
            out["unmatched"] += 1
            continue
        measured = (r["first_token_s"] - r["sent_s"]) * 1e3
        truth = (tokens[0] - received) / 1e6
        out["ttft"].append(measured)
        out["ttft_truth"].append(truth)
        out["ttft_err"].append(measured - truth)
        if head is not None:
            out["ttft_err_head"].append(measured - (tokens[0] - head) / 1e6)
            out["body_read"].append((received - head) / 1e6)
        if arrived is not None:
            out["ttft_err_arrived"].append(measured - (tokens[0] - arrived) / 1e6)
            if head is not None:
                out["sim_queue"].append((head - arrived) / 1e6)
            if offset is not None:
                out["upload_socket"].append((arrived / 1e9 - offset - r["sent_s"]) * 1e3)
        if offset is not None:
            out["upload"].append((received / 1e9 - offset - r["sent_s"]) * 1e3)
            out["delivery"].append((r["first_token_s"] - (tokens[0] / 1e9 - offset)) * 1e3)
        chunks = r["chunk_s"]
        if len(chunks) != len(tokens):
            out["token_count_mismatch"] += 1
        for k in range(1, min(len(chunks), len(tokens))):
            gap = (chunks[k] - chunks[k - 1]) * 1e3
            gap_truth = (tokens[k] - tokens[k - 1]) / 1e6
            out["itl"].append(gap)
            out["itl_truth"].append(gap_truth)
            out["itl_err"].append(gap - gap_truth)
    return out


def accuracy(requests_path, chunk_log_path):
    """Every accuracy figure of one run, as a dict of plain numbers."""
    requests = read_requests(requests_path)
    sim = read_chunk_log(chunk_log_path)
    offset = clock_offset_s(requests, sim)
    joined = join(requests, sim, offset)
    received = [sim[k][0] / 1e9 - offset for k in sim if sim[k][0] is not None] if offset else []
    sent = [r.get("sent_s") for r in requests]
    lags = [(r["sent_s"] - r["scheduled_s"]) * 1e3 for r in requests if r.get("sent_s") is not None]
    return {
        "requests": len(requests),
        "ok": sum(1 for r in requests if r["outcome"] == "ok"),
        "offered_rate": rate([r["scheduled_s"] for r in requests]),
        "sent_rate": rate(sent),
        "received_rate": rate(received),
        "send_lag_ms": summary(lags),
        "ttft_ms": summary(joined["ttft"]),
        "ttft_truth_ms": summary(joined["ttft_truth"]),
        "ttft_err_ms": summary(joined["ttft_err"]),
        "ttft_abs_err_ms": summary([abs(e) for e in joined["ttft_err"]]),
        "ttft_err_head_ms": summary(joined["ttft_err_head"]),
        "body_read_ms": summary(joined["body_read"]),
        "ttft_err_arrived_ms": summary(joined["ttft_err_arrived"]),
        "sim_queue_ms": summary(joined["sim_queue"]),
        "upload_socket_ms": summary(joined["upload_socket"]),
        "itl_ms": summary(joined["itl"]),
        "itl_truth_ms": summary(joined["itl_truth"]),
        "itl_err_ms": summary(joined["itl_err"]),
        "itl_abs_err_ms": summary([abs(e) for e in joined["itl_err"]]),
        "upload_ms": summary(joined["upload"]),
        "delivery_ms": summary(joined["delivery"]),
        "unmatched": joined["unmatched"],
        "token_count_mismatch": joined["token_count_mismatch"],
        "window_s": window(requests),
        "clock_offset_unix_s": offset,
    }


def window(requests):
    """(first sent, last end) in client seconds: the part of the run that sends."""
    sent = [r["sent_s"] for r in requests if r.get("sent_s") is not None]
    ends = [r["end_s"] for r in requests if r.get("end_s") is not None]
    if not sent or not ends:
        return None
    return [min(sent), max(ends)]
