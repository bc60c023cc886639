"""Each example in examples/ runs as its docstring says (short configurations), from the
repository root, and exits 0. The examples start and stop their own processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mwcluster.testing.cluster import WorkerProcess, run_command
from mwcluster.testing import MasterProcess

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_command([sys.executable, *args], timeout, cwd=ROOT)


@pytest.mark.parametrize("script, args, expect", [
    ("examples/wordcount/run.py", ["--files", "6", "--lines", "200", "--workers", "2"],
     "identical"),
    ("examples/dataset_catalog.py", ["--days", "4"], "answers match what was written"),
    ("examples/failure_drill.py", ["--shards", "24", "--workers", "3"],
     "result checked against a direct count: identical"),
])
def test_example_runs_and_exits_0(script, args, expect):
    proc = run(script, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expect in proc.stdout


def test_examples_run_against_a_master_started_by_hand(tmp_path):
    with MasterProcess(tmp_path / "m") as master:
        proc = run("examples/dataset_catalog.py", "--master", master.client_endpoint)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        proc = run("examples/quickstart_client.py", master.client_endpoint)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_wordcount_against_a_master_and_a_worker_started_by_hand(tmp_path):
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT / "examples" / "wordcount"))
    with MasterProcess(tmp_path / "m") as master, \
            WorkerProcess("by-hand", master.client_endpoint, slots=2,
                          handlers=["wordcount_handlers"], env=env) as worker:
        proc = run("examples/wordcount/run.py", "--master", master.client_endpoint,
                   "--files", "4", "--lines", "100")
        assert proc.returncode == 0, proc.stdout + proc.stderr + worker.stderr_text()
        assert "identical" in proc.stdout
