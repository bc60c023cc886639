"""benchmarks/bench_security.py in its quick mode: the script works end to end (a snapshot
made offline, a plain and a CURVE master, the snapshot transfer through MasterLink, the
unbatched and batched bench runs) and records its section into the file it is given, leaving
docs/benchmarks.md alone. Its figures are not checked: it is a benchmark."""

from __future__ import annotations

from helpers import run_quick_benchmark

# the tables' headers (benchmarks/bench_security.py, HEAD_*)
HEADERS = ("| round | master | load | completed | ops/s | p50 | p99 | errors |",
           "| load | plain ops/s | CURVE ops/s | CURVE / plain |",
           "| round | master | snapshot MB | transfer MB/s (each) |",
           "| snapshot | plain | CURVE | CURVE / plain |")


def test_quick_run_records_its_section_into_the_given_file(tmp_path):
    text = run_quick_benchmark("bench_security.py", "CURVE cost", HEADERS, tmp_path)
    # one round in quick mode: each master kind ran each load once, and both were compared
    for kind in ("plain", "CURVE"):
        for load in ("unbatched", "batched"):
            assert f"| 1 | {kind} | {load} | " in text, text
    for row in ("| unbatched | ", "| batched | ", "| transfer MB/s | ", "| node load s | "):
        assert row in text, text
    assert "Target: CURVE at least 85% of plain with batching" in text, text
