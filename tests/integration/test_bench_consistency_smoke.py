"""benchmarks/bench_consistency.py with tiny counts: the script works end to end (a sync
master, client processes, the four parts, a checkpoint node for the standby reads) and
records nothing. Its figures are not checked: it is a benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the start of each part's table header (benchmarks/bench_consistency.py, HEAD_*)
HEADERS = ("| phase | reads | reader gets/s | get p50 | get p99 | writer puts/s |",
           "| phase | reads | gets/s | get p50 | get p99 |",
           "| phase | consistency | ops/s | p50 | p99 |",
           "| phase | readers on | reader gets/s | get p50 | get p99 | served by the standby |")


def test_small_run_prints_every_table_and_records_nothing():
    results = ROOT / "docs" / "benchmarks.md"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_consistency.py"),
                           "--phase-s", "0.3", "--idle-s", "0.2", "--rounds", "1",
                           "--readers", "1", "--keys", "20", "--max-ops", "2000"],
                          capture_output=True, text=True, timeout=100,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    for header in HEADERS:
        assert header in done.stdout, done.stdout
    assert "| standby |" in done.stdout and "| fast |" in done.stdout, done.stdout
    assert (results.read_bytes() if results.exists() else None) == before
