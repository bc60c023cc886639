"""kill -9 of a process writing through the engine: what each durability mode promises.

The writer child puts key /w/{i:06d} = i for i = 0, 1, 2, ... (record i has txid i + 1) and
prints each txid after `submit` returned, i.e. after it was acknowledged. The test kills it
with SIGKILL while it writes, then recovers from its files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mwcluster.engine import Engine

pytestmark = pytest.mark.fault

WRITER = r"""
import sys
from mwcluster.core import records as r
from mwcluster.core.values import encode
from mwcluster.engine import Engine
engine = Engine(sys.argv[1], durability=sys.argv[2], segment_bytes=int(sys.argv[3]))
engine.open()
out = sys.stdout
start = engine.state.txid          # continue the same history after a restart
for i in range(start, start + 10_000_000):
    txid, _ = engine.submit(r.Put(f"/w/{i:06d}", encode(i)))
    if sys.argv[2] == "sync" or i % 64 == 0:
        out.write(f"{txid} {engine.journal.durable_txid}\n")
        out.flush()
"""


def _run_and_kill(data_dir, durability: str, kill_after_txid: int, segment_bytes: int
                  ) -> tuple[int, int]:
    """Start the writer, read acknowledged txids until `kill_after_txid` is acknowledged and
    reported durable, kill -9; return the highest acknowledged and durable txids seen."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir), durability,
                              str(segment_bytes)], stdout=subprocess.PIPE, text=True)
    acked = durable = 0
    deadline = time.monotonic() + 60
    try:
        for line in child.stdout:
            acked, durable = map(int, line.split())
            if durable >= kill_after_txid or time.monotonic() > deadline:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert durable >= kill_after_txid, "the writer did not get far enough before the deadline"
    return acked, durable


def _check_prefix(engine: Engine) -> None:
    """The recovered state is exactly the first `txid` puts: no hole, nothing reordered."""
    state = engine.state
    n = state.txid
    keys = state.ns.list_prefix("/w/", limit=n + 10)
    assert keys == [f"/w/{i:06d}" for i in range(n)]
    for i in (0, n // 2, n - 1):
        if n:
            assert state.ns.get(f"/w/{i:06d}") == i
    assert state.validate() == []


@pytest.mark.parametrize("cycle", range(3))
def test_kill9_sync_loses_no_acknowledged_write(tmp_path, cycle):
    acked, _ = _run_and_kill(tmp_path, "sync", 300 + 97 * cycle, segment_bytes=8192)
    engine = Engine(tmp_path)
    engine.open()
    try:
        assert engine.state.txid >= acked
        _check_prefix(engine)
    finally:
        engine.close()


@pytest.mark.parametrize("cycle", range(3))
def test_kill9_async_recovers_a_prefix(tmp_path, cycle):
    acked, durable = _run_and_kill(tmp_path, "async", 20_000 + 5_000 * cycle,
                                   segment_bytes=256 << 10)
    engine = Engine(tmp_path)
    engine.open()
    try:
        _check_prefix(engine)
        assert engine.state.txid >= durable      # what was reported durable survived
    finally:
        engine.close()


def test_repeated_kill9_and_restart_keeps_every_acknowledged_sync_write(tmp_path):
    """Crash, recover, write more, crash again: the history stays one unbroken prefix."""
    recovered = 0
    for _ in range(3):
        acked, _ = _run_and_kill(tmp_path, "sync", recovered + 150, segment_bytes=4096)
        engine = Engine(tmp_path)
        engine.open()
        try:
            assert engine.state.txid >= acked
            _check_prefix(engine)
            recovered = engine.state.txid
        finally:
            engine.close()
