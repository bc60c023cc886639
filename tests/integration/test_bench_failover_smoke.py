"""benchmarks/bench_failover.py with tiny counts and no failover runs: the script works end
to end (a master, a standby, the three durability levels, a manual promotion) and records
nothing. Its figures are not checked: it is a benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_small_run_reports_every_durability_level():
    results = ROOT / "docs" / "benchmarks.md"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_failover.py"),
                           "--writes", "200", "--latency-writes", "20", "--failovers", "0"],
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    for mode in ("async:", "sync:", "replicated:", "manual promotion"):
        assert mode in done.stdout, done.stdout
    assert (results.read_bytes() if results.exists() else None) == before
