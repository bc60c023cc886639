"""The checkpoint node under load, against a master holding 1,000,000 keys (issue 4's claims):

1. master p99 latency while the node writes and uploads a snapshot of the whole state,
   against p99 over a window of the same length just before it, same run, same load
   (target: ratio <= 1.2);
2. replica lag at 50,000 updates/s outside checkpoints (target: p99 <= 100 ms);
3. how far the replica falls behind while the node serializes (max records and ms behind).

    python benchmarks/bench_checkpoint.py [--keys N] [--rate-a R] [--rate-b R] [--small]
                                          [--no-record]

Set-up: the master's data directory is built in-process with the Engine (N keys and a
snapshot, as a master writes them); a real master process starts on it and a real checkpoint
node joins it (from the master's snapshot) with `--period-s P` and no record-count trigger, so
its checkpoints come P seconds apart, whatever the load. A load process (open loop: requests
are sent on a fixed schedule, and latency counts from the scheduled send time, so a stall
is not hidden by sending less) PUTs random existing keys; the bench polls the node's STATUS
every POLL_S for its replica txid and whether a checkpoint or an upload is running.

Phase A: `--rate-a` single PUTs per second (one request per message) from before the node's
first checkpoint to the end of its upload. Phase B: `--rate-b` updates per second in BATCH
messages of 50, until the end of the next checkpoint. Lag of a record = the first poll at
which the replica holds its txid, minus the time the master acknowledged it (so it includes
the fsync, the publish and the poll interval). Every loop is bounded in count and time.

Not a test: nothing is asserted about the figures; they are printed and recorded in
docs/benchmarks.md (section "checkpoint node").
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import percentile, record_section  # noqa: E402

POLL_S = 0.005
KEY = "/datasets/logs/2026-11-26/part-{:07d}"
VALUE = b"\xc4\x40" + b"v" * 64          # msgpack bin of 64 bytes
PHASE_LIMIT_S = 150.0                     # no phase runs longer than this, whatever happens
PROFILE_S = 4.0


# --- the load process ------------------------------------------------------------------------

def load_child(endpoint: str, rate: float, batch: int, keys: int, start_at: float,
               stop_file: str, max_s: float, out_path: str) -> None:
    """Open-loop PUTs at `rate` updates/s in messages of `batch` (1: plain PUTs, else BATCH),
    from monotonic `start_at` until `stop_file` exists or `max_s`; writes one line per message:
    scheduled send time, reply time, highest txid."""
    import zmq

    from mwcluster.wire.protocol import Op, decode_reply, encode_request, sub_request

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(endpoint)
    client_id = os.urandom(16)
    rng = random.Random(7)
    interval = batch / rate
    rid = 1
    sent: dict[int, float] = {}
    done: list[tuple[float, float, int]] = []
    monotonic = time.monotonic
    while monotonic() < start_at:
        time.sleep(0.001)
    next_send = start_at
    end = start_at + max_s
    stop_checked = 0.0
    stopping = False
    while True:
        now = monotonic()
        if not stopping and (now >= end or (now - stop_checked > 0.05 and
                                            os.path.exists(stop_file))):
            stopping = True
            drain_until = now + 5.0
        if not stopping:
            sends = 0
            while next_send <= now and sends < 1000:
                if batch == 1:
                    frame = encode_request(client_id, rid, Op.PUT,
                                           [KEY.format(rng.randrange(keys)), VALUE, None])
                else:
                    subs = [sub_request(rid + 1 + i, Op.PUT,
                                        [KEY.format(rng.randrange(keys)), VALUE, None])
                            for i in range(batch)]
                    frame = encode_request(client_id, rid, Op.BATCH, subs)
                sock.send(frame)
                sent[rid] = next_send
                rid += batch + 1
                next_send += interval
                sends += 1
            if now - stop_checked > 0.05:
                stop_checked = now
        elif not sent or now >= drain_until:
            break
        timeout_ms = 1 if stopping else max(0, int((next_send - monotonic()) * 1000))
        if sock.poll(timeout_ms):
            for _ in range(10_000):
                try:
                    frame = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                got = monotonic()
                reply = decode_reply(frame)
                scheduled = sent.pop(reply.request_id, None)
                if scheduled is not None and reply.status == 0:
                    done.append((scheduled, got, reply.txid))
    sock.close(0)
    ctx.term()
    with open(out_path, "w") as f:
        for scheduled, got, txid in done:
            f.write(f"{scheduled:.6f} {got:.6f} {txid}\n")


def read_load(path: Path) -> list[tuple[float, float, int]]:
    out = []
    for line in path.read_text().splitlines():
        a, b, c = line.split()
        out.append((float(a), float(b), int(c)))
    return out


# --- set-up ------------------------------------------------------------------------------------

def build(data_dir: Path, keys: int) -> dict:
    from mwcluster.core import records as r
    from mwcluster.engine import Engine

    engine = Engine(data_dir)
    engine.open()
    t0 = time.perf_counter()
    for i in range(keys):
        engine.submit(r.Put(KEY.format(i), VALUE))
    header = engine.snapshot()
    engine.close()
    return {"build_s": time.perf_counter() - t0, "snapshot_txid": header.txid,
            "snapshot_bytes": header.path.stat().st_size}


class Poller:
    """The node's STATUS every POLL_S: (time, replica_txid, checkpoint running, uploading,
    last uploaded txid)."""

    def __init__(self, endpoint: str) -> None:
        from mwcluster.testing import RawDealer

        self.dealer = RawDealer(endpoint, timeout_s=10.0)
        self.samples: list[tuple[float, int, int | None, int | None, int | None]] = []

    def poll(self) -> tuple:
        s = self.dealer.status()
        running = s["checkpoint_running"]
        up = s["upload"]
        sample = (time.monotonic(), s["replica_txid"] or 0,
                  running["txid"] if running else None, up["uploading_txid"],
                  up["last_upload_txid"])
        self.samples.append(sample)
        return sample

    def until(self, condition, limit_s: float) -> tuple:
        deadline = time.monotonic() + limit_s
        while True:
            sample = self.poll()
            if condition(sample):
                return sample
            if time.monotonic() > deadline:
                raise SystemExit(f"gave up after {limit_s:.0f} s waiting for the node "
                                 f"(last sample {sample})")
            time.sleep(POLL_S)

    def close(self) -> None:
        self.dealer.close()


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """Sample `pid` with py-spy (200 Hz, only threads holding the GIL) into `out`."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        print("py-spy not found: no profile", file=sys.stderr)
        return None
    return subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r",
                             "200", "-f", "raw", "-o", str(out), "--threads", "--nonblocking",
                             "--gil"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, seconds: float) -> list[str]:
    """Share of the wall time each thread held the GIL, and the busiest leaf frames."""
    if not path.exists():
        return [f"- {path.name}: no profile"]
    threads: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        threads[frames[0].split(" ", 2)[-1].strip('"').split(":")[0]] += int(count)
        match = re.fullmatch(r"(.*) \((?:.*/)?([^/]*)\)", frames[-1])
        leaves[f"{match[1]} ({match[2]})" if match else frames[-1]] += int(count)
    total = seconds * 200
    out = [f"- {path.stem}: GIL held by " + ", ".join(
        f"{name} {n / total:.0%}" for name, n in threads.most_common(4))]
    out += [f"  - {n / total:.1%} {leaf}" for leaf, n in leaves.most_common(6)]
    return out


def run_phase(master, poller: Poller, work: Path, name: str, rate: float, batch: int,
              keys: int, profile: bool = False) -> dict:
    """Load at `rate` from now until the node's next checkpoint is written and uploaded;
    returns the polls and the replies. With `profile`, py-spy samples the master for
    PROFILE_S from the start of the load and again from the start of the checkpoint."""
    stop_file = work / f"{name}.stop"
    out = work / f"{name}.load"
    start_at = time.monotonic() + 0.5
    proc = mp.get_context("spawn").Process(
        target=load_child, args=(master.client_endpoint, rate, batch, keys, start_at,
                                 str(stop_file), PHASE_LIMIT_S, str(out)))
    proc.start()
    first = len(poller.samples)
    spies = []
    if profile:
        spies.append(py_spy(master.pid, PROFILE_S, work / f"{name}-master-before.txt"))
    try:
        # the checkpoint starts, is written (the child exits), then uploaded
        start = poller.until(lambda s: s[2] is not None, PHASE_LIMIT_S)
        if profile:
            spies.append(py_spy(master.pid, PROFILE_S, work / f"{name}-master-during.txt"))
        txid = start[2]
        written = poller.until(lambda s: s[2] is None, PHASE_LIMIT_S)
        uploaded = poller.until(lambda s: s[4] is not None and s[4] >= txid and s[3] is None,
                                PHASE_LIMIT_S)
        tail_end = time.monotonic() + 1.0
        while time.monotonic() < tail_end:          # a little after, for the lag tail
            poller.poll()
            time.sleep(POLL_S)
    finally:
        stop_file.touch()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        for spy in spies:
            if spy is not None:
                spy.wait(PROFILE_S + 30)
    replies = read_load(out)
    profiles = [line for when in ("before", "during")
                for line in summarize_profile(work / f"{name}-master-{when}.txt", PROFILE_S)
                ] if profile else []
    return {"samples": poller.samples[first:], "replies": replies, "load_start": start_at,
            "profiles": profiles,
            "cp_start": start[0], "cp_written": written[0], "cp_uploaded": uploaded[0],
            "cp_txid": txid}


# --- figures -----------------------------------------------------------------------------------

def latencies_ms(replies, t0: float, t1: float) -> list[float]:
    return [(got - sched) * 1000 for sched, got, _ in replies if t0 <= sched < t1]


def lags(phase: dict) -> list[tuple[float, float, int]]:
    """(ack time, lag ms, txid) for each acknowledged message: the first poll whose replica
    txid covers it, minus the ack time."""
    samples = phase["samples"]
    times = [s[0] for s in samples]
    txids = [s[1] for s in samples]
    for i in range(1, len(txids)):          # the replica txid only grows: make it monotone
        if txids[i] < txids[i - 1]:
            txids[i] = txids[i - 1]
    out = []
    for _sched, got, txid in phase["replies"]:
        i = bisect.bisect_left(times, got)
        j = bisect.bisect_left(txids, txid, lo=i)
        if j < len(times):
            out.append((got, (times[j] - got) * 1000, txid))
    return out


def behind(phase: dict, t0: float, t1: float) -> tuple[int, float]:
    """Max records behind (acknowledged by the master but not in the replica) at the polls in
    [t0, t1), and the max lag in ms of the records acknowledged in it."""
    acks = sorted((got, txid) for _s, got, txid in phase["replies"])
    ack_times = [a[0] for a in acks]
    best = [0]
    for t, txid in acks:
        best.append(max(best[-1], txid))
    worst = 0
    for t, replica, *_ in phase["samples"]:
        if t0 <= t < t1:
            acked = best[bisect.bisect_right(ack_times, t)]
            worst = max(worst, acked - replica)
    worst_ms = max((lag for got, lag, _ in lags(phase) if t0 <= got < t1), default=0.0)
    return worst, worst_ms


def fmt(values: list[float]) -> str:
    if not values:
        return "- (no samples)"
    return (f"p50 {percentile(values, 50):.2f} / p99 {percentile(values, 99):.2f} / "
            f"max {max(values):.2f} ms ({len(values):,} samples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rate-a", type=float, default=5_000.0,
                        help="phase A: single PUTs per second [5000]")
    parser.add_argument("--rate-b", type=float, default=50_000.0,
                        help="phase B: updates per second, in BATCHes of 50 [50000]")
    parser.add_argument("--period-s", type=float, default=None,
                        help="the node's checkpoint period [25, or 3 with --small]")
    parser.add_argument("--small", action="store_true",
                        help="20,000 keys, low rates, short period: checks the script runs")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="phase A: py-spy samples the master for 4 s from the start of the "
                             "load and 4 s from the start of the checkpoint")
    parser.add_argument("--pin-node", action="store_true",
                        help="pin the checkpoint node (and its snapshot writer) to the last "
                             "CPU and the master, the load and this script to the others, as "
                             "if the node had a machine of its own")
    parser.add_argument("--dump", default=None, metavar="FILE",
                        help="also write the raw polls and replies of both phases as JSON")
    args = parser.parse_args()
    if args.small:
        args.keys = min(args.keys, 20_000)
        args.rate_a = min(args.rate_a, 500.0)
        args.rate_b = min(args.rate_b, 2_000.0)
    period = args.period_s or (3.0 if args.small else 25.0)

    from mwcluster.testing import MasterProcess
    from mwcluster.testing.checkpoint import CheckpointProcess

    base = Path(tempfile.mkdtemp(prefix="mwcluster-bench-checkpoint-"))
    try:
        started = time.monotonic()
        built = build(base / "m", args.keys)
        print(f"built {args.keys:,} keys in {built['build_s']:.1f} s; snapshot "
              f"{built['snapshot_bytes'] / 2**20:.0f} MiB", flush=True)
        with MasterProcess(base / "m", start_timeout_s=120) as master:
            node = CheckpointProcess(base / "c", master, period_s=period, txns=10**12,
                                     start_timeout_s=120)
            with node:
                if args.pin_node:
                    pin_node(node.pid, master.pid)
                poller = Poller(node.status_endpoint)
                try:
                    poller.until(lambda s: s[1] >= built["snapshot_txid"], 120)
                    print(f"node joined; phase A: {args.rate_a:,.0f} PUT/s", flush=True)
                    a = run_phase(master, poller, base, "a", args.rate_a, 1, args.keys,
                                  args.profile)
                    print(f"phase B: {args.rate_b:,.0f} updates/s", flush=True)
                    b = run_phase(master, poller, base, "b", args.rate_b, 50, args.keys)
                finally:
                    poller.close()
                node.terminate()
            master.terminate()
        total_s = time.monotonic() - started
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.dump:
        import json

        Path(args.dump).write_text(json.dumps({"a": a, "b": b}))
    body = report(args, period, built, a, b, total_s)
    print(body)
    if not args.no_record and not args.small:
        record_section("checkpoint node", " ".join(["python benchmarks/bench_checkpoint.py",
                                                    *sys.argv[1:]]), body)


def pin_node(node_pid: int, master_pid: int) -> None:
    """--pin-node: every thread of the node on the last CPU (threads and the forked writer it
    starts later inherit it), the master's threads and this process (so the load child it
    spawns next) on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin-node needs at least 2 CPUs")
    node_cpu, rest = {cpus[-1]}, set(cpus[:-1])
    for pid, where in ((node_pid, node_cpu), (master_pid, rest)):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                os.sched_setaffinity(int(task.name), where)
            except OSError:
                pass        # a thread that ended meanwhile
    os.sched_setaffinity(0, rest)
    print(f"node pinned to CPU {cpus[-1]}; master, load and poller to CPUs "
          f"{','.join(map(str, sorted(rest)))}", flush=True)


def report(args, period: float, built: dict, a: dict, b: dict, total_s: float) -> str:
    # phase A: the checkpoint window against a window of the same length just before it
    cp0, cp1 = a["cp_start"], a["cp_uploaded"]
    length = cp1 - cp0
    warm = a["load_start"] + 1.0
    base0 = max(warm, cp0 - length)
    during = latencies_ms(a["replies"], cp0, cp1)
    before = latencies_ms(a["replies"], base0, cp0)
    ratio = (percentile(during, 99) / percentile(before, 99)) if before and during else None
    steady = latencies_ms(a["replies"], warm, cp0)
    writing = latencies_ms(a["replies"], cp0, a["cp_written"])
    uploading = latencies_ms(a["replies"], a["cp_written"], cp1)
    # phase B: lag outside the checkpoint: records acknowledged from 1 s into the load to
    # 1 s before the checkpoint was seen to start (those later are applied during it)
    b_lags = lags(b)
    outside = [lag for got, lag, _ in b_lags
               if b["load_start"] + 1.0 <= got < b["cp_start"] - 1.0]
    b_master = latencies_ms(b["replies"], b["load_start"] + 1.0, b["cp_start"] - 1.0)
    records_behind, ms_behind = behind(b, b["cp_start"], b["cp_written"])
    a_behind, a_ms = behind(a, a["cp_start"], a["cp_written"])
    b_rate = len([1 for s, _g, _t in b["replies"]
                  if b["load_start"] + 1 <= s < b["cp_start"] - 1.0])
    b_window = max(1e-9, b["cp_start"] - b["load_start"] - 2.0)
    lines = [
        f"State: {args.keys:,} keys (snapshot {built['snapshot_bytes'] / 2**20:.0f} MiB). One "
        f"master, one checkpoint node (`--period-s {period:g}`), one open-loop load process "
        f"and this script polling the node's STATUS every {POLL_S * 1000:.0f} ms, "
        + ("the node (with its snapshot writer) pinned to one CPU of its own, the master, the "
           f"load and this script to the other {os.cpu_count() - 1} CPU(s) (`--pin-node`)"
           if args.pin_node else
           f"all on this machine's {os.cpu_count()} cores") +
        f" (shared with other work). Whole run {total_s:.0f} s.",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        f"| A. master latency, {args.rate_a:,.0f} PUT/s, {length:.1f} s window during the "
        f"checkpoint (write {a['cp_written'] - cp0:.1f} s + upload "
        f"{cp1 - a['cp_written']:.1f} s) | {fmt(during)} | |",
        f"| A. same load, the {cp0 - base0:.1f} s just before it | {fmt(before)} | |",
        f"| A. same load, the whole {cp0 - warm:.1f} s before it (from 1 s into the load) | "
        f"{fmt(steady)} | |",
        f"| A. p99 ratio during / before | "
        f"{'-' if ratio is None else f'{ratio:.2f}'} | <= 1.2 |",
        f"| A. during the write only / the upload only | {fmt(writing)} / {fmt(uploading)} | |",
        f"| B. replica lag at {args.rate_b:,.0f} updates/s (offered; "
        f"{b_rate * 50 / b_window:,.0f} acknowledged/s), outside checkpoints (acknowledged "
        f"at least 1 s before one starts) | "
        f"{fmt(outside)} | p99 <= 100 ms |",
        f"| B. master latency (scheduled send to acknowledgement) over the same records | "
        f"{fmt(b_master)} | |",
        f"| B. behind while the node serializes ({b['cp_written'] - b['cp_start']:.1f} s) | "
        f"max {records_behind:,} records, {ms_behind:.0f} ms | |",
        f"| A. behind while the node serializes, at {args.rate_a:,.0f} PUT/s | "
        f"max {a_behind:,} records, {a_ms:.0f} ms | |",
    ]
    if a["profiles"]:
        lines += ["", "Phase A, py-spy on the master (200 Hz, `--gil`: samples of the thread "
                  "holding the GIL), 4 s from the start of the load, then 4 s from the start "
                  "of the checkpoint:", "", *a["profiles"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
