"""The Client's pipeline as users call it, beside Redis in the same run: async puts of 64-byte
values through `Client.pipeline(window=W)` with no batch size (it batches while requests are
in flight), with `batch=1` (one request per message, as before) and with an explicit
`batch=64`, each from C client processes against one master (mwcluster.testing.MasterProcess,
async durability, a temporary data directory); the modes alternate over the rounds. When
Debian's redis-server and redis-benchmark are installed, each round also runs
`redis-benchmark -t set -c 16 -P 16` against a redis-server with `appendonly yes,
appendfsync everysec` on 127.0.0.1 (a random port, a temporary directory), so the ratio to it
comes from one run on one machine.

    python benchmarks/bench_pipeline.py [--rounds 2] [--clients 2] [--window 256]
                                        [--ops 60000] [--record]

Every load is bounded by its op count and by --max-seconds. The figures go to
docs/benchmarks.md, section "client pipeline".
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import command_line, parse_run_options, record_run  # noqa: E402
from benchmarks.peers import RedisPeer  # noqa: E402
from mwcluster.testing import MasterProcess  # noqa: E402

SECTION = "client pipeline"
MODES = {"auto": None, "batch=1": 1, "batch=64": 64}


def _client(endpoint: str, keys, mode: str, window: int, count: int, max_s: float,
            start_at: float, out) -> None:
    from mwcluster import Client
    from mwcluster.client.connection import Pipeline

    value = os.urandom(64)
    with Client(endpoint, timeout_s=10.0, credentials=keys) as client:
        client.ping()
        while time.time() < start_at:      # every process starts at one moment
            time.sleep(0.001)
        began, cpu = time.perf_counter(), time.process_time()
        deadline = began + max_s
        done = 0
        with Pipeline(client, window, MODES[mode]) as p:
            while done < count and time.perf_counter() < deadline:
                p.put(f"/bench/k{done % 10_000:05d}", value, durability="async")
                done += 1
                if done % 4096 == 0:
                    p.results()            # forget the futures: memory stays flat
        out.put((done, time.perf_counter() - began, time.process_time() - cpu))


def run_mode(endpoint: str, keys, mode: str, args) -> dict:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 2.0
    share = args.ops // args.clients
    procs = [ctx.Process(target=_client, args=(endpoint, keys, mode, args.window, share,
                                               args.max_seconds, start_at, out))
             for _ in range(args.clients)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=args.max_seconds + 60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    done = sum(r[0] for r in results)
    seconds = max(r[1] for r in results)
    return {"mode": mode, "ops": done, "ops_s": done / seconds,
            "client_cpu_us": 1e6 * sum(r[2] for r in results) / max(1, done)}


def run_redis(directory: Path, args) -> float | None:
    """SET requests/s of redis-benchmark -c 16 -P 16 against a fresh AOF-everysec server."""
    if not RedisPeer.available():
        return None
    with RedisPeer(directory, args.max_seconds + 60) as redis:
        return redis.set_bench(16, 16, args.redis_ops)["ops_s"]


def command(args) -> str:
    return command_line("bench_pipeline.py", args, ["rounds", "clients", "window", "ops",
                                                    "redis_ops", "max_seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--ops", type=int, default=60_000)
    ap.add_argument("--redis-ops", type=int, default=400_000)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    args = parse_run_options(ap, {"rounds": 1, "ops": 10_000, "redis_ops": 50_000,
                                  "max_seconds": 10.0})
    rows, redis = [], []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        tmp = Path(tmp)
        for round_no in range(1, args.rounds + 1):
            order = list(MODES) if round_no % 2 else list(MODES)[::-1]
            (tmp / f"m{round_no}").mkdir()
            with MasterProcess(tmp / f"m{round_no}", durability="async") as master:
                for mode in order:
                    row = run_mode(master.client_endpoint, None, mode, args)
                    row["round"] = round_no
                    rows.append(row)
                    print(row, flush=True)
            (tmp / f"r{round_no}").mkdir()
            value = run_redis(tmp / f"r{round_no}", args)
            if value is not None:
                redis.append(value)
                print({"round": round_no, "redis_set_c16_p16": value}, flush=True)
    lines = [f"{args.clients} client processes, each a `Client.pipeline(window={args.window})`"
             f" putting 64-byte values (async), {args.ops:,} puts per mode per round; the "
             "master and the clients share the machine's cores.", "",
             "| round | mode | puts | puts/s | client CPU per put |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['round']} | {r['mode']} | {r['ops']:,} | {r['ops_s']:,.0f} | "
                     f"{r['client_cpu_us']:.1f} us |")
    lines.append("")
    for round_no in range(1, args.rounds + 1):
        by = {r["mode"]: r["ops_s"] for r in rows if r["round"] == round_no}
        text = (f"Round {round_no}: no batch size / batch=1 = "
                f"{by['auto'] / by['batch=1']:.2f}, no batch size / batch=64 = "
                f"{by['auto'] / by['batch=64']:.2f}")
        if len(redis) >= round_no:
            text += (f"; Redis SET c16 P16 (AOF everysec) {redis[round_no - 1]:,.0f}/s, "
                     f"no batch size / Redis = {by['auto'] / redis[round_no - 1]:.2f}")
        lines.append(f"- {text}.")
    if not redis:
        lines.append("- redis-server was not installed: no Redis figure in this run.")
    print("\n".join(lines))
    if args.record:
        record_run(args, SECTION, command(args), lines)


if __name__ == "__main__":
    main()
