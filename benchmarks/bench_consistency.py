"""The cost of the consistency barrier: with `sync` durability a "strong" reply (a read, a
refusal, a success) waits until every record applied before it is fsynced; "fast" answers
reads from memory at once. Real processes on 127.0.0.1, all in one run on one master.

    python benchmarks/bench_consistency.py [--phase-s 4] [--idle-s 2] [--rounds 2]
                                           [--writers 1] [--readers 2] [--writer-window 16]
                                           [--keys 1000] [--put-fraction 0.1]
                                           [--max-ops 1000000] [--record]

Set-up: one master started with `--durability sync` (MasterProcess, a temporary data
directory); `--writers` + `--readers` client processes (multiprocessing, spawn), each with
its own Client (durability "sync"), kept for the whole run and told what to do phase by
phase; the keys /w/0 .. /w/KEYS-1 are written before the first phase. A phase runs
`--phase-s` seconds (`--idle-s` for part 2), every process starting at the same instant, and
stops early at `--max-ops` operations per process. Readers and the mix do one request at a
time (latency: from the call to its result, per request, over the merged samples of all
processes); writers keep `--writer-window` sync PUTs in flight (a pipeline) on /w/*.

1. Reads under write load: writers running, readers GET random /w/* keys with consistency
   strong, then fast, alternated `--rounds` times (strong, fast, strong, fast...) so that
   drift on a shared machine shows; readers' gets/s, p50, p99, and the writers' puts/s.
2. Reads on an idle master (no writers): strong vs fast, alternated likewise.
3. A mix: every process does 90% GETs and 10% sync PUTs (`--put-fraction`) on /w/*, one at a
   time, with a Client whose consistency is strong, then fast.
4. Reads from the standby: a checkpoint node is started following the master (no checkpoint
   during the run); with the writers running, readers read from the master (strong), then
   with `read_from="standby"`, alternated; how many reads the standby served and how many
   fell back to the master (`client.standby.served` / `.fallbacks`).

Without --record the tables are only printed; with it they go to docs/benchmarks.md (section
"consistency barrier"). Not a test: nothing is asserted about the figures. Every loop is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import random
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import measured, percentile, record_section  # noqa: E402
from mwcluster import Client  # noqa: E402
from mwcluster.testing import MasterProcess, wait_for  # noqa: E402
from mwcluster.testing.checkpoint import CheckpointProcess  # noqa: E402

SECTION = "consistency barrier"
KEY = "/w/{}"
START_DELAY_S = 0.3        # commands go out, then every process starts at the same instant
WRITER_TAIL_S = 0.2        # writers go on a little after the readers stop (load to the end)
COMMAND_WAIT_S = 600.0     # a client process waiting longer for its next command exits
REPORT_SLACK_S = 60.0      # how long after a phase's end its reports may come
MAX_COMMANDS = 10_000

# the tables' headers (the smoke test looks for them)
HEAD_LOAD = ("| phase | reads | reader gets/s | get p50 | get p99 | writer puts/s "
             "| fsyncs/s |")
HEAD_IDLE = "| phase | reads | gets/s | get p50 | get p99 |"
HEAD_MIX = ("| phase | consistency | ops/s | p50 | p99 | get p50 | get p99 | put p50 "
            "| put p99 |")
HEAD_STANDBY = ("| phase | readers on | reader gets/s | get p50 | get p99 | served by the "
                "standby | fell back to the master | writer puts/s |")


# --- the client processes ------------------------------------------------------------------

def client_main(index: int, endpoint: str, commands, reports) -> None:
    """One client process: a Client kept for the run, then one command per phase."""
    try:
        with Client(endpoint, timeout_s=10, durability="sync") as client:
            client.ping()
            reports.put({"index": index, "ready": True})
            for _ in range(MAX_COMMANDS):
                try:
                    cmd = commands.get(timeout=COMMAND_WAIT_S)
                except queue.Empty:
                    return
                if cmd is None:
                    return
                try:
                    out = run_command(client, endpoint, cmd)
                except Exception as exc:       # reported to the parent, which fails the run
                    out = {"error": f"{type(exc).__name__}: {exc}"}
                reports.put({"index": index, **out})
    except Exception as exc:
        reports.put({"index": index, "error": f"{type(exc).__name__}: {exc}"})


def run_command(client: Client, endpoint: str, cmd: dict) -> dict:
    rng = random.Random(cmd["seed"])
    pause = cmd["start_at"] - time.monotonic()
    if pause > 0:
        time.sleep(pause)        # the agreed start instant, not a synchronisation
    role = cmd["role"]
    if role == "writer":
        return write_loop(client, cmd, rng)
    if role == "reader":
        if cmd.get("standby"):
            with Client(endpoint, timeout_s=10, durability="sync", read_from="standby",
                        standby=cmd["standby"]) as reader:
                out = read_loop(reader, cmd, rng)
                out["served"], out["fallbacks"] = reader.standby.served, reader.standby.fallbacks
            return out
        return read_loop(client, cmd, rng)
    if role == "mix":
        with Client(endpoint, timeout_s=10, durability="sync",
                    consistency=cmd["consistency"]) as mixer:
            return mix_loop(mixer, cmd, rng)
    raise ValueError(f"unknown role {role!r}")


def read_loop(client: Client, cmd: dict, rng: random.Random) -> dict:
    keys, max_ops, consistency = cmd["keys"], cmd["max_ops"], cmd["consistency"]
    lat = array("d")
    missing = 0
    clock = time.perf_counter
    started = clock()
    end = started + cmd["duration_s"]
    now = started
    while now < end and len(lat) < max_ops:
        key = KEY.format(rng.randrange(keys))
        t0 = clock()
        if client.get(key, consistency=consistency) is None:
            missing += 1
        now = clock()
        lat.append((now - t0) * 1000)
    return {"role": "reader", "ops": len(lat), "seconds": now - started,
            "lat_ms": lat.tobytes(), "missing": missing}


def write_loop(client: Client, cmd: dict, rng: random.Random) -> dict:
    keys, max_ops, window = cmd["keys"], cmd["max_ops"], cmd["window"]
    chunk = 4 * window
    clock = time.perf_counter
    started = clock()
    end = started + cmd["duration_s"]
    stop = end + WRITER_TAIL_S
    in_window = done = 0
    now = started
    while now < stop and done < max_ops:
        with client.pipeline(window=window) as p:
            for _ in range(min(chunk, max_ops - done)):
                p.put(KEY.format(rng.randrange(keys)), done)
        done += len(p.results())      # raises the first error
        now = clock()
        if now <= end:
            in_window = done
    return {"role": "writer", "ops": in_window, "seconds": min(now, end) - started}


def mix_loop(client: Client, cmd: dict, rng: random.Random) -> dict:
    keys, max_ops, put_fraction = cmd["keys"], cmd["max_ops"], cmd["put_fraction"]
    gets, puts = array("d"), array("d")
    clock = time.perf_counter
    started = clock()
    end = started + cmd["duration_s"]
    now = started
    n = 0
    while now < end and n < max_ops:
        key = KEY.format(rng.randrange(keys))
        t0 = clock()
        if rng.random() < put_fraction:
            client.put(key, n)
            now = clock()
            puts.append((now - t0) * 1000)
        else:
            client.get(key)
            now = clock()
            gets.append((now - t0) * 1000)
        n += 1
    return {"role": "mix", "ops": n, "seconds": now - started, "lat_ms": gets.tobytes(),
            "put_lat_ms": puts.tobytes()}


class ClientPool:
    """The client processes of the run: started once, each told its command per phase."""

    def __init__(self, endpoint: str, count: int):
        ctx = mp.get_context("spawn")
        self.reports = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(count)]
        self.procs = [ctx.Process(target=client_main, args=(i, endpoint, q, self.reports),
                                  name=f"bench-consistency-{i}", daemon=True)
                      for i, q in enumerate(self.commands)]
        for proc in self.procs:
            proc.start()
        self._collect(count, 60.0, "the client processes to connect")

    def _collect(self, count: int, timeout_s: float, what: str) -> list[dict]:
        out: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count:
            left = deadline - time.monotonic()
            try:
                report = self.reports.get(timeout=max(0.05, left))
            except queue.Empty:
                if left <= 0:
                    raise RuntimeError(f"no report within {timeout_s:.0f} s: {what}") from None
                continue
            if "error" in report:
                raise RuntimeError(f"client process {report['index']} failed: "
                                   f"{report['error']}")
            out.append(report)
        return out

    def run(self, assignments: dict[int, dict], duration_s: float, seed: int) -> list[dict]:
        start_at = time.monotonic() + START_DELAY_S
        for index, cmd in assignments.items():
            self.commands[index].put({**cmd, "start_at": start_at, "duration_s": duration_s,
                                      "seed": seed * 1000 + index})
        return self._collect(len(assignments),
                             START_DELAY_S + duration_s + WRITER_TAIL_S + REPORT_SLACK_S,
                             "a phase's client reports")

    def close(self) -> None:
        for q in self.commands:
            q.put(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(10)


# --- the phases ----------------------------------------------------------------------------

def merged(reports: list[dict], role: str, field: str = "lat_ms") -> list[float]:
    out = array("d")
    for r in reports:
        if r["role"] == role:
            out.frombytes(r[field])
    return list(out)


def rate(reports: list[dict], role: str) -> float:
    """Operations per second of all processes in `role` (each over its own measured time)."""
    return sum(r["ops"] / r["seconds"] for r in reports if r["role"] == role and r["seconds"])


def phase(pool: ClientPool, admin: Client, assignments: dict[int, dict], duration_s: float,
          seed: int) -> dict:
    before = admin.status()
    reports = pool.run(assignments, duration_s, seed)
    after = admin.status()
    gets = merged(reports, "reader") + merged(reports, "mix")
    puts = merged(reports, "mix", "put_lat_ms")
    missing = sum(r.get("missing", 0) for r in reports)
    if missing:
        raise RuntimeError(f"{missing} GETs found no value on keys written before the run")
    return {
        "reads_per_s": rate(reports, "reader"), "writes_per_s": rate(reports, "writer"),
        "mix_per_s": rate(reports, "mix"),
        "get_p50": percentile(gets, 50), "get_p99": percentile(gets, 99),
        "put_p50": percentile(puts, 50), "put_p99": percentile(puts, 99),
        "all_p50": percentile(gets + puts, 50), "all_p99": percentile(gets + puts, 99),
        "gets": len(gets), "puts": len(puts),
        "fsyncs_per_s": (after["fsyncs"] - before["fsyncs"]) / duration_s,
        "served": sum(r.get("served", 0) for r in reports),
        "fallbacks": sum(r.get("fallbacks", 0) for r in reports),
    }


def settle(admin: Client) -> None:
    """Wait until the master has nothing pending (every applied record fsynced)."""
    def idle() -> bool:
        s = admin.status()
        return s["durable_txid"] == s["txid"] and s["parked_sync_replies"] == 0
    wait_for(idle, 30, "the master's journal to be durable")


def alternate(rounds: int, first: str, second: str) -> list[str]:
    return [name for _ in range(rounds) for name in (first, second)]


def run_all(args, root: Path) -> dict:
    writers = list(range(args.writers))
    readers = list(range(args.writers, args.writers + args.readers))
    common = {"keys": args.keys, "max_ops": args.max_ops}
    writer_cmd = {**common, "role": "writer", "window": args.writer_window}
    results: dict = {"load": [], "idle": [], "mix": [], "standby": []}
    seed = 0
    with MasterProcess(root / "m", durability="sync") as master:
        with Client(master.client_endpoint, timeout_s=10, durability="sync") as admin:
            with admin.pipeline(window=64) as p:
                for i in range(args.keys):
                    p.put(KEY.format(i), i)
            pool = ClientPool(master.client_endpoint, args.writers + args.readers)
            try:
                # 1. reads under write load
                for consistency in alternate(args.rounds, "strong", "fast"):
                    seed += 1
                    cmds = {i: writer_cmd for i in writers}
                    cmds.update({i: {**common, "role": "reader", "consistency": consistency}
                                 for i in readers})
                    row = phase(pool, admin, cmds, args.phase_s, seed)
                    results["load"].append({"name": consistency, **row})
                    print(f"under write load, {consistency} reads: "
                          f"{row['reads_per_s']:,.0f} gets/s, p50 {row['get_p50']:.3f} ms, "
                          f"p99 {row['get_p99']:.3f} ms; writers {row['writes_per_s']:,.0f} "
                          f"puts/s", flush=True)
                # 2. reads on an idle master
                settle(admin)
                for consistency in alternate(args.rounds, "strong", "fast"):
                    seed += 1
                    cmds = {i: {**common, "role": "reader", "consistency": consistency}
                            for i in readers}
                    row = phase(pool, admin, cmds, args.idle_s, seed)
                    results["idle"].append({"name": consistency, **row})
                    print(f"idle master, {consistency} reads: {row['reads_per_s']:,.0f} "
                          f"gets/s, p50 {row['get_p50']:.3f} ms, p99 {row['get_p99']:.3f} ms",
                          flush=True)
                # 3. the 90/10 mix
                for consistency in alternate(args.rounds, "strong", "fast"):
                    seed += 1
                    cmds = {i: {**common, "role": "mix", "consistency": consistency,
                                "put_fraction": args.put_fraction}
                            for i in writers + readers}
                    row = phase(pool, admin, cmds, args.phase_s, seed)
                    results["mix"].append({"name": consistency, **row})
                    print(f"mix, {consistency}: {row['mix_per_s']:,.0f} ops/s, p50 "
                          f"{row['all_p50']:.3f} ms, p99 {row['all_p99']:.3f} ms", flush=True)
                # 4. reads from the standby
                settle(admin)
                node = CheckpointProcess(root / "c", master, period_s=24 * 3600.0,
                                         txns=10**12)
                node.start()
                try:
                    txid = admin.status()["txid"]
                    wait_for(lambda: node.status()["replica_txid"] >= txid, 60,
                             "the checkpoint node caught up")
                    results["standby_caught_up_txid"] = txid
                    for where in alternate(args.rounds, "master", "standby"):
                        seed += 1
                        reader = {**common, "role": "reader", "consistency": "strong"}
                        if where == "standby":
                            reader["standby"] = node.status_endpoint
                        cmds = {i: writer_cmd for i in writers}
                        cmds.update({i: reader for i in readers})
                        row = phase(pool, admin, cmds, args.phase_s, seed)
                        results["standby"].append({"name": where, **row})
                        print(f"reads from the {where}: {row['reads_per_s']:,.0f} gets/s, "
                              f"p50 {row['get_p50']:.3f} ms, p99 {row['get_p99']:.3f} ms, "
                              f"standby served {row['served']:,}, fell back "
                              f"{row['fallbacks']:,}; writers {row['writes_per_s']:,.0f} "
                              "puts/s", flush=True)
                finally:
                    node.stop()
            finally:
                pool.close()
            results["master_status"] = admin.status()
    return results


# --- the report ----------------------------------------------------------------------------

def ms(value: float) -> str:
    return f"{value:.3f} ms"


def means(rows: list[dict], fields: tuple[str, ...]) -> str:
    """'name: mean of each field' for each phase name, in order of first appearance."""
    names = list(dict.fromkeys(row["name"] for row in rows))
    parts = []
    for name in names:
        mine = [row for row in rows if row["name"] == name]
        parts.append(f"{name} " + " / ".join(
            (f"{sum(r[f] for r in mine) / len(mine):,.0f}" if f.endswith("_per_s") else
             f"{sum(r[f] for r in mine) / len(mine):.3f}") for f in fields))
    return "; ".join(parts)


# Each part's table: (results key, title, header, the fields of a row after the phase and
# its name, what the mean line names, the fields it averages).
PARTS = (
    ("load", "1. Reads under write load (writers: sync PUTs; readers: GETs on the same keys):",
     HEAD_LOAD, ("reads_per_s", "get_p50", "get_p99", "writes_per_s", "fsyncs_per_s"),
     "gets/s / p50 ms / p99 ms / writer puts/s",
     ("reads_per_s", "get_p50", "get_p99", "writes_per_s")),
    ("idle", "2. Reads on an idle master (no writers):", HEAD_IDLE,
     ("reads_per_s", "get_p50", "get_p99"), "gets/s / p50 ms / p99 ms",
     ("reads_per_s", "get_p50", "get_p99")),
    ("mix", "3. The get/put mix (every process; puts are sync; latencies over all requests, "
     "then GETs and PUTs apart):", HEAD_MIX,
     ("mix_per_s", "all_p50", "all_p99", "get_p50", "get_p99", "put_p50", "put_p99"),
     "ops/s / p50 ms / p99 ms", ("mix_per_s", "all_p50", "all_p99")),
    ("standby", "4. Reads from the standby (a checkpoint node following; writers running; "
     "reads on the master are strong):", HEAD_STANDBY,
     ("reads_per_s", "get_p50", "get_p99", "served", "fallbacks", "writes_per_s"),
     "gets/s / p50 ms / p99 ms / writer puts/s",
     ("reads_per_s", "get_p50", "get_p99", "writes_per_s")),
)


def cell(field: str, value: float) -> str:
    if field.endswith("_per_s"):
        return f"{value:,.0f}"
    if field in ("served", "fallbacks"):
        return f"{value:,}"
    return ms(value)


def tables(results: dict) -> list[str]:
    lines: list[str] = []
    for key, title, head, fields, label, averaged in PARTS:
        if lines:
            lines.append("")
        lines += [title, "", head, "|---" * (len(fields) + 2) + "|"]
        for n, row in enumerate(results[key], 1):
            lines.append(f"| {n} | {row['name']} | " +
                         " | ".join(cell(f, row[f]) for f in fields) + " |")
        lines += ["", f"Mean over the rounds, {label}: " + means(results[key], averaged) + "."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase-s", type=float, default=4.0,
                    help="seconds per phase of parts 1, 3 and 4")
    ap.add_argument("--idle-s", type=float, default=2.0, help="seconds per phase of part 2")
    ap.add_argument("--rounds", type=int, default=2,
                    help="how many times each pair of phases is run, alternated")
    ap.add_argument("--writers", type=int, default=1, help="writer processes")
    ap.add_argument("--readers", type=int, default=2, help="reader processes")
    ap.add_argument("--writer-window", type=int, default=16,
                    help="sync PUTs each writer keeps in flight")
    ap.add_argument("--keys", type=int, default=1000, help="keys /w/0 .. /w/KEYS-1")
    ap.add_argument("--put-fraction", type=float, default=0.1, help="PUTs in the mix")
    ap.add_argument("--max-ops", type=int, default=1_000_000,
                    help="at most this many operations per process per phase")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if args.writers < 1 or args.readers < 1 or args.rounds < 1 or args.keys < 1 or \
            args.writer_window < 1 or args.max_ops < 1 or args.phase_s <= 0 or \
            args.idle_s <= 0 or not 0 <= args.put_fraction <= 1:
        ap.error("counts must be at least 1, durations positive, --put-fraction in [0, 1]")
    results, body, load = measured("bench-consistency-", run_all, args, tables)
    if not args.record:
        return
    procs = args.writers + args.readers
    status = results["master_status"]
    setup = [
        f"One master (`--durability sync`, a temporary directory on the machine's disk) and "
        f"{procs} client processes on the same {os.cpu_count()} cores: {args.writers} writer(s) "
        f"keeping {args.writer_window} sync PUTs in flight each (a pipeline), {args.readers} "
        f"reader(s) doing one GET at a time, each process with its own Client(durability="
        f"\"sync\"); in part 3 all {procs} processes run the mix ({1 - args.put_fraction:.0%} "
        f"GETs, {args.put_fraction:.0%} sync PUTs, one at a time, through a Client whose "
        f"`consistency` is that of the phase). Keys /w/0 .. /w/{args.keys - 1}, written "
        f"before the first phase; small integer values. Each phase runs {args.phase_s:g} s "
        f"({args.idle_s:g} s in part 2), every process starting at the same instant; phases "
        f"alternate ({args.rounds} rounds) so that drift on the shared machine shows. "
        f"Latencies are per request, from the call to its result, over the merged samples of "
        f"all processes; gets/s and puts/s add up the processes. fsyncs/s is the master's "
        f"`fsyncs` counter over the phase. For part 4 a checkpoint node (no checkpoint during "
        f"the run) started after part 3 and caught up to txid "
        f"{results['standby_caught_up_txid']:,} before its phases; the readers there write "
        f"nothing, so each standby read asks for the txid its client has seen (none) and is "
        f"answered from the replica at once. The master's fsync p50 / p99 at the end of the "
        f"run: {status['fsync_p50_ms']} / {status['fsync_p99_ms']} ms over "
        f"{status['fsyncs']:,} fsyncs.", ""]
    cmd = (f"python benchmarks/bench_consistency.py --phase-s {args.phase_s:g} --idle-s "
           f"{args.idle_s:g} --rounds {args.rounds} --writers {args.writers} --readers "
           f"{args.readers} --writer-window {args.writer_window} --keys {args.keys} "
           f"--put-fraction {args.put_fraction:g} --max-ops {args.max_ops} --record")
    record_section(SECTION, cmd, "\n".join(setup + body + ["", load]))


if __name__ == "__main__":
    main()
