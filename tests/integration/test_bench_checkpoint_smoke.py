"""benchmarks/bench_checkpoint.py in its small mode: the script runs end to end (a master, a
checkpoint node pinned to a CPU of its own, two load phases, the report) and records nothing.
Its figures are not checked: it is a benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_small_mode_runs_and_reports():
    results = ROOT / "docs" / "benchmarks.md"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_checkpoint.py"),
                           "--small", "--no-record", "--pin-node"], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| A. p99 ratio during / before |" in done.stdout
    assert "| B. replica lag at" in done.stdout
    # --pin-node: the node on a CPU of its own (these machines have 2 cores or more)
    assert "pinned to one CPU of its own" in done.stdout, done.stdout
    assert (results.read_bytes() if results.exists() else None) == before
