"""The cost of CURVE (docs/security.md): the same loads against a plain master and against a
secured one (CurveZMQ encryption, the ZAP handshake, the per-request access check), all in
one run on 127.0.0.1, alternated so that drift on a shared machine shows.

    python benchmarks/bench_security.py [--rounds 3] [--clients 2] [--inflight 256]
                                        [--batch 64] [--unbatched-ops 60000]
                                        [--batched-ops 300000] [--snapshot-keys 40000]
                                        [--snapshot-value-bytes 1000] [--transfers 3]
                                        [--max-seconds 30] [--quick] [--record]
                                        [--results FILE]

Set-up: a data directory holding one snapshot is made in this process first (Engine: PUTs of
`--snapshot-keys` keys /s/* with random `--snapshot-value-bytes`-byte values, then
Engine.snapshot, the offline path). Each round starts one master per kind, plain then CURVE
or CURVE then plain (the order alternates from round to round), each on its own copy of that
directory (MasterProcess, async durability; the CURVE master with testing.keys.ClusterKeys:
the cluster's server key, the principals of the key directory). Against each master, in this
order:

1. Snapshot transfer: a MasterLink (the checkpoint node's DEALER; with the cluster's server
   key, a replica principal, for the CURVE master) first answers a PING (the handshake is
   not timed), then SNAPSHOT_INFO and every SNAPSHOT_CHUNK of the master's snapshot are
   timed, with the checkpoint node's default chunk size and credit, into memory
   (`--transfers` times; the bytes are compared with the file once). MB/s = snapshot bytes /
   seconds (MB = 10^6 bytes). Then one `MasterLink.load_master_snapshot`, what a joining
   checkpoint node does (the transfer into a file, its checks, the state's load), is timed.
2. Unbatched puts: mwcluster.client.bench.run, `--clients` processes x `--inflight` async
   PUTs in flight, one request per message, `--unbatched-ops` in all (64-byte values on
   10,000 keys); the CURVE run's clients use the `client` principal (role write).
3. Batched puts: the same with BATCH messages of `--batch` requests, `--batched-ops` in all.

Throughput is completed requests over the run (mwcluster.client.bench); p50 and p99 are per
request over the merged samples of all client processes. The CURVE / plain ratio of a load is
the median over the rounds of (CURVE in round r) / (plain in round r): the two masters of a
round ran next to each other in time. Every run stops at `--max-seconds` at the latest.

Without --record the tables are only printed; with it they go to docs/benchmarks.md (section
"CURVE cost"), or to `--results FILE`. Not a test: nothing is asserted about the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from mwcluster.client.bench import BenchConfig, run  # noqa: E402
from mwcluster.testing import MasterProcess  # noqa: E402
from mwcluster.testing.keys import ClusterKeys  # noqa: E402

SECTION = "CURVE cost"
KINDS = ("plain", "CURVE")
LOADS = ("unbatched", "batched")
# the tables' headers (the smoke test looks for them)
HEAD_RUNS = "| round | master | load | completed | ops/s | p50 | p99 | errors |"
HEAD_PUTS = ("| load | plain ops/s | CURVE ops/s | CURVE / plain | plain p50 | CURVE p50 "
             "| plain p99 | CURVE p99 |")
HEAD_SNAPSHOT_RUNS = ("| round | master | snapshot MB | transfer MB/s (each) | node load s "
                      "(transfer + checks + state) |")
HEAD_SNAPSHOT = ("| snapshot | plain | CURVE | CURVE / plain |")
TARGET = 0.85          # the target: CURVE at least 85% of plain with batching
QUICK = {"rounds": 1, "unbatched_ops": 3000, "batched_ops": 6000, "snapshot_keys": 2000,
         "transfers": 1, "max_seconds": 20.0}


# --- the snapshot ---------------------------------------------------------------------------

def make_seed(data_dir: Path, keys: int, value_bytes: int) -> Path:
    """A master's data directory holding one snapshot of `keys` keys; its path."""
    from mwcluster.core import records as r
    from mwcluster.core.values import encode
    from mwcluster.engine import Engine

    engine = Engine(data_dir, durability="async")
    engine.open()
    try:
        for i in range(keys):
            engine.submit(r.Put(f"/s/{i:08d}", encode(os.urandom(value_bytes))))
        header = engine.snapshot()
    finally:
        engine.close()
    return header.path


def transfer(link, chunk: int, credit: int) -> tuple[float, bytes]:
    """SNAPSHOT_INFO and every SNAPSHOT_CHUNK of the master's snapshot, `credit` chunk
    requests in flight (MasterLink.chunks, as a joining node's download, into memory);
    (seconds, the bytes)."""
    from mwcluster.wire.protocol import Op

    started = time.perf_counter()
    txid, _epoch, _digest, size, _created = link.call(Op.SNAPSHOT_INFO, [])
    data = bytearray(size)
    for at, piece in link.chunks(txid, size, chunk, credit):
        data[at:at + len(piece)] = piece
    seconds = time.perf_counter() - started
    return seconds, bytes(data)


def snapshot_phase(master: MasterProcess, creds, expected: bytes, transfers: int,
                   work: Path) -> dict:
    import zmq

    from mwcluster.config import CHECKPOINT_BY_NAME
    from mwcluster.nodes.checkpoint.link import MasterLink
    from mwcluster.wire.protocol import Op

    chunk = CHECKPOINT_BY_NAME["snapshot_chunk_bytes"].default
    credit = CHECKPOINT_BY_NAME["snapshot_credit"].default
    ctx = zmq.Context()
    link = MasterLink(ctx, master.client_endpoint, 60.0, credentials=creds)
    try:
        link.call(Op.PING, [])               # connected (and the handshake done) first
        rates = []
        for n in range(transfers):
            seconds, data = transfer(link, chunk, credit)
            if n == 0 and data != expected:
                raise RuntimeError("the transferred snapshot differs from the file")
            rates.append(len(data) / seconds / 1e6)
        started = time.perf_counter()
        link.load_master_snapshot(work, chunk, credit)
        load_s = time.perf_counter() - started
    finally:
        link.close()
        ctx.term()
    return {"mb": len(expected) / 1e6, "rates": rates, "mb_per_s": statistics.median(rates),
            "load_s": load_s, "chunk": chunk, "credit": credit}


# --- a round --------------------------------------------------------------------------------

def put_load(master: MasterProcess, keys: ClusterKeys | None, args, batch: int,
             ops: int) -> dict:
    creds = {"key_file": str(keys.secret("client")),
             "server_key": str(keys.public("server"))} if keys else {}
    result = run(BenchConfig(master=master.client_endpoint, clients=args.clients,
                             inflight=args.inflight, ops=ops, batch=batch,
                             durability="async", max_seconds=args.max_seconds, **creds))
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} errors in a {batch}-per-message run "
                           f"against the {'CURVE' if keys else 'plain'} master")
    return result


def one_master(kind: str, args, root: Path, seed: Path, expected: bytes, keys: ClusterKeys,
               n: int) -> dict:
    data_dir = root / f"m{n}"
    shutil.copytree(seed, data_dir)
    secured = keys if kind == "CURVE" else None
    try:
        with MasterProcess(data_dir, keys=secured, start_timeout_s=120.0) as master:
            snap = snapshot_phase(master, keys.credentials("server") if secured else None,
                                  expected, args.transfers, root / f"load{n}")
            loads = {"unbatched": put_load(master, secured, args, 1, args.unbatched_ops),
                     "batched": put_load(master, secured, args, args.batch,
                                         args.batched_ops)}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(root / f"load{n}", ignore_errors=True)
    return {"snapshot": snap, **loads}


def run_all(args, root: Path) -> list[dict]:
    keys = ClusterKeys(root / "keys")
    seed = root / "seed"
    started = time.perf_counter()
    snapshot_file = make_seed(seed, args.snapshot_keys, args.snapshot_value_bytes)
    expected = snapshot_file.read_bytes()
    print(f"snapshot of {args.snapshot_keys:,} keys: {len(expected) / 1e6:.1f} MB, made in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    rounds = []
    n = 0
    for r in range(args.rounds):
        order = KINDS if r % 2 == 0 else KINDS[::-1]
        row = {}
        for kind in order:
            n += 1
            row[kind] = out = one_master(kind, args, root, seed, expected, keys, n)
            s = out["snapshot"]
            print(f"round {r + 1}, {kind}: snapshot {s['mb_per_s']:,.0f} MB/s, node load "
                  f"{s['load_s']:.2f} s; " + "; ".join(
                      f"{load} {out[load]['ops_per_s']:,.0f} ops/s, p50 "
                      f"{out[load]['p50_ms']:.2f} ms, p99 {out[load]['p99_ms']:.2f} ms"
                      for load in LOADS), flush=True)
        row["order"] = order
        rounds.append(row)
    return rounds


# --- the report -----------------------------------------------------------------------------

def ms(value: float) -> str:
    return f"{value:.2f} ms"


def median_of(rounds: list[dict], kind: str, load: str, field: str) -> float:
    return statistics.median(r[kind][load][field] for r in rounds)


def ratio(rounds: list[dict], part: str, field: str) -> float:
    """The median over the rounds of CURVE / plain (`part`: a load, or "snapshot")."""
    return statistics.median(r["CURVE"][part][field] / r["plain"][part][field]
                             for r in rounds)


def tables(rounds: list[dict], args) -> list[str]:
    lines = [f"Puts ({args.clients} client processes x {args.inflight} async PUTs in "
             f"flight; unbatched: {args.unbatched_ops:,} requests, one per message; batched: "
             f"{args.batched_ops:,} requests in BATCH messages of {args.batch}), each run:",
             "", HEAD_RUNS, "|---" * 8 + "|"]
    for i, r in enumerate(rounds, 1):
        for kind in r["order"]:
            for load in LOADS:
                x = r[kind][load]
                lines.append(f"| {i} | {kind} | {load} | {x['completed']:,} | "
                             f"{x['ops_per_s']:,.0f} | {ms(x['p50_ms'])} | {ms(x['p99_ms'])} "
                             f"| {x['errors']} |")
    lines += ["", f"Medians over the {len(rounds)} round(s); CURVE / plain is the median of "
              "the per-round ratios of ops/s:", "", HEAD_PUTS, "|---" * 8 + "|"]
    for load in LOADS:
        lines.append(
            f"| {load} | {median_of(rounds, 'plain', load, 'ops_per_s'):,.0f} | "
            f"{median_of(rounds, 'CURVE', load, 'ops_per_s'):,.0f} | "
            f"{ratio(rounds, load, 'ops_per_s'):.2f} | "
            f"{ms(median_of(rounds, 'plain', load, 'p50_ms'))} | "
            f"{ms(median_of(rounds, 'CURVE', load, 'p50_ms'))} | "
            f"{ms(median_of(rounds, 'plain', load, 'p99_ms'))} | "
            f"{ms(median_of(rounds, 'CURVE', load, 'p99_ms'))} |")
    batched = ratio(rounds, "batched", "ops_per_s")
    lines += ["", f"Target: CURVE at least {TARGET:.0%} of plain with batching; measured "
              f"{batched:.0%} ({'met' if batched >= TARGET else 'not met'} in this run)."]
    snap = rounds[0]["plain"]["snapshot"]
    lines += ["", f"Snapshot transfer ({snap['mb']:.1f} MB, chunks of {snap['chunk']:,} bytes, "
              f"{snap['credit']} in flight), each run:", "", HEAD_SNAPSHOT_RUNS,
              "|---" * 5 + "|"]
    for i, r in enumerate(rounds, 1):
        for kind in r["order"]:
            s = r[kind]["snapshot"]
            lines.append(f"| {i} | {kind} | {s['mb']:.1f} | "
                         + ", ".join(f"{x:,.0f}" for x in s["rates"])
                         + f" | {s['load_s']:.2f} |")
    med = {kind: (statistics.median(r[kind]["snapshot"]["mb_per_s"] for r in rounds),
                  statistics.median(r[kind]["snapshot"]["load_s"] for r in rounds))
           for kind in KINDS}
    lines += ["", f"Medians over the {len(rounds)} round(s):", "", HEAD_SNAPSHOT,
              "|---" * 4 + "|",
              f"| transfer MB/s | {med['plain'][0]:,.0f} | {med['CURVE'][0]:,.0f} | "
              f"{ratio(rounds, 'snapshot', 'mb_per_s'):.2f} |",
              f"| node load s | {med['plain'][1]:.2f} | {med['CURVE'][1]:.2f} | "
              f"{ratio(rounds, 'snapshot', 'load_s'):.2f} |"]
    return lines


def command(args) -> str:
    parts = ["python benchmarks/bench_security.py"]
    if args.quick:
        parts.append("--quick")
    else:
        parts += [f"--rounds {args.rounds}", f"--clients {args.clients}",
                  f"--inflight {args.inflight}", f"--batch {args.batch}",
                  f"--unbatched-ops {args.unbatched_ops}", f"--batched-ops {args.batched_ops}",
                  f"--snapshot-keys {args.snapshot_keys}",
                  f"--snapshot-value-bytes {args.snapshot_value_bytes}",
                  f"--transfers {args.transfers}", f"--max-seconds {args.max_seconds:g}"]
    return " ".join(parts + ["--record"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of (plain, CURVE), the order alternated")
    ap.add_argument("--clients", type=int, default=2, help="bench client processes")
    ap.add_argument("--inflight", type=int, default=256, help="requests in flight per client")
    ap.add_argument("--batch", type=int, default=64, help="requests per BATCH when batched")
    ap.add_argument("--unbatched-ops", type=int, default=60_000)
    ap.add_argument("--batched-ops", type=int, default=300_000)
    ap.add_argument("--snapshot-keys", type=int, default=40_000)
    ap.add_argument("--snapshot-value-bytes", type=int, default=1000)
    ap.add_argument("--transfers", type=int, default=3,
                    help="timed snapshot transfers per master")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="every put run stops after this long at the latest")
    args = common.parse_run_options(ap, QUICK)
    if min(args.rounds, args.clients, args.inflight, args.transfers, args.snapshot_keys,
           args.snapshot_value_bytes) < 1 or not 2 <= args.batch <= 1000 or \
            args.unbatched_ops < args.clients or args.batched_ops < args.clients or \
            args.snapshot_keys > 1_000_000 or args.snapshot_value_bytes > 1 << 20 or \
            args.max_seconds <= 0:
        ap.error("counts must be at least 1 (ops at least --clients), --batch within "
                 "2..1000, --snapshot-keys at most 1,000,000, --max-seconds positive")
    rounds, body, load = common.measured("bench-security-", run_all, args,
                                         lambda rounds: tables(rounds, args))
    if not args.record:
        return
    setup = [
        "Plain against CURVE, alternated in one run: each round starts a plain master and a "
        "CURVE master (async durability, 127.0.0.1, the order alternating from round to "
        "round), each on a copy of one data directory holding a snapshot, and measures "
        "against it: the snapshot transfer, then unbatched puts, then batched puts "
        "(benchmarks/bench_security.py says exactly how). The clients (mwcluster.client.bench "
        "processes, the snapshot's MasterLink) and the master share the machine's "
        f"{os.cpu_count()} cores. The snapshot transfer is SNAPSHOT_INFO and every "
        "SNAPSHOT_CHUNK through MasterLink into memory, after a PING (the handshake is not "
        "timed); \"node load\" is one MasterLink.load_master_snapshot: that transfer into a "
        "file, its checksums and the load of the state, what a joining checkpoint node "
        "spends.", ""]
    common.record_run(args, SECTION, command(args), setup + body + ["", load])


if __name__ == "__main__":
    main()
