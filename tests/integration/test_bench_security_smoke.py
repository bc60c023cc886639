"""benchmarks/bench_security.py in its quick mode: the script works end to end (a snapshot
made offline, a plain and a CURVE master, the snapshot transfer through MasterLink, the
unbatched and batched bench runs) and records its section into the file it is given, leaving
docs/benchmarks.md alone. Its figures are not checked: it is a benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the tables' headers (benchmarks/bench_security.py, HEAD_*)
HEADERS = ("| round | master | load | completed | ops/s | p50 | p99 | errors |",
           "| load | plain ops/s | CURVE ops/s | CURVE / plain |",
           "| round | master | snapshot MB | transfer MB/s (each) |",
           "| snapshot | plain | CURVE | CURVE / plain |")


def test_quick_run_records_its_section_into_the_given_file(tmp_path):
    docs = ROOT / "docs" / "benchmarks.md"
    before = docs.read_bytes() if docs.exists() else None
    out = tmp_path / "benchmarks.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_security.py"),
                           "--quick", "--record", "--results", str(out)],
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    for header in HEADERS:
        assert header in done.stdout, done.stdout
    text = out.read_text()
    assert "<!-- begin CURVE cost -->\n## CURVE cost\n" in text, text
    assert text.rstrip().endswith("<!-- end CURVE cost -->"), text
    assert "- command: `python benchmarks/bench_security.py --quick --record`" in text, text
    assert "- machine: " in text and "- date: " in text, text
    for header in HEADERS:
        assert header in text, text
    # one round in quick mode: each master kind ran each load once, and both were compared
    for kind in ("plain", "CURVE"):
        for load in ("unbatched", "batched"):
            assert f"| 1 | {kind} | {load} | " in text, text
    for row in ("| unbatched | ", "| batched | ", "| transfer MB/s | ", "| node load s | "):
        assert row in text, text
    assert "Target: CURVE at least 85% of plain with batching" in text, text
    assert (docs.read_bytes() if docs.exists() else None) == before
