"""A full disk or a failing fsync under the engine: nothing unwritten is acknowledged, refused
writes change nothing, reads go on, and writing resumes when the disk recovers."""

from __future__ import annotations

import errno

import pytest

from mwcluster.core import records as r
from mwcluster.core.values import encode
from mwcluster.engine import Engine
from mwcluster.errors import JournalUnavailable
from mwcluster.storage.fsutil import FaultyJournalIO
from mwcluster.testing import wait_for

pytestmark = pytest.mark.fault


@pytest.mark.parametrize("fault", ["enospc_write", "eio_fsync"])
def test_disk_failure_refuses_writes_keeps_reads_and_resumes(tmp_path, fault):
    io = FaultyJournalIO()
    engine = Engine(tmp_path, journal_io=io, durability="async", retry_initial_s=0.005,
                    retry_max_s=0.05)
    engine.open()
    for i in range(20):
        engine.submit(r.Put(f"/ok/{i}", encode(i)))
    assert engine.wait_durable(20, timeout=10)
    if fault == "enospc_write":
        io.fail_write_errno = errno.ENOSPC
    else:
        io.fail_fsync_errno = errno.EIO
    txid, _ = engine.submit(r.Put("/pending", encode("x")))    # buffered, then fails to flush
    wait_for(lambda: engine.journal.stats().failed, what="the journal reports the failure")
    assert engine.journal.durable_txid == 20       # the failed record is not durable
    assert not engine.wait_durable(txid, timeout=0.05)
    before = (engine.state.txid, engine.state.digest)
    with pytest.raises(JournalUnavailable) as err:
        engine.submit(r.Put("/refused", encode("y")))
    assert ("No space" in str(err.value)) or ("Input/output" in str(err.value))
    assert (engine.state.txid, engine.state.digest) == before    # refused: nothing changed
    assert engine.state.ns.get("/ok/3") == 3                       # reads still work
    io.heal()
    assert engine.wait_durable(txid, timeout=10)                   # the retry wrote it
    engine.submit(r.Put("/after", encode("z")))
    digest = engine.state.digest
    engine.close()
    again = Engine(tmp_path)
    again.open()
    assert again.state.digest == digest
    assert again.state.ns.get("/pending") == "x" and again.state.ns.get("/refused") is None
    again.close()


def test_a_sync_submit_is_not_acknowledged_when_the_journal_stops_before_its_fsync(tmp_path):
    import threading

    io = FaultyJournalIO()
    engine = Engine(tmp_path, journal_io=io, durability="sync")
    engine.open()
    engine.submit(r.Put("/first", encode(1)))
    io.block_writes.clear()              # the next flush hangs inside its write
    outcome: list = []

    def writer():
        try:
            outcome.append(engine.submit(r.Put("/second", encode(2))))
        except JournalUnavailable as exc:
            outcome.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: io.writes_waiting == 1, what="the flush to start its write")
    # the process dies before that fsync: the flusher sees it between its write and fsync
    crash = threading.Thread(target=engine.journal.abandon)
    crash.start()
    wait_for(lambda: engine.journal.closed, what="the journal to be stopping")
    io.block_writes.set()
    crash.join(timeout=10)
    thread.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], JournalUnavailable), outcome
