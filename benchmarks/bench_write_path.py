"""The write path against its targets, its floor and Redis, all in one run on one machine:

- the floor: a bare pyzmq server (benchmarks/peers.FloorServer: receive, unpack, pack an ok
  reply, send; nothing else), loaded like the master: unbatched puts from 2 x 256, and one
  request in flight;
- Redis (when installed, benchmarks/peers.RedisPeer): redis-benchmark SET -c 50 -P 1 and
  -c 16 -P 16, AOF everysec, with the server's CPU per SET from /proc;
- mwcluster, one fresh master (MasterProcess, async) per flush interval (`flush_interval_ms`,
  docs/durability.md): unbatched async puts from 2 x 256 and batched ones from 2 x 1024,
  64 per message, 4 x as many (the loss window sampled every 20 ms in both), gets, sync puts, one put in flight, and a `Client.pipeline()` with no batch size
  (bench_pipeline's clients); the master's CPU per request from /proc (event loop, flusher,
  ZeroMQ I/O thread) and the clients' own (`mwcluster bench`'s client_cpu_us);
- with a standby following (testing.failover.StandbyProcess, interval 0): sync and
  replicated puts from 2 x 256.

With --profile, the master's request handler also runs in this process (testing.memory
.MasterTwin: the handlers, the engine and the journal, no sockets; one fsync per 64 requests,
as in a drain) on the same puts and gets: microseconds per request without a profiler, then
cProfile's functions by their own time, in shares of the run.

The intervals alternate in order over the rounds (0, 2, 5 then 5, 2, 0...), so drift on a
shared machine shows. Only ratios within one round mean anything: this machine's Python
speed changes from day to day.

    python benchmarks/bench_write_path.py [--rounds 2] [--ops 100000] [--intervals 0,2,5]
                                          [--redis-ops 200000] [--profile] [--record]

Every load is bounded by its op count and by --max-seconds. The figures go to
docs/benchmarks.md, section "write path".
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_master import CpuMeter, one  # noqa: E402
from benchmarks.bench_pipeline import run_mode  # noqa: E402
from benchmarks.common import command_line, parse_run_options, run_tables_record  # noqa: E402
from benchmarks.peers import FloorServer, RedisPeer, process_cpu_s  # noqa: E402
from mwcluster.client.bench import BenchConfig, run  # noqa: E402
from mwcluster.testing import MasterProcess  # noqa: E402
from mwcluster.testing.failover import StandbyProcess  # noqa: E402

SECTION = "write path"


def load(endpoint: str, args, **kw) -> BenchConfig:
    base = dict(master=endpoint, clients=2, inflight=256, ops=args.ops,
                max_seconds=args.max_seconds)
    base.update(kw)
    return BenchConfig(**base)


def floor(args) -> dict:
    with FloorServer() as server:
        cpu0 = process_cpu_s(server.pid)
        unbatched = run(load(server.endpoint, args))
        cpu = process_cpu_s(server.pid) - cpu0
        single = run(load(server.endpoint, args, clients=1, inflight=1, ops=args.single_ops))
    return {"ops_s": unbatched["ops_per_s"], "cpu_us": cpu / unbatched["completed"] * 1e6,
            "client_cpu_us": unbatched["client_cpu_us"], "single_p50_ms": single["p50_ms"]}


def redis(directory: Path, args) -> dict | None:
    if not RedisPeer.available():
        return None
    with RedisPeer(directory, args.max_seconds + 60) as peer:
        return {"c50": peer.set_bench(50, 1, args.redis_ops),
                "c16p16": peer.set_bench(16, 16, args.redis_ops)}


def master_total_us(r: dict) -> float:
    return sum(v for k, v in r["cpu_us"].items() if k != "rest")


def mwcluster_runs(directory: Path, interval_ms: float, args) -> dict:
    env = dict(os.environ, MWCLUSTER_FLUSH_INTERVAL_MS=str(interval_ms))
    with MasterProcess(directory, env=env) as master:
        endpoint, pid = master.client_endpoint, master.pid
        out = {"put": one(load(endpoint, args), pid, sample=True),
               "batched": one(load(endpoint, args, inflight=1024, batch=64, ops=4 * args.ops),
                              pid, sample=True),
               "get": one(load(endpoint, args, mix={"get": 100}), pid),
               "sync": one(load(endpoint, args, durability="sync"), pid),
               "single": one(load(endpoint, args, clients=1, inflight=1, ops=args.single_ops),
                             pid)}
        pipe_args = SimpleNamespace(ops=args.ops, clients=2, window=256,
                                    max_seconds=args.max_seconds)
        with CpuMeter(pid) as meter:
            pipe = run_mode(endpoint, None, "auto", pipe_args)
        pipe["cpu_us"] = meter.per_request_us(pipe["ops"])
        out["pipeline"] = pipe
    return out


def replicated_runs(directory: Path, args) -> dict:
    with MasterProcess(directory / "m") as master, \
            StandbyProcess(directory / "s", master) as _standby:
        endpoint, pid = master.client_endpoint, master.pid
        return {"sync": one(load(endpoint, args, durability="sync"), pid),
                "replicated": one(load(endpoint, args, durability="replicated"), pid)}


def run_all(args, tmp: Path) -> list[dict]:
    rounds = []
    for round_no in range(1, args.rounds + 1):
        base = tmp / f"round{round_no}"
        order = args.intervals if round_no % 2 else args.intervals[::-1]
        result = {"round": round_no, "floor": floor(args), "redis": redis(base / "redis", args),
                  "intervals": {}}
        for interval in order:
            result["intervals"][interval] = mwcluster_runs(base / f"m{interval:g}", interval,
                                                           args)
        result["replicated"] = replicated_runs(base / "replicated", args)
        rounds.append(result)
        print({"round": round_no, "done": True}, file=sys.stderr, flush=True)
    if args.profile:
        rounds[-1]["profile"] = handler_profile(tmp, args.profile_ops)
    return rounds


def handler_profile(tmp: Path, n: int) -> dict:
    """The request handler in this process (module docstring): us per put and per get, and
    the functions taking the most of a profiled run of the puts."""
    from mwcluster.core.values import encode
    from mwcluster.nodes.master.handlers import Drain
    from mwcluster.testing.memory import MasterTwin
    from mwcluster.wire.protocol import Op, encode_request

    client_id, value = os.urandom(16), encode(os.urandom(64))
    keys = [f"/bench/k{i % 10_000:07d}" for i in range(n)]
    puts = [encode_request(client_id, i + 1, int(Op.PUT), [keys[i], value, None], 1)
            for i in range(n)]
    gets = [encode_request(client_id, n + i + 1, int(Op.GET), [keys[i]], 1) for i in range(n)]
    twin = MasterTwin(tmp / "twin")
    handle, flush = twin.handlers.handle, twin.engine.journal.flush

    def serve(frames: list[bytes]) -> float:
        began = time.perf_counter()
        for i in range(0, len(frames), 64):
            drain = Drain(time.monotonic())
            for frame in frames[i:i + 64]:
                handle(b"\0peer", frame, drain)
            flush()
        return (time.perf_counter() - began) / len(frames) * 1e6

    out = {"put_us": serve(puts), "get_us": serve(gets)}
    again = [encode_request(client_id, 2 * n + i + 1, int(Op.PUT), [keys[i], value, None], 1)
             for i in range(n)]
    profiler = cProfile.Profile()
    profiler.runcall(serve, again)
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())
    top = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:14]
    out["top"] = [(f"{Path(f).name}:{line}({name})" if line else name, row[2] / total)
                  for (f, line, name), row in top]
    twin.engine.close()
    return out


def _f(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def tables(rounds: list[dict], args) -> list[str]:
    lines = [
        f"Each round: the floor, Redis, then one fresh master per flush interval "
        f"({', '.join(f'{i:g}' for i in args.intervals)} ms, order reversed every other "
        f"round), then a master with a standby. Loads: `mwcluster bench` 2 processes x 256 in "
        f"flight, {args.ops:,} requests per run, 64-byte values over 10,000 keys, one request "
        f"per message; one in flight: {args.single_ops:,} requests; the pipeline: 2 processes,"
        f" `Client.pipeline(window=256)` with no batch size. Redis: {args.redis_ops:,} SETs "
        "per run, 64-byte values, 10,000 keys, AOF everysec. CPU in microseconds per request: "
        "the master's own threads (event loop + flusher + ZeroMQ I/O) from /proc, the clients' "
        "own (process_time of the bench processes), Redis's server from /proc. Everything "
        "shares the machine's cores.", "",
        "| round | run | requests/s | server CPU us | client CPU us | p50 ms | p99 ms | "
        "loss window p99 (master's own) |", "|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        fl = r["floor"]
        lines.append(f"| {r['round']} | floor: bare pyzmq, unbatched 2 x 256 | "
                     f"{_f(fl['ops_s'])} | {fl['cpu_us']:.1f} | {fl['client_cpu_us']:.1f} | "
                     f"- | - | - |")
        lines.append(f"| {r['round']} | floor: one in flight | - | - | - | "
                     f"{fl['single_p50_ms']:.3f} | - | - |")
        if r["redis"]:
            for name, label in (("c50", "SET -c 50 -P 1"), ("c16p16", "SET -c 16 -P 16")):
                x = r["redis"][name]
                lines.append(f"| {r['round']} | Redis {label} | {_f(x['ops_s'])} | "
                             f"{x['server_cpu_us']:.1f} | {x['client_cpu_us']:.1f} | - | - | - |")
        for interval, runs in r["intervals"].items():
            for name in ("put", "batched", "get", "sync", "single"):
                x = runs[name]
                loss = "-"
                if name in ("put", "batched"):
                    loss = (f"{_f(x['loss_window_p99_ms'], '.1f')} ms "
                            f"({_f(x['master_loss_window_p99_ms'], '.1f')} ms)")
                label = {"put": "async puts", "get": "gets", "sync": "sync puts",
                         "single": "one async put in flight",
                         "batched": "async puts, 2 x 1024, 64 per message"}[name]
                lines.append(f"| {r['round']} | {label}, interval {interval:g} ms | "
                             f"{_f(x['ops_per_s'])} | {master_total_us(x):.1f} | "
                             f"{x['client_cpu_us']:.1f} | {x['p50_ms']:.3f} | "
                             f"{x['p99_ms']:.3f} | {loss} |")
            p = runs["pipeline"]
            lines.append(f"| {r['round']} | pipeline, no batch size, interval {interval:g} ms | "
                         f"{_f(p['ops_s'])} | {master_total_us(p):.1f} | "
                         f"{p['client_cpu_us']:.1f} | - | - | - |")
        for name in ("sync", "replicated"):
            x = r["replicated"][name]
            lines.append(f"| {r['round']} | {name} puts, standby following | "
                         f"{_f(x['ops_per_s'])} | {master_total_us(x):.1f} | "
                         f"{x['client_cpu_us']:.1f} | {x['p50_ms']:.3f} | {x['p99_ms']:.3f} | - |")
    lines += ["", "The targets of the write path, as ratios within each round:", "",
              "| round | interval | async puts / Redis c50 P1 (>= 1.0) | pipeline / Redis c16 "
              "P16 (>= 0.5) | puts / gets (>= 0.7) | sync / async (>= 0.9) | master CPU per "
              "put / Redis CPU per SET (<= 2) | loss window p99, unbatched / batched (<= 20 ms)"
              " | one in flight p50 / floor (<= 1.2) | async puts / floor |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        fl, rd = r["floor"], r["redis"]
        for interval, runs in r["intervals"].items():
            put = runs["put"]
            vs_redis = vs_pipe = vs_cpu = None
            if rd:
                vs_redis = put["ops_per_s"] / rd["c50"]["ops_s"]
                vs_pipe = runs["pipeline"]["ops_s"] / rd["c16p16"]["ops_s"]
                vs_cpu = master_total_us(put) / rd["c50"]["server_cpu_us"]
            lines.append(
                f"| {r['round']} | {interval:g} ms | {_f(vs_redis, '.2f')} | "
                f"{_f(vs_pipe, '.2f')} | {put['ops_per_s'] / runs['get']['ops_per_s']:.2f} | "
                f"{runs['sync']['ops_per_s'] / put['ops_per_s']:.2f} | {_f(vs_cpu, '.1f')} | "
                f"{_f(put['loss_window_p99_ms'], '.1f')} / "
                f"{_f(runs['batched']['loss_window_p99_ms'], '.1f')} ms | "
                f"{runs['single']['p50_ms'] / fl['single_p50_ms']:.2f} | "
                f"{put['ops_per_s'] / fl['ops_s']:.2f} |")
        rep = r["replicated"]
        lines.append(f"| {r['round']} | replicated / sync, standby following (>= 0.8): "
                     f"{rep['replicated']['ops_per_s'] / rep['sync']['ops_per_s']:.2f} | | | | "
                     f"| | | | |")
    prof = rounds[-1].get("profile")
    if prof:
        lines += ["", f"The request handler in-process (`--profile`, {args.profile_ops:,} "
                  f"puts, then as many gets, one fsync per 64): {prof['put_us']:.2f} us per "
                  f"put, {prof['get_us']:.2f} us per get (puts / gets "
                  f"{prof['get_us'] / prof['put_us']:.2f} in requests per second). "
                  "cProfile of the puts, functions by their own time (shares of the run):",
                  ""]
        lines += [f"- {name}: {share:.1%}" for name, share in prof["top"]]
    if not any(r["redis"] for r in rounds):
        lines.append("\nredis-server was not installed: no Redis figure in this run.")
    return lines


def command(args) -> str:
    return command_line("bench_write_path.py", args, ["rounds", "ops", "single_ops",
                                                      "redis_ops", "intervals",
                                                      "max_seconds", "profile"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--single-ops", type=int, default=10_000)
    ap.add_argument("--redis-ops", type=int, default=200_000)
    ap.add_argument("--intervals", default="0,2,5",
                    type=lambda t: [float(x) for x in t.split(",")])
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--profile", action="store_true",
                    help="also profile the request handler in this process")
    ap.add_argument("--profile-ops", type=int, default=100_000)
    args = parse_run_options(ap, {"rounds": 1, "ops": 4_000, "single_ops": 500,
                                  "redis_ops": 20_000, "intervals": [0.0, 2.0],
                                  "max_seconds": 20.0, "profile": True,
                                  "profile_ops": 2_000})
    run_tables_record(args, "bench-write-path-", run_all, tables, SECTION, command)


if __name__ == "__main__":
    main()
