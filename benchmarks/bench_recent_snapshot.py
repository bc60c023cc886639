"""What the table of recent requests adds to a snapshot: bytes, write time and load time of
a state image with a full table (limit 100,000, the default: 99,999 entries) against the same image
without one. Prints the figures and records them in docs/benchmarks.md (section "recent
requests in snapshots").

    python benchmarks/bench_recent_snapshot.py [--keys N] [--origins LIMIT] [--runs N] [--no-record]

The origins look like a client's: a random 16-byte client id (one of 64 clients), an
increasing request id, the txid, and a PUT's result (the key's version). Load times are the
median of `runs`; the machine's load average is stated, since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import record_section  # noqa: E402
from mwcluster.core import records as r  # noqa: E402
from mwcluster.core.recent import RecentRequests  # noqa: E402
from mwcluster.core.state import State  # noqa: E402
from mwcluster.engine import load_snapshot  # noqa: E402
from mwcluster.storage import snapshot as snapshots  # noqa: E402

VALUE = b"\xc4\x40" + b"v" * 64


def build(keys: int, limit: int) -> tuple[State, RecentRequests]:
    """`keys` keys, and a full table: `limit - 1` requests remembered, the most a table of
    that limit holds (its old generation of limit / 2, a young one just short of it)."""
    state = State()
    table = RecentRequests(limit)
    clients = [os.urandom(16) for _ in range(64)]
    count = max(keys, limit - 1)
    for txid in range(1, count + 1):
        result = state.apply(txid, r.Put(f"/datasets/part-{txid % keys:07d}", VALUE))
        if txid > count - (limit - 1):
            table.remember((clients[txid % 64], txid), txid, result)
    return state, table


def clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--origins", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    state, table = build(args.keys, args.origins)
    base = Path(tempfile.mkdtemp(prefix="mwcluster-recent-"))
    variants = (("without the table", None), ("with the table", table))
    times: dict[str, dict[str, list[float]]] = {n: {"write": [], "load": []} for n, _ in variants}
    sizes: dict[str, int] = {}
    restored: dict[str, int] = {}
    try:
        for _ in range(args.runs):            # the two variants alternate: same noise for both
            for name, recent in variants:
                directory = base / name.replace(" ", "-")
                shutil.rmtree(directory, ignore_errors=True)
                holder = {}
                times[name]["write"].append(clock(lambda: holder.setdefault(
                    "h", snapshots.write_snapshot(directory, state.txid, 1, state.digest,
                                                  state.image_chunks(recent), 0))))
                path = holder["h"].path
                sizes[name] = path.stat().st_size
                loaded = RecentRequests(args.origins)
                times[name]["load"].append(clock(lambda: load_snapshot(
                    path, loaded if recent is not None else None)))
                restored[name] = len(loaded)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows = [(name, sizes[name], statistics.median(times[name]["write"]),
             statistics.median(times[name]["load"]), restored[name]) for name, _ in variants]
    load_after = os.getloadavg()
    lines = ["| snapshot | size | write (median) | load (median) | requests restored |",
             "|---|---|---|---|---|"]
    for name, size, write_s, load_s, restored in rows:
        lines.append(f"| {name} | {size:,} bytes | {write_s * 1000:.0f} ms | "
                     f"{load_s * 1000:.0f} ms | {restored:,} |")
    (_, size0, write0, load0, _), (_, size1, write1, load1, restored) = rows
    body = (f"A state of {args.keys:,} keys at txid {state.txid:,}, and a full table of "
            f"recent requests: limit {args.origins:,}, {len(table):,} entries held (the most "
            "a table of that limit holds; it keeps between half and all). The table adds "
            f"{size1 - size0:,} bytes "
            f"({(size1 - size0) / max(1, len(table)):.1f} bytes per entry), "
            f"{(write1 - write0) * 1000:.0f} ms to the write and {(load1 - load0) * 1000:.0f} ms "
            f"to the load ({restored:,} entries restored). Median of {args.runs} runs; load "
            f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after (2 cores, shared "
            "with other work: the times are noisy).\n\n" + "\n".join(lines))
    print(body)
    if not args.no_record:
        record_section("recent requests in snapshots", "python benchmarks/"
                       "bench_recent_snapshot.py " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
    main()
