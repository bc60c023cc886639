"""Failover figures: the cost of `replicated` writes against `async` and `sync`, and the time
a failover takes (detection + promotion), with real processes on 127.0.0.1.

    python benchmarks/bench_failover.py [--writes 20000] [--latency-writes 2000]
                                        [--window 64] [--failovers 3] [--record]

Write cost: a master (default durability async) and a checkpoint node following it; one
client process sends `--writes` PUTs of small values with up to `--window` in flight for each
durability level (throughput), then `--latency-writes` PUTs one at a time (latency: p50, p99).
Failover: a master and a standby in `auto` mode (failover_timeout_s 3); a client that knows
both endpoints and the standby's status endpoint writes, the master is killed with SIGKILL, and
the time until the client's next write is acknowledged by the new master is measured; the
promotion's own duration comes from its report. Also one manual promotion with the master
alive. The machine's load average is printed with the figures: other work shares it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import percentile, record_section  # noqa: E402
from mwcluster import Client  # noqa: E402
from mwcluster.testing import MasterProcess, wait_for  # noqa: E402
from mwcluster.testing.failover import StandbyProcess  # noqa: E402

MODES = ("async", "sync", "replicated")


def write_cost(root: Path, writes: int, latency_writes: int, window: int) -> list[dict]:
    out = []
    with MasterProcess(root / "m") as master, StandbyProcess(root / "c", master) as standby:
        with Client([master.client_endpoint], timeout_s=10) as client:
            client.put("/warm", 0, durability="sync")
            wait_for(lambda: standby.status()["replica_txid"] >= 1, 30, "standby following")
            for mode in MODES:
                started = time.perf_counter()
                with client.pipeline(window=window) as p:
                    for i in range(writes):
                        p.put(f"/t/{mode}/{i}", i, durability=mode)
                throughput = writes / (time.perf_counter() - started)
                lat = []
                for i in range(latency_writes):
                    t0 = time.perf_counter()
                    client.put(f"/l/{mode}/{i}", i, durability=mode)
                    lat.append((time.perf_counter() - t0) * 1000)
                out.append({"mode": mode, "throughput": throughput,
                            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)})
                print(f"{mode}: {throughput:,.0f} writes/s with {window} in flight; one at a "
                      f"time p50 {out[-1]['p50_ms']:.3f} ms, p99 {out[-1]['p99_ms']:.3f} ms",
                      flush=True)
        standby.stop()
    return out


def auto_failover(root: Path) -> dict:
    old = MasterProcess(root / "m", durability="sync")
    with old, StandbyProcess(root / "c", old, failover="auto", failover_timeout_s=3.0) as sb:
        with Client([old.client_endpoint, sb.promote_client_endpoint], timeout_s=0.5,
                    retries=60, sleep=lambda s: None,
                    standby_status=[sb.status_endpoint]) as client:
            for i in range(200):
                client.put(f"/w/{i}", i)
            wait_for(lambda: sb.status()["replica_txid"] >= 200, 30, "standby caught up")
            killed = time.monotonic()
            old.kill()
            client.put("/after", 1)
            took = time.monotonic() - killed
        info = sb.master_info()
        sb.stop()
    return {"took_s": took, "epoch": info["epoch"] if info else None}


def manual_promotion(root: Path) -> dict:
    with MasterProcess(root / "m", durability="sync") as master, \
            StandbyProcess(root / "c", master) as sb:
        with Client([master.client_endpoint], timeout_s=10) as client:
            with client.pipeline(window=64) as p:
                for i in range(10_000):
                    p.put(f"/m/{i}", i)
            wait_for(lambda: sb.status()["replica_txid"] >= 10_000, 60, "standby caught up")
        started = time.monotonic()
        report = sb.promote()
        took = time.monotonic() - started
        sb.stop()
    return {"took_s": took, "report_s": report["seconds"], "txid": report["txid"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=20_000)
    ap.add_argument("--latency-writes", type=int, default=2000)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--failovers", type=int, default=3)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        cost = write_cost(Path(tmp) / "cost", args.writes, args.latency_writes, args.window)
        fails = []
        for n in range(args.failovers):
            fails.append(auto_failover(Path(tmp) / f"auto{n}"))
            print(f"auto failover {n + 1}: the client's write was acknowledged by the new "
                  f"master {fails[-1]['took_s']:.2f} s after the kill -9", flush=True)
        manual = manual_promotion(Path(tmp) / "manual")
        print(f"manual promotion at txid {manual['txid']}: {manual['took_s']:.2f} s "
              f"(the node's own report: {manual['report_s']:.2f} s)", flush=True)
    load_after = os.getloadavg()
    load = (f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other "
            "work shares the 2 cores)")
    print(load)
    if not args.record:
        return
    lines = ["Durability cost (one master, one checkpoint node following it, one client "
             "process; small values):", "",
             "| durability | writes/s, " + f"{args.window} in flight | p50 one at a time | "
             "p99 one at a time |", "|---|---|---|---|"]
    for row in cost:
        lines.append(f"| `{row['mode']}` | {row['throughput']:,.0f} | {row['p50_ms']:.3f} ms "
                     f"| {row['p99_ms']:.3f} ms |")
    lines += ["", "`replicated` waits for the node's REPLICA_ACK, which follows the master's "
              "fsync and the log stream's publish: it costs the sync latency plus one more "
              "trip to the node and back.", "",
              "Failover time (`failover = \"auto\"`, `failover_timeout_s` 3; the client times "
              "out after 0.5 s, votes, and moves to the standby's endpoint), from the kill -9 "
              "to the client's next write acknowledged by the new master: " +
              ", ".join(f"{f['took_s']:.2f} s" for f in fails) +
              ". It is the silence timeout (counted from the master's last heartbeat, at most "
              "1 s before the kill), then a 0.5 s fencing attempt at the dead master, then the "
              "snapshot write and the master's start.", "",
              f"Manual promotion with the master alive, replica at txid {manual['txid']}: "
              f"{manual['took_s']:.2f} s for `mwcluster promote` (the node's report: "
              f"{manual['report_s']:.2f} s: fence, fetch, snapshot, start).", "", load]
    cmd = (f"python benchmarks/bench_failover.py --writes {args.writes} --latency-writes "
           f"{args.latency_writes} --window {args.window} --failovers {args.failovers} --record")
    record_section("failover", cmd, "\n".join(lines))


if __name__ == "__main__":
    main()
