"""Restart time of a master with a large state: 1,000,000 keys in its newest snapshot and
100,000 records in the journal after it (issue 4's target: <= 5 s). Prints the figures and
records them in docs/benchmarks.md (section "master restart").

    python benchmarks/bench_restart.py [--keys N] [--tail-records N] [--no-record]

The data directory is built in-process with the Engine (the same files a master writes), then
a real master process is started on it; the figure is the time from starting the process to
its ready file, and the master's own `recovery_s` (snapshot load + journal replay). Every
record carries an origin, as a client's request does (64 clients, increasing request ids),
so the snapshot carries a full table of recent requests and replay remembers the tail's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import record_section  # noqa: E402
from mwcluster.core import records as r  # noqa: E402
from mwcluster.engine import Engine  # noqa: E402
from mwcluster.testing import MasterProcess, RawDealer  # noqa: E402

VALUE = b"\xc4\x40" + b"v" * 64


def build(data_dir: Path, keys: int, tail_records: int) -> dict:
    engine = Engine(data_dir)
    engine.open()
    clients = [os.urandom(16) for _ in range(64)]
    t0 = time.perf_counter()
    for i in range(keys):
        engine.submit(r.Put(f"/datasets/logs/2026-11-26/part-{i:07d}", VALUE),
                      origin=(clients[i % 64], i))
    recent_in_snapshot = len(engine.recent_requests)
    header = engine.snapshot()
    for i in range(tail_records):
        engine.submit(r.Put(f"/datasets/logs/2026-11-26/part-{i % keys:07d}", VALUE),
                      origin=(clients[i % 64], keys + i))
    digest = engine.state.digest
    txid = engine.state.txid
    engine.close()
    return {"build_s": time.perf_counter() - t0, "snapshot_txid": header.txid,
            "snapshot_bytes": header.path.stat().st_size, "txid": txid, "digest": digest,
            "recent_in_snapshot": recent_in_snapshot}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--tail-records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="mwcluster-restart-"))
    try:
        built = build(base / "data", args.keys, args.tail_records)
        rows = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            with MasterProcess(base / "data") as master, \
                    RawDealer(master.client_endpoint) as dealer:
                ready_s = time.perf_counter() - t0
                status = dealer.status()
                assert status["txid"] == built["txid"] and status["digest"] == built["digest"]
                rows.append((ready_s, status["recovery_s"],
                             status["recovery"]["replayed_records"]))
                master.terminate()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()
    lines = ["| run | process start to ready | recovery_s (snapshot load + replay) | records replayed |",
             "|---|---|---|---|"]
    for n, (ready_s, rec_s, replayed) in enumerate(rows, 1):
        lines.append(f"| {n} | {ready_s:.2f} s | {rec_s:.2f} s | {replayed:,} |")
    body = (f"Target: restart of a master with {args.keys:,} keys and {args.tail_records:,} "
            f"records since the last snapshot <= 5 s. Snapshot: {built['snapshot_bytes'] / 2**20:.0f} MiB "
            f"at txid {built['snapshot_txid']:,}; state after the tail: txid {built['txid']:,}. "
            "Each run starts a real master process on the same data directory (the epoch goes up "
            "by one each time), checks that its txid and digest are the ones written, and stops "
            "it with SIGTERM. Every record carries a client's origin; the engine's table held "
            f"{built['recent_in_snapshot']:,} requests when it wrote the snapshot (a snapshot "
            "written by this version carries them). Load average "
            f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (2 cores, shared).\n\n"
            + "\n".join(lines))
    print(body)
    if not args.no_record:
        record_section("master restart", "python benchmarks/bench_restart.py "
                       + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
