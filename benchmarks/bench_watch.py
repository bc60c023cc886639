"""Watches and leases against one master (mwcluster.testing.MasterProcess, async durability,
random ports of 127.0.0.1, a temporary data directory), all in one run:

- writes with 0 watchers (the baseline), then with each count of --watchers, every watcher
  on a prefix of its own (/watch/0000/, /watch/0001/...): one writer process puts
  `{"t": time.time()}` through `Client.pipeline(window=--window)` to keys spread evenly
  over those prefixes (the baseline: over as many prefixes as the largest count), bounded
  by --writes and --max-seconds. Each watcher is a thread with its own Client and one
  `Client.watch(prefix)` long-polling (one WATCH in flight); the threads are spread over
  up to --watcher-procs processes (spawn), and the writer starts only once the master
  says every watch is waiting (`watches_waiting`). Reported: writes/s and its ratio to the
  baseline of this run, events the watchers received per second (from the writer's first
  put to the last event received), received / written, the write-to-event latency p50 and
  p99 (time.time() on receipt minus the value: one machine, one clock), events per WATCH
  answer, and the master's CPU per write (status `cpu_s`, until every event was answered);
- lease keepalives: --keepalive-clients processes each granting a lease and looping
  `keepalive_once` on it for --keepalive-seconds; keepalives/s in all, the round trip p50
  and p99, and the master's CPU per keepalive (status `cpu_s` over `lease_keepalives`).

Everything shares the machine's cores (master, writer, watcher processes).

    python benchmarks/bench_watch.py [--watchers 1,100,1000] [--writes 20000]
                                     [--window 64] [--keepalive-clients 3]
                                     [--keepalive-seconds 10] [--record]

Every process started is stopped at the end of its phase (terminated if it does not
exit). The figures go to docs/benchmarks.md, section "watches and leases".
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (command_line, parse_run_options, percentile,  # noqa: E402
                               run_tables_record)
from mwcluster import Client  # noqa: E402
from mwcluster.testing import MasterProcess, wait_for  # noqa: E402

SECTION = "watches and leases"
KEYS = 10_000            # distinct keys the writer cycles over, in all prefixes together
JOIN_S = 15.0            # for a child process to exit once told to


def prefix_of(i: int) -> str:
    return f"/watch/{i:04d}/"


# --- the child processes -------------------------------------------------------------------

def _watch_thread(endpoint: str, prefix: str, wait_s: float, deadline: float,
                  out: dict) -> None:
    from mwcluster.client.watching import Resync

    lat = array("d")
    events = resyncs = 0
    last = 0.0
    try:
        with Client(endpoint, timeout_s=wait_s + 15.0) as client:
            watch = client.watch(prefix, wait_s=wait_s)
            while time.monotonic() < deadline:
                batch = watch.poll()
                now = time.time()
                if isinstance(batch, Resync):
                    resyncs += 1
                    continue
                stop = False
                for event in batch:
                    value = event.value
                    if event.type != "put" or not isinstance(value, dict):
                        continue
                    if "stop" in value:
                        stop = True
                    else:
                        lat.append(now - value["t"])
                        events += 1
                        last = now
                if stop:
                    break
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which says it
        out["error"] = f"{prefix}: {type(exc).__name__}: {exc}"
    out.update(events=events, resyncs=resyncs, last=last, lat=lat)


def _watcher_proc(endpoint: str, prefixes: list[str], wait_s: float, max_s: float,
                  reports) -> None:
    import threading

    deadline = time.monotonic() + max_s
    outs = [{} for _ in prefixes]
    threads = [threading.Thread(target=_watch_thread, args=(endpoint, p, wait_s, deadline, o),
                                daemon=True) for p, o in zip(prefixes, outs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.1, deadline + wait_s + 5.0 - time.monotonic()))
    lat = array("d")
    for o in outs:
        lat.extend(o.get("lat", ()))
    reports.put({"events": sum(o.get("events", 0) for o in outs),
                 "resyncs": sum(o.get("resyncs", 0) for o in outs),
                 "last": max([o.get("last", 0.0) for o in outs] + [0.0]),
                 "unfinished": sum(t.is_alive() for t in threads),
                 "errors": [o["error"] for o in outs if "error" in o][:3],
                 "lat": lat.tobytes()})


def _writer_proc(endpoint: str, prefixes: int, writes: int, window: int, max_s: float,
                 ready, start, reports) -> None:
    with Client(endpoint, timeout_s=30.0) as client:
        client.ping()
        per_prefix = max(1, KEYS // prefixes)
        keys = [f"{prefix_of(i % prefixes)}k{(i // prefixes) % per_prefix:05d}"
                for i in range(min(writes, prefixes * per_prefix))]
        ready.put("writer")
        if not start.wait(120.0):
            reports.put({"error": "the writer was never started"})
            return
        began_wall, began = time.time(), time.perf_counter()
        deadline = began + max_s
        done = 0
        with client.pipeline(window) as p:
            while done < writes and time.perf_counter() < deadline:
                p.put(keys[done % len(keys)], {"t": time.time()})
                done += 1
                if done % 4096 == 0:
                    p.results()          # forget the futures: memory stays flat
            p.results()
        reports.put({"writes": done, "seconds": time.perf_counter() - began,
                     "began": began_wall})


def _keepalive_proc(endpoint: str, seconds: float, max_count: int, ready, start,
                    reports) -> None:
    with Client(endpoint, timeout_s=10.0) as client:
        lease = client.grant_lease(max(30.0, 3 * seconds))
        ready.put("keepalive")
        if not start.wait(120.0):
            reports.put({"error": "the keepalive client was never started"})
            return
        lat = array("d")
        began = time.perf_counter()
        deadline = began + seconds
        t0 = began
        while len(lat) < max_count and t0 < deadline:
            client.keepalive_once(lease)
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            t0 = t1
        took = t0 - began
        client.revoke_lease(lease)
        reports.put({"count": len(lat), "seconds": took, "lat": lat.tobytes()})


# --- the parent ----------------------------------------------------------------------------

class Children:
    """The processes of one phase; every one is stopped on leaving (terminated, then killed,
    when it does not exit by itself)."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.ready = self.ctx.Queue()
        self.reports = self.ctx.Queue()
        self.watch_reports = self.ctx.Queue()
        self.start = self.ctx.Event()
        self.procs: list = []

    def spawn(self, target, *args) -> None:
        proc = self.ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        self.procs.append(proc)

    def collect(self, q, count: int, timeout_s: float, what: str) -> list:
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count:
            try:
                out.append(q.get(timeout=max(0.05, min(1.0, deadline - time.monotonic()))))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(out)} of {count} {what} within "
                                       f"{timeout_s:.0f} s") from None
                dead = [p for p in self.procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a child process exited with {dead[0].exitcode} "
                                       f"while waiting for {what}") from None
        errors = [r["error"] for r in out if isinstance(r, dict) and "error" in r]
        if errors:
            raise RuntimeError(f"{what}: {errors[0]}")
        return out

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.join(JOIN_S if exc[0] is None else 0.1)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)


def reached(condition, timeout_s: float, what: str) -> bool:
    try:
        wait_for(condition, timeout_s, what)
    except AssertionError:
        return False
    return True


def coordination(client: Client) -> dict:
    status = client.status()
    return {**status["coordination"], "cpu_s": status["cpu_s"], "txid": status["txid"]}


def watch_phase(master: MasterProcess, client: Client, watchers: int, args) -> dict:
    endpoint = master.client_endpoint
    prefixes = watchers or max(args.watchers)
    procs = min(args.watcher_procs, watchers)
    notes = []
    with Children() as kids:
        for k in range(procs):
            mine = [prefix_of(i) for i in range(k, watchers, procs)]
            kids.spawn(_watcher_proc, endpoint, mine, args.wait_s,
                       args.max_seconds + args.startup_s + 30.0, kids.watch_reports)
        kids.spawn(_writer_proc, endpoint, prefixes, args.writes, args.window,
                   args.max_seconds, kids.ready, kids.start, kids.reports)
        kids.collect(kids.ready, 1, args.startup_s, "writer ready")
        if not reached(lambda: client.status()["coordination"]["watches_waiting"] >= watchers,
                       args.startup_s, f"{watchers} watches waiting"):
            notes.append(f"only {client.status()['coordination']['watches_waiting']} of "
                         f"{watchers} watches were waiting when the writer started")
        before = coordination(client)
        kids.start.set()
        writer = kids.collect(kids.reports, 1, args.max_seconds + 60.0, "the writer's report")
        writer = writer[0]
        if watchers and not reached(
                lambda: client.status()["coordination"]["watch_events"]
                - before["watch_events"] >= writer["writes"], args.drain_s,
                "every event answered"):
            notes.append("not every event was answered within "
                         f"{args.drain_s:g} s of the last write")
        after = coordination(client)
        for i in range(watchers):            # wake every watcher with its stop marker
            client.put(f"{prefix_of(i)}stop", {"stop": True})
        reports = kids.collect(kids.watch_reports, procs, args.wait_s + 60.0,
                               "watcher processes' reports")
    lat = array("d")
    for r in reports:
        lat.frombytes(r["lat"])
    events = len(lat)
    last = max([r["last"] for r in reports] + [0.0])
    unfinished = sum(r["unfinished"] for r in reports)
    resyncs = sum(r["resyncs"] for r in reports)
    errors = [e for r in reports for e in r["errors"]]
    if unfinished:
        notes.append(f"{unfinished} watcher threads had not ended")
    if resyncs:
        notes.append(f"{resyncs} resyncs")
    if errors:
        notes.append(f"watcher errors: {'; '.join(errors[:2])}")
    answers = after["watch_answers"] - before["watch_answers"]
    delivered = after["watch_events"] - before["watch_events"]
    lat_ms = [x * 1000 for x in lat]
    return {"watchers": watchers, "procs": procs, "prefixes": prefixes,
            "writes": writer["writes"], "writes_s": writer["writes"] / writer["seconds"],
            "events": events,
            "events_s": events / (last - writer["began"]) if events else None,
            "p50_ms": percentile(lat_ms, 50) if events else None,
            "p99_ms": percentile(lat_ms, 99) if events else None,
            "per_answer": delivered / answers if answers else None,
            "cpu_us": 1e6 * (after["cpu_s"] - before["cpu_s"]) / max(1, writer["writes"]),
            "notes": notes}


def lease_phase(master: MasterProcess, client: Client, args) -> dict:
    endpoint = master.client_endpoint
    with Children() as kids:
        for _ in range(args.keepalive_clients):
            kids.spawn(_keepalive_proc, endpoint, args.keepalive_seconds,
                       args.keepalive_max, kids.ready, kids.start, kids.reports)
        kids.collect(kids.ready, args.keepalive_clients, args.startup_s,
                     "keepalive clients ready")
        before = coordination(client)
        kids.start.set()
        reports = kids.collect(kids.reports, args.keepalive_clients,
                               args.keepalive_seconds + 60.0, "keepalive reports")
        after = coordination(client)
    lat = array("d")
    for r in reports:
        lat.frombytes(r["lat"])
    count = sum(r["count"] for r in reports)
    counted = after["lease_keepalives"] - before["lease_keepalives"]
    lat_ms = [x * 1000 for x in lat]
    return {"clients": args.keepalive_clients, "count": count,
            "rate": count / max(r["seconds"] for r in reports),
            "p50_ms": percentile(lat_ms, 50), "p99_ms": percentile(lat_ms, 99),
            "counted": counted,
            "cpu_us": 1e6 * (after["cpu_s"] - before["cpu_s"]) / max(1, counted)}


def run_all(args, tmp: Path) -> dict:
    phases = []
    with MasterProcess(tmp / "m", durability="async") as master, \
            Client(master.client_endpoint, timeout_s=10.0) as client:
        max_watches = client.status()["coordination"]["max_watches"]
        for watchers in [0] + args.watchers:
            phases.append(watch_phase(master, client, watchers, args))
            print({"watchers": watchers, "done": True}, file=sys.stderr, flush=True)
        leases = lease_phase(master, client, args)
    return {"phases": phases, "leases": leases, "max_watches": max_watches}


def _f(value, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def tables(result: dict, args) -> list[str]:
    phases, leases = result["phases"], result["leases"]
    base = phases[0]["writes_s"]
    lines = [
        f"One master (async durability), one run. Writes: one writer process, "
        f"`Client.pipeline(window={args.window})`, up to {args.writes:,} puts of "
        f"`{{\"t\": time.time()}}` per row over {KEYS:,} keys spread evenly over the "
        "prefixes (/watch/NNNN/). Watchers: one thread, Client and `Client.watch(prefix, "
        f"wait_s={args.wait_s:g})` per prefix, spread over up to {args.watcher_procs} "
        "processes, all waiting before the first write (master's max_watches: "
        f"{result['max_watches']:,}). Latency: time.time() on receipt minus the value "
        "(the watch waits for what is durable). Master CPU from its status `cpu_s`, until "
        "every event was answered. Everything shares the machine's cores.", "",
        "| watchers | processes | writes | writes/s | / 0 watchers | events/s | received / "
        "written | latency p50 ms | latency p99 ms | events per answer | master CPU us per "
        "write |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in phases:
        received = f"{p['events'] / p['writes']:.3f}" if p["watchers"] else "-"
        lines.append(f"| {p['watchers']:,} | {p['procs']} | {p['writes']:,} | "
                     f"{_f(p['writes_s'])} | {p['writes_s'] / base:.2f} | "
                     f"{_f(p['events_s'])} | {received} | {_f(p['p50_ms'], '.1f')} | "
                     f"{_f(p['p99_ms'], '.1f')} | {_f(p['per_answer'], '.1f')} | "
                     f"{p['cpu_us']:.1f} |")
    lines += ["", f"Lease keepalives: {leases['clients']} client processes, each "
              f"`keepalive_once` on its own lease in a loop for {args.keepalive_seconds:g} s "
              "(one round trip in flight each).", "",
              "| clients | keepalives | keepalives/s | round trip p50 ms | round trip p99 ms "
              "| master CPU us per keepalive |", "|---|---|---|---|---|---|",
              f"| {leases['clients']} | {leases['count']:,} | {_f(leases['rate'])} | "
              f"{leases['p50_ms']:.3f} | {leases['p99_ms']:.3f} | {leases['cpu_us']:.1f} |"]
    notes = [f"- {p['watchers']} watchers: {n}" for p in phases for n in p["notes"]]
    if leases["counted"] != leases["count"]:
        notes.append(f"- the master counted {leases['counted']:,} keepalives, the clients "
                     f"{leases['count']:,}")
    if notes:
        lines += ["", "Notes:", ""] + notes
    return lines


def command(args) -> str:
    return command_line("bench_watch.py", args, ["watchers", "writes", "window",
                                                 "watcher_procs", "wait_s",
                                                 "keepalive_clients", "keepalive_seconds",
                                                 "max_seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--watchers", default="1,100,1000",
                    type=lambda t: [int(x) for x in t.split(",")],
                    help="watcher counts after the 0-watcher baseline")
    ap.add_argument("--writes", type=int, default=20_000, help="puts per row, at most")
    ap.add_argument("--window", type=int, default=64, help="the writer's pipeline window")
    ap.add_argument("--watcher-procs", type=int, default=4,
                    help="processes the watcher threads are spread over, at most")
    ap.add_argument("--wait-s", type=float, default=20.0, help="each WATCH's wait")
    ap.add_argument("--keepalive-clients", type=int, default=3)
    ap.add_argument("--keepalive-seconds", type=float, default=10.0)
    ap.add_argument("--keepalive-max", type=int, default=1_000_000,
                    help="keepalives per client, at most")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="per writer row")
    ap.add_argument("--startup-s", type=float, default=60.0,
                    help="for the children to connect and every watch to wait")
    ap.add_argument("--drain-s", type=float, default=30.0,
                    help="after the last write, for every event to be answered")
    args = parse_run_options(ap, {"watchers": [1, 3], "writes": 300, "watcher_procs": 2,
                                  "wait_s": 5.0, "keepalive_clients": 2,
                                  "keepalive_seconds": 1.0, "max_seconds": 10.0})
    if any(n < 1 for n in args.watchers):
        ap.error("--watchers: counts of at least 1 (the 0-watcher baseline always runs)")
    run_tables_record(args, "bench-watch-", run_all, tables, SECTION, command)


if __name__ == "__main__":
    main()
