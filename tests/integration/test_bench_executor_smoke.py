"""benchmarks/bench_executor.py in its quick mode: the script works end to end (the thread and
the process executor against an in-memory master, CPU-bound and empty handlers, the cancel of
a ProcessSlot's child) and records its section into the file it is given, leaving
docs/benchmarks.md alone. Its figures are not checked: it is a benchmark."""

from __future__ import annotations

from helpers import run_quick_benchmark

# the tables' headers (benchmarks/bench_executor.py, HEAD_*)
HEADERS = ("| round | load | slots | executor | tasks | seconds | tasks/s | CPU s per task |",
           "| slots | thread tasks/s | process tasks/s | process / thread | thread CPU s per task",
           "| slots | thread tasks/s | process tasks/s | process / thread | thread ms per task",
           "| handler | trials | run() returned, median | max | child gone, median | max |")


def test_quick_run_records_its_section_into_the_given_file(tmp_path):
    text = run_quick_benchmark("bench_executor.py", "worker executors", HEADERS, tmp_path)
    # one round in quick mode (slots 1..2): each executor ran each load once per slot count
    for load in ("spin", "echo"):
        for slots in (1, 2):
            for executor in ("thread", "process"):
                assert f"| 1 | {load} | {slots} | {executor} | " in text, text
    for handler in ("testing.sleep", "testing.stubborn"):
        assert f"| {handler} | 1 | " in text, text
