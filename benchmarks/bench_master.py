"""Benchmark of the master over ZeroMQ, with the clients on the same machine: starts a master
(mwcluster.testing.MasterProcess, async mode, a temporary data directory), runs the matrix of
issue 3 with `mwcluster bench` (mwcluster.bench.run) and records it in docs/benchmarks.md
(section "master over ZeroMQ").

    python benchmarks/bench_master.py [--ops N] [--quick] [--no-record]

- async puts of 64-byte values at a few (clients, inflight) settings; the best one is the
  saturating figure. During each async run a thread samples the master's status every 50 ms
  and keeps `loss_window_s` (the age of the oldest unflushed record);
- sync puts (each reply waits for its fsync) at the best settings;
- one client with one request in flight (latency);
- a 90/10 put/get mix at the best settings.
Every run is bounded by its op count and by --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import percentile, record_section  # noqa: E402
from mwcluster import Client  # noqa: E402
from mwcluster.bench import BenchConfig, run  # noqa: E402
from mwcluster.testing import MasterProcess  # noqa: E402

SETTINGS = [(2, 64), (2, 256), (3, 128), (4, 128), (4, 256)]   # (clients, inflight)
QUICK_SETTINGS = [(2, 128), (4, 128)]


class StatusSampler:
    """Samples the master's loss window in a thread while a run goes on."""

    def __init__(self, endpoint: str, interval_s: float = 0.02):
        self.endpoint = endpoint
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.missing = 0
        self.last: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with Client(self.endpoint, timeout_s=2.0, retries=1) as client:
            while not self._stop.wait(self.interval_s):
                self.last = client.status()
                value = self.last.get("loss_window_s")
                if value is None:
                    self.missing += 1
                else:
                    self.samples.append(float(value))

    def __enter__(self) -> StatusSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def p99_ms(self) -> float | None:
        return percentile(self.samples, 99) * 1000 if self.samples else None


def bench_command(cfg: BenchConfig) -> str:
    return (f"mwcluster bench --master {cfg.master} --clients {cfg.clients} --inflight "
            f"{cfg.inflight} --ops {cfg.ops} --value-bytes {cfg.value_bytes} --mix "
            f"{cfg.mix_text()} --durability {cfg.durability} --keys {cfg.keys} --json")


def one(cfg: BenchConfig, sample: bool = False) -> dict:
    print("$", bench_command(cfg), file=sys.stderr, flush=True)
    if sample:
        with StatusSampler(cfg.master) as sampler:
            result = run(cfg)
        result["loss_window_p99_ms"] = sampler.p99_ms()
        result["loss_window_max_ms"] = (max(sampler.samples) * 1000 if sampler.samples
                                        else None)
        result["loss_window_samples"] = len(sampler.samples)
        own = sampler.last.get("loss_window_p99_s")
        result["master_loss_window_p99_ms"] = None if own is None else own * 1000
    else:
        result = run(cfg)
    result["command"] = bench_command(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "command"}), file=sys.stderr,
          flush=True)
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def row(label: str, r: dict) -> str:
    loss = r.get("loss_window_p99_ms")
    loss_text = "-" if loss is None else (
        f"{loss:.1f} ms ({_ms(r.get('master_loss_window_p99_ms'))})")
    return (f"| {label} | {r['clients']} x {r['inflight']} | {r['completed']:,} | "
            f"{r['ops_per_s']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['p999_ms']:.3f} | {r['errors']} | {loss_text} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=200_000,
                        help="requests per saturating run (default 200000)")
    parser.add_argument("--latency-ops", type=int, default=20_000,
                        help="requests of the one-client, one-in-flight run")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="cap of each run (default 30)")
    parser.add_argument("--quick", action="store_true", help="two settings only")
    parser.add_argument("--no-record", action="store_true",
                        help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mwcluster-bench-master-"))
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        with MasterProcess(base / "data", durability="async") as master:
            endpoint = master.client_endpoint

            def cfg(**kw) -> BenchConfig:
                kw.setdefault("max_seconds", args.max_seconds)
                return BenchConfig(master=endpoint, value_bytes=64, keys=10_000, **kw)

            tried = [one(cfg(clients=c, inflight=w, ops=args.ops, durability="async"),
                         sample=True)
                     for c, w in (QUICK_SETTINGS if args.quick else SETTINGS)]
            best = max(tried, key=lambda r: r["ops_per_s"])
            sync = one(cfg(clients=best["clients"], inflight=best["inflight"], ops=args.ops,
                           durability="sync"))
            single = one(cfg(clients=1, inflight=1, ops=args.latency_ops,
                             durability="async"))
            mixed = one(cfg(clients=best["clients"], inflight=best["inflight"], ops=args.ops,
                            mix={"put": 90, "get": 10}, durability="async"), sample=True)
            with Client(endpoint) as client:
                final_status = client.status()
            exit_code = master.terminate()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    elapsed = time.monotonic() - started

    loss = best.get("loss_window_p99_ms")
    body = "\n".join([
        "The master runs in async mode (`MasterProcess`, a temporary data directory); the "
        "clients are `mwcluster bench` processes on the same 2 cores, so clients and master "
        "share the CPU. Latencies are from send to reply, in milliseconds, over the merged "
        "samples of all client processes. The loss window is the master's `status` field "
        "`loss_window_s` (age of the oldest record not yet fsynced), sampled every 20 ms "
        "during the run; the master also reports its own p99 (`loss_window_p99_s`, over its "
        f"recent fsyncs), shown in brackets. Load average before the runs: {load_before:.2f}.",
        "",
        "| target | goal | measured |",
        "|---|---|---|",
        f"| async puts, 64-byte values, saturating | >= 100,000 ops/s | "
        f"{best['ops_per_s']:,.0f} ops/s ({best['clients']} clients x {best['inflight']} "
        "in flight) |",
        f"| sync puts, same settings | >= 50% of async | {sync['ops_per_s']:,.0f} ops/s "
        f"({sync['ops_per_s'] / best['ops_per_s'] * 100:.0f}% of async) |",
        f"| one client, one request in flight | p50 <= 0.15 ms, p99 <= 0.5 ms | "
        f"p50 {single['p50_ms']:.3f} ms, p99 {single['p99_ms']:.3f} ms |",
        f"| loss window under the saturating async load | p99 <= 20 ms | "
        + ("not reported by status" if loss is None else f"p99 {loss:.1f} ms "
           f"(max {best['loss_window_max_ms']:.1f} ms, {best['loss_window_samples']} samples; "
           f"master's own p99 {_ms(best.get('master_loss_window_p99_ms'))})")
        + " |",
        "",
        "All runs (ops/s over the whole run; errors = error replies + requests that got no "
        "reply):",
        "",
        "| run | clients x inflight | completed | ops/s | p50 ms | p99 ms | p99.9 ms | errors "
        "| loss window p99 |",
        "|---|---|---|---|---|---|---|---|---|",
        *[row("async puts", r) for r in tried],
        row("sync puts", sync),
        row("one in flight", single),
        row("put=90,get=10", mixed),
        "",
        f"Master status after the runs: txid {final_status.get('txid')}, durable_txid "
        f"{final_status.get('durable_txid')}, journal_bytes {final_status.get('journal_bytes')}"
        f"; the master exited with code {exit_code} on SIGTERM. The whole script took "
        f"{elapsed:.0f} s.",
        "",
        "Each run, as a command against a running master (the endpoint was a random port):",
        "",
        "```",
        *[r["command"] for r in (*tried, sync, single, mixed)],
        "```",
    ])
    print(body)
    if not args.no_record:
        cmd = "python benchmarks/bench_master.py " + " ".join(sys.argv[1:])
        record_section("master over ZeroMQ", cmd.strip(), body)


if __name__ == "__main__":
    main()
