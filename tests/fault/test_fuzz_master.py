"""Runs the coverage-guided fuzzer (tests/fault/fuzz_master.py) for a bounded time: the
master's request handlers, the reply and log-stream decoders, admitted journal records
replayed, and journal frames. Any exception other than a documented refusal, a reply that
does not decode, or broken invariants fails the run, and the input that did it is kept
(its path is in the failure message). MWCLUSTER_FUZZ_SECONDS sets the time (default 20).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fault

pytest.importorskip("atheris", reason="atheris (coverage-guided fuzzing) is not installed "
                                      "for this platform; the hypothesis tests still run")

HARNESS = Path(__file__).with_name("fuzz_master.py")
ROOT = Path(__file__).resolve().parents[2]


def test_the_fuzzer_finds_nothing_in_bounded_time(tmp_path):
    seconds = int(os.environ.get("MWCLUSTER_FUZZ_SECONDS", "20"))
    corpus = tmp_path / "corpus"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    done = subprocess.run(
        [sys.executable, str(HARNESS), str(corpus), f"-max_total_time={seconds}",
         "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=seconds + 120)
    found = sorted(p.name for p in tmp_path.glob("crash-*")) + \
        sorted(p.name for p in tmp_path.glob("timeout-*"))
    assert done.returncode == 0 and not found, (
        f"the fuzzer exited with {done.returncode}; inputs kept: {found} in {tmp_path}\n"
        f"{done.stderr[-6000:]}")
    runs = [line for line in done.stderr.splitlines() if line.startswith("Done ")]
    assert runs, done.stderr[-2000:]
    print(f"\n{runs[-1]}")
