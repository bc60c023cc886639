"""`mwcluster bench`: load a running master from several processes and measure it.

Each client process (multiprocessing, spawn) owns one raw DEALER socket and keeps `inflight`
requests in flight: it sends until the window is full, then for every reply records the
latency (time.perf_counter_ns, into a preallocated array indexed by request id) and sends the
next request. Requests are encoded with mwcluster.wire.protocol and the value is encoded once,
so the client spends a few microseconds per request and the master is what is measured.

With `batch` K > 1 the client puts K requests in each message (a BATCH, docs/protocol.md):
it queues requests while the window has room, sends a BATCH whenever K are queued, and sends
a shorter one when the window is full or nothing is left to queue (it is about to wait). The
window still counts requests. A request's latency runs from when it was queued to when the
reply carrying its sub-reply arrived.
Every loop is bounded in count (`ops`) and in time (`max_seconds`, and `timeout_s` without
any reply).

Against a secured master (docs/security.md) `key_file` and `server_key` name the client's
secret key file and the server's public key (Z85 or its .toml file): each client process
loads them (Credentials.load, without the environment) and sets CURVE on its DEALER before
it connects; a refused handshake fails the run with the reason instead of a timeout.

All processes connect and answer a ping before a barrier releases them together; the
throughput is the number of completed requests over the time from the earliest start to the
latest finish (CLOCK_MONOTONIC, shared by the processes). Latency percentiles come from the
merged samples of every process. Each process also measures its own CPU time over its loop
(time.process_time: all its threads, ZeroMQ's I/O thread too), so a run reports what the load
cost the clients per request (`client_cpu_us`) beside what it cost the master: the master's
process CPU (`cpu_s` in its status, read before the clients start and after they finish)
per completed request (`master_cpu_us`; None when the master does not say; any other load
on the master counts too).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import random
import time
from array import array
from dataclasses import asdict, dataclass, field
from threading import BrokenBarrierError
from typing import Any

from mwcluster.core.durability import Durability
from mwcluster.errors import MwclusterError
from mwcluster.wire.protocol import DEFAULT_CLIENT_ENDPOINT, DEFAULT_MAX_BATCH, Op

# The operations a mix may name, with their wire op codes.
OPS = {"put": int(Op.PUT), "get": int(Op.GET), "stat": int(Op.STAT), "ping": int(Op.PING)}
# The durability a run may ask its puts for.
DURABILITIES = ("async", "sync", "replicated", "default")
# Request ids of the warm-up pings and of BATCH messages: far above any measured request id.
_WARMUP_ID = 1 << 62
_BATCH_ID = 1 << 61
_BATCH_OP = int(Op.BATCH)


@dataclass(frozen=True)
class BenchConfig:
    master: str = DEFAULT_CLIENT_ENDPOINT
    clients: int = 2
    inflight: int = 64
    ops: int = 200_000                 # in all, split between the clients
    batch: int = 1                     # requests per message (1: no BATCH)
    value_bytes: int = 64
    mix: dict[str, int] = field(default_factory=lambda: {"put": 100})
    durability: str = "async"
    keys: int = 10_000
    max_seconds: float = 120.0
    timeout_s: float = 10.0
    connect_timeout_s: float = 30.0
    key_file: str = ""                 # CURVE: this client's NAME.secret ("": plain)
    server_key: str = ""               # CURVE: the server's public key, Z85 or a .toml file

    def share(self, index: int) -> int:
        """How many requests client `index` sends."""
        return self.ops // self.clients + (1 if index < self.ops % self.clients else 0)

    def mix_text(self) -> str:
        return ",".join(f"{name}={weight}" for name, weight in self.mix.items())


def _plan(config: BenchConfig, index: int, count: int) -> bytes:
    """The op code of each request (all codes fit a byte): a deterministic draw with the
    mix's weights."""
    names = list(config.mix)
    codes = [OPS[n] for n in names]
    if len(codes) == 1:
        return bytes(codes) * count
    rng = random.Random(index)
    return bytes(rng.choices(codes, [config.mix[n] for n in names], k=count))


def client_main(config: BenchConfig, index: int, barrier: Any, results: Any) -> None:
    """One client process. Puts exactly one dict on `results`."""
    try:
        results.put(_client_run(config, index, barrier))
    except BaseException as exc:  # report, never hang the parent
        try:
            barrier.abort()
        except Exception:
            pass
        results.put({"index": index, "error": f"{type(exc).__name__}: {exc}"})


def _client_run(config: BenchConfig, index: int, barrier: Any) -> dict:
    import zmq

    from mwcluster.core.values import encode
    from mwcluster.security.curve import Credentials, secure_client
    from mwcluster.wire.protocol import decode_reply, encode_request

    count = config.share(index)
    client_id = os.urandom(16)
    durability = int(Durability.parse(config.durability))
    value = encode(os.urandom(config.value_bytes))
    keys = [f"/bench/k{j:07d}" for j in range(config.keys)]
    plan = _plan(config, index, count)

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.RCVTIMEO, max(1, int(config.timeout_s * 1000)))
    watch = None
    try:
        creds = Credentials.load(config.key_file, config.server_key, env={}) \
            if config.key_file or config.server_key else None
        watch = secure_client(sock, creds, config.master)
        sock.connect(config.master)
        _warm_up(sock, client_id, config, encode_request, decode_reply, zmq, watch)
        watch.close()          # nothing is watched while the load runs
        watch = None
        barrier.wait(timeout=config.connect_timeout_s)

        sent_ns = array("q", bytes(8 * count))
        latency_ns = array("q", bytes(8 * count))
        cpu0 = time.process_time()
        start = time.monotonic_ns()
        if config.batch > 1:
            sent, done, error_replies, messages, timed_out = _batched_loop(
                config, index, sock, client_id, plan, keys, value, durability, sent_ns,
                latency_ns, encode_request, decode_reply, zmq)
        else:
            sent, done, error_replies, messages, timed_out = _single_loop(
                config, index, sock, client_id, plan, keys, value, durability, sent_ns,
                latency_ns, encode_request, decode_reply, zmq)
        end = time.monotonic_ns()
        cpu = time.process_time() - cpu0
    finally:
        if watch is not None:
            watch.close()
        sock.close(linger=0)
        ctx.term()
    samples = array("q", (x for x in latency_ns if x))
    return {"index": index, "sent": sent, "done": done, "error_replies": error_replies,
            "unanswered": sent - done, "timed_out": timed_out, "start_ns": start,
            "end_ns": end, "messages": messages, "cpu_s": cpu, "latency_ns": samples.tobytes()}


def _single_loop(config, index, sock, client_id, plan, keys, value, durability, sent_ns,
                 latency_ns, encode_request, decode_reply, zmq):
    """One request per message. Returns (sent, done, error_replies, messages, timed_out)."""
    count = len(plan)
    nkeys = len(keys)
    put_code, ping_code = OPS["put"], OPS["ping"]
    send = sock.send
    recv = sock.recv
    now_ns = time.perf_counter_ns
    sent = done = error_replies = 0
    timed_out = False
    deadline_ns = now_ns() + int(config.max_seconds * 1e9)
    window = config.inflight
    stride = config.clients
    while done < count:
        while sent < count and sent - done < window:
            op = plan[sent]
            key = keys[(index + sent * stride) % nkeys]
            args = [key, value, None] if op == put_code else [] if op == ping_code else [key]
            frame = encode_request(client_id, sent + 1, op, args, durability)
            sent_ns[sent] = now_ns()
            send(frame)
            sent += 1
        try:
            frame = recv()
        except zmq.Again:
            timed_out = True
            break
        t = now_ns()
        reply = decode_reply(frame)
        i = reply.request_id - 1
        if 0 <= i < sent and latency_ns[i] == 0:
            latency_ns[i] = t - sent_ns[i]
            done += 1
            if reply.status:
                error_replies += 1
        if t > deadline_ns:
            break
    return sent, done, error_replies, sent, timed_out


def _batched_loop(config, index, sock, client_id, plan, keys, value, durability, queued_ns,
                  latency_ns, encode_request, decode_reply, zmq):
    """`config.batch` requests per BATCH message. Returns (sent, done, error_replies,
    messages, timed_out)."""
    count = len(plan)
    nkeys = len(keys)
    put_code, ping_code = OPS["put"], OPS["ping"]
    send = sock.send
    recv = sock.recv
    now_ns = time.perf_counter_ns
    sent = done = error_replies = messages = 0
    timed_out = False
    deadline_ns = now_ns() + int(config.max_seconds * 1e9)
    window = config.inflight
    stride = config.clients
    batch = config.batch
    subs: list = []
    batches: dict[int, tuple[int, int]] = {}   # BATCH request id -> (first index, count)

    def flush() -> None:
        nonlocal subs, messages
        rid = _BATCH_ID + messages
        batches[rid] = (subs[0][0] - 1, len(subs))
        send(encode_request(client_id, rid, _BATCH_OP, subs, 0))
        messages += 1
        subs = []

    while done < count:
        while sent < count and sent - done < window:
            op = plan[sent]
            key = keys[(index + sent * stride) % nkeys]
            args = [key, value, None] if op == put_code else [] if op == ping_code else [key]
            queued_ns[sent] = now_ns()
            sent += 1
            subs.append((sent, op, durability, args))
            if len(subs) == batch:
                flush()
        if subs:
            flush()        # the window is full or nothing is left: about to wait
        try:
            frame = recv()
        except zmq.Again:
            timed_out = True
            break
        t = now_ns()
        reply = decode_reply(frame)
        first, n = batches.pop(reply.request_id, (0, 0))
        if reply.status:              # the whole batch was refused
            for i in range(first, first + n):
                if latency_ns[i] == 0:
                    latency_ns[i] = t - queued_ns[i]
                    done += 1
                    error_replies += 1
        else:
            for rid, status, _txid, _result in reply.result:
                i = rid - 1
                if 0 <= i < sent and latency_ns[i] == 0:
                    latency_ns[i] = t - queued_ns[i]
                    done += 1
                    if status:
                        error_replies += 1
        if t > deadline_ns:
            break
    return sent, done, error_replies, messages, timed_out


def _warm_up(sock, client_id, config, encode_request, decode_reply, zmq, watch) -> None:
    """Ping until the master answers, so that connecting is not measured; a handshake the
    master refused (`watch`, a HandshakeWatch) raises AuthenticationFailed saying why."""
    deadline = time.monotonic() + config.connect_timeout_s
    rid = _WARMUP_ID
    while True:
        sock.send(encode_request(client_id, rid, OPS["ping"], []))
        try:
            while decode_reply(sock.recv()).request_id != rid:
                pass
            return
        except zmq.Again:
            refused = watch.failure()
            if refused is not None:
                raise refused from None
            if time.monotonic() > deadline:
                raise MwclusterError(f"no answer from the master at {config.master} within "
                                     f"{config.connect_timeout_s} s") from None
            rid += 1


def percentile(ordered: list[int], p: float) -> int:
    """Nearest-rank percentile of an ordered list."""
    if not ordered:
        return 0
    rank = max(1, math.ceil(round(p / 100 * len(ordered), 9)))
    return ordered[min(rank, len(ordered)) - 1]


def run(config: BenchConfig) -> dict:
    """Run the benchmark; return the results (the JSON object `--json` prints)."""
    if config.ops < config.clients:
        raise ValueError("ops must be at least the number of clients")
    if not 1 <= config.batch <= DEFAULT_MAX_BATCH:
        raise ValueError(f"batch must be within 1..{DEFAULT_MAX_BATCH}")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(config.clients + 1)
    results_q = ctx.Queue()
    procs = [ctx.Process(target=client_main, args=(config, i, barrier, results_q),
                         name=f"mwcluster-bench-{i}", daemon=True)
             for i in range(config.clients)]
    for p in procs:
        p.start()
    results: list[dict] = []
    try:
        master_cpu0 = _master_cpu_s(config)
        try:
            barrier.wait(timeout=config.connect_timeout_s + 30)
        except BrokenBarrierError:
            pass        # a client failed: its report says why
        wait_s = config.max_seconds + config.timeout_s + config.connect_timeout_s + 30
        deadline = time.monotonic() + wait_s
        while len(results) < len(procs):
            try:
                results.append(results_q.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise MwclusterError(f"bench clients did not report within {wait_s:.0f} s"
                                     ) from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        raise MwclusterError(f"bench client failed: {failed[0]}")
    out = summarize(config, results)
    master_cpu1 = _master_cpu_s(config) if master_cpu0 is not None else None
    out["master_cpu_us"] = (None if master_cpu1 is None else
                            round((master_cpu1 - master_cpu0) / max(1, out["completed"]) * 1e6,
                                  2))
    return out


def _master_cpu_s(config: BenchConfig) -> float | None:
    """The master's process CPU seconds from its status (`cpu_s`), or None when it does not
    say (an older master, a stub) or does not answer within 2 s."""
    from mwcluster.client.connection import Client
    from mwcluster.security.curve import Credentials

    try:
        creds = Credentials.load(config.key_file, config.server_key, env={}) \
            if config.key_file or config.server_key else None
        with Client(config.master, timeout_s=2.0, retries=0, credentials=creds) as client:
            status = client.status()
    except MwclusterError:
        return None
    value = status.get("cpu_s") if isinstance(status, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def summarize(config: BenchConfig, results: list[dict]) -> dict:
    merged = array("q")
    for r in results:
        merged.frombytes(r["latency_ns"])
    ordered = sorted(merged)
    done = sum(r["done"] for r in results)
    seconds = (max(r["end_ns"] for r in results) - min(r["start_ns"] for r in results)) / 1e9
    error_replies = sum(r["error_replies"] for r in results)
    unanswered = sum(r["unanswered"] for r in results)
    timed_out = sum(r["unanswered"] for r in results if r["timed_out"])
    cfg = asdict(config)
    return {
        "master": config.master, "clients": config.clients, "inflight": config.inflight,
        "batch": config.batch, "messages": sum(r.get("messages", 0) for r in results),
        "ops": config.ops, "completed": done, "value_bytes": config.value_bytes,
        "mix": config.mix_text(), "durability": config.durability, "keys": cfg["keys"],
        "curve": bool(config.key_file),
        "seconds": round(seconds, 4),
        "ops_per_s": round(done / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": percentile(ordered, 50) / 1e6,
        "p99_ms": percentile(ordered, 99) / 1e6,
        "p999_ms": percentile(ordered, 99.9) / 1e6,
        "max_ms": (ordered[-1] if ordered else 0) / 1e6,
        # requests left in flight when a client stopped at max_seconds are not errors;
        # those a client gave up on after timeout_s without any reply are
        "errors": error_replies + timed_out,
        "error_replies": error_replies, "timed_out": timed_out, "unanswered": unanswered,
        "stopped_at_max_seconds": done < config.ops and not timed_out,
        # the client processes' own CPU (all their threads, ZeroMQ's I/O thread included)
        # over their measured loops, per completed request: what the load itself cost
        "client_cpu_us": round(sum(r["cpu_s"] for r in results) / max(1, done) * 1e6, 2),
    }


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mwcluster bench against {result['master']}", show_header=False)
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("clients x inflight", f"{result['clients']} x {result['inflight']}"),
        ("requests per message", str(result["batch"])),
        ("durability", result["durability"]),
        ("CURVE", "yes" if result.get("curve") else "no"),
        ("mix", result["mix"]),
        ("value bytes", str(result["value_bytes"])),
        ("completed", f"{result['completed']:,} of {result['ops']:,}"),
        ("errors", str(result["errors"])),
        ("seconds", f"{result['seconds']:.2f}"),
        ("ops/s", f"{result['ops_per_s']:,.0f}"),
        ("p50 ms", f"{result['p50_ms']:.3f}"),
        ("p99 ms", f"{result['p99_ms']:.3f}"),
        ("p99.9 ms", f"{result['p999_ms']:.3f}"),
        ("max ms", f"{result['max_ms']:.3f}"),
        ("client CPU us per request", f"{result['client_cpu_us']:.1f}"),
        ("master CPU us per request", "-" if result.get("master_cpu_us") is None
         else f"{result['master_cpu_us']:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
