"""Instructions per request on the master's request path, counted by valgrind's callgrind:
a measure that does not move with the machine's speed from day to day, so two source trees
compare in one run even on a noisy machine.

    python benchmarks/bench_instructions.py [--compare-tree DIR] [--requests 3200] [--record]

What is counted (user-space instructions of one Python process, in-process, no sockets):
- `put`: Handlers.handle on PUT frames of 64-byte values over 10,000 keys, through
  testing.memory.MasterTwin (the handlers, the engine, the journal), one journal flush (write
  and fsync: the system calls' own work is the kernel's, not counted) per 64 requests, as a
  drain of 64;
- `get`: the same for GET frames of keys that exist (the 10,000 keys are put first);
- `floor`: what any server speaking this protocol does per request: unpack the frame (msgpack)
  to read its request id and pack an ok reply (benchmarks/peers.FloorServer's work without
  its socket calls).
Each figure is (count at 2N requests - count at N) / N, so start-up, imports and the set-up
cancel out. With --compare-tree the same is counted for another checkout of the project
(e.g. `git worktree add /tmp/before REV`), alternated with this one.

Needs valgrind (`apt-get install valgrind`). Figures go to docs/benchmarks.md, section
"instructions per request".
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import command_line, parse_run_options, record_run  # noqa: E402

SECTION = "instructions per request"
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("put", "get", "floor")

CHILD = r"""
import os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
kind, count = sys.argv[2], int(sys.argv[3])
import msgpack
from mwcluster.core.values import encode
from mwcluster.nodes.master.handlers import Drain
from mwcluster.testing.memory import MasterTwin
from mwcluster.wire.protocol import Op, encode_reply, encode_request
client_id, value = b"c" * 16, encode(b"v" * 64)
keys = [f"/bench/k{i:07d}" for i in range(10_000)]
total = int(sys.argv[4])
def frames(op, first):
    args = (lambda k: [k, value, None]) if op == Op.PUT else (lambda k: [k])
    return [encode_request(client_id, first + i, int(op), args(keys[i % 10_000]), 1)
            for i in range(total)]
with tempfile.TemporaryDirectory() as tmp:
    twin = MasterTwin(tmp)
    handle, flush = twin.handlers.handle, twin.engine.journal.flush
    def serve(batch):
        for i in range(0, len(batch), 64):
            drain = Drain(time.monotonic())
            for frame in batch[i:i + 64]:
                handle(b"\0peer", frame, drain)
            flush()
    if kind == "get":
        serve(frames(Op.PUT, 1)[:10_000])
        todo = frames(Op.GET, 1 << 20)
    else:
        todo = frames(Op.PUT, 1 << 20)
    todo = todo[:count]
    if kind == "floor":
        unpackb = msgpack.unpackb
        for frame in todo:
            encode_reply(unpackb(frame)[2], 1, 0, 0, None)
    else:
        serve(todo)
"""


def instructions(tree: Path, kind: str, count: int, total: int) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-c", CHILD, str(tree), kind, str(count), str(total)],
        capture_output=True, text=True, timeout=1200)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"valgrind failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(tree: Path, kind: str, n: int) -> float:
    return (instructions(tree, kind, 2 * n, 2 * n) - instructions(tree, kind, n, 2 * n)) / n


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                    help="also count another checkout of the project, alternated with this")
    ap.add_argument("--requests", type=int, default=3200, help="N (module docstring)")
    ap.add_argument("--kinds", default=",".join(KINDS), type=lambda t: t.split(","),
                    help=f"what to count, of {', '.join(KINDS)}")
    args = parse_run_options(ap, {"requests": 64, "kinds": ["put"]})
    if set(args.kinds) - set(KINDS):
        raise SystemExit(f"--kinds takes {', '.join(KINDS)}")
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    trees = [("this tree", ROOT)]
    if args.compare_tree:
        trees.append((f"{args.compare_tree}", args.compare_tree.resolve()))
    rows = {}
    for kind in args.kinds:
        for name, tree in (trees if kind != "floor" else trees[:1]):
            rows[(name, kind)] = per_request(tree, kind, args.requests)
            print(f"{name} {kind}: {rows[(name, kind)]:,.0f} instructions per request",
                  flush=True)
    lines = [f"User-space instructions per request (callgrind; N = {args.requests:,}, "
             "module docstring of benchmarks/bench_instructions.py), in-process, no sockets:",
             "", "| tree | put | get | put / get | floor (unpack + pack) |",
             "|---|---|---|---|---|"]
    for name, _tree in trees:
        put, get = rows.get((name, "put")), rows.get((name, "get"))
        floor = rows.get(("this tree", "floor"))
        lines.append(f"| {name} | {_n(put)} | {_n(get)} | "
                     f"{'-' if not put or not get else f'{put / get:.2f}'} | {_n(floor)} |")
    if args.compare_tree:
        base = trees[1][0]
        ratios = [f"{kind}s {rows[('this tree', kind)] / rows[(base, kind)]:.3f}"
                  for kind in args.kinds if kind != "floor"]
        lines += ["", f"This tree / {base}: {', '.join(ratios)}."]
    print("\n".join(lines))
    if args.record:
        command = command_line("bench_instructions.py", args,
                               ["compare_tree", "requests", "kinds"])
        record_run(args, SECTION, command, lines)


if __name__ == "__main__":
    main()
