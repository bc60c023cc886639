"""Write and fsync failures injected through the journal's I/O seam (ENOSPC, EIO): nothing is
made durable that was not fsynced, appends are refused with the OS error, reads keep working,
and once the disk heals the retry catches up with every record written exactly once."""

from __future__ import annotations

import errno
import threading

import pytest

from mwcluster.errors import JournalUnavailable
from mwcluster.storage import segments as seg
from mwcluster.storage.journal import FaultyJournalIO, Journal
from mwcluster.testing import wait_for

pytestmark = pytest.mark.fault


@pytest.fixture
def wal(tmp_path):
    return tmp_path / "wal"


@pytest.fixture
def make_journal(wal):
    made: list[Journal] = []

    def make(io=None, **kwargs) -> Journal:
        j = Journal(wal, io=io, retry_initial_s=0.001, retry_max_s=0.01, **kwargs)
        made.append(j)
        return j

    yield make
    for j in made:
        j.abandon()


def payload(txid: int) -> bytes:
    return b"payload %d " % txid * 3


def append_range(j: Journal, first: int, last: int) -> None:
    for txid in range(first, last + 1):
        j.append(txid, 1, payload(txid))


def expected(first: int, last: int) -> list[tuple[int, int, bytes]]:
    return [(t, 1, payload(t)) for t in range(first, last + 1)]


def reopened_records(wal) -> list[tuple[int, int, bytes]]:
    """Reopen (recovery included) and read everything back; also check the files are clean."""
    j = Journal(wal)
    report = j.open()
    j.close()
    assert report.cut_bytes == 0, "a healed journal leaves no torn tail behind"
    assert seg.verify_dir(wal).ok
    return list(seg.iter_records(wal))


def healthy_journal(make_journal, io: FaultyJournalIO, last: int = 5, **kwargs) -> Journal:
    j = make_journal(io, **kwargs)
    j.open()
    append_range(j, 1, last)
    assert j.wait_durable(last, 2)
    return j


def test_enospc_on_write_refuses_appends_until_the_disk_heals(make_journal, wal):
    io = FaultyJournalIO()
    j = healthy_journal(make_journal, io, last=10)
    io.fail_write_errno = errno.ENOSPC
    j.append(11, 1, payload(11))
    wait_for(lambda: j.stats().failed)
    assert j.durable_txid == 10
    with pytest.raises(JournalUnavailable) as info:
        j.check_writable()
    message = str(info.value)
    assert "No space left on device" in message and "Free disk space" in message
    assert "resume on their own" in message
    with pytest.raises(JournalUnavailable, match="No space left"):
        j.append(12, 1, payload(12))
    assert "No space left" in j.stats().last_error
    assert list(j.read(1)) == expected(1, 10)  # reads still work
    assert not j.wait_durable(11, timeout=0.02)
    wait_for(lambda: io.failures >= 3)  # the flusher keeps retrying
    assert j.durable_txid == 10

    io.heal()
    assert j.wait_durable(11, timeout=2)
    j.check_writable()
    assert not j.stats().failed
    append_range(j, 12, 15)
    j.close()
    assert reopened_records(wal) == expected(1, 15)


def test_a_short_write_then_enospc_leaves_no_hole_and_no_duplicate(make_journal, wal):
    io = FaultyJournalIO()
    j = healthy_journal(make_journal, io)
    durable_size = j.stats().journal_bytes
    io.block_writes.clear()
    j.append(6, 1, payload(6))
    wait_for(lambda: io.writes_waiting == 1)
    append_range(j, 7, 10)  # the next batch, buffered while 6 is being written
    io.write_budget_bytes = 10  # 10 bytes of record 6 reach the file, then ENOSPC
    io.block_writes.set()
    wait_for(lambda: j.stats().failed)
    assert j.durable_txid == 5
    # the short write left 10 bytes of record 6; a retry may already have cut them back
    assert (wal / seg.segment_name(1)).stat().st_size in (durable_size, durable_size + 10)
    io.heal()
    assert j.wait_durable(10, timeout=2)
    j.close()
    assert reopened_records(wal) == expected(1, 10)
    assert (wal / seg.segment_name(1)).stat().st_size == j.stats().journal_bytes


def test_eio_on_fsync_does_not_advance_durable_txid(make_journal, wal):
    io = FaultyJournalIO()
    durable_seen: list[int] = []
    j = healthy_journal(make_journal, io, on_durable=durable_seen.append)
    io.fail_fsync_errno = errno.EIO
    append_range(j, 6, 7)
    wait_for(lambda: j.stats().failed)
    assert j.durable_txid == 5 and durable_seen[-1] == 5
    with pytest.raises(JournalUnavailable, match="Input/output error"):
        j.check_writable()
    assert list(j.read(6)) == []  # written to the file maybe, but not durable: not served
    io.heal()
    assert j.wait_durable(7, timeout=2)
    wait_for(lambda: durable_seen[-1] == 7)  # called by the flusher right after the fsync
    j.append(8, 1, payload(8))
    j.close()
    assert reopened_records(wal) == expected(1, 8)


def test_failure_while_creating_a_new_segment(make_journal, wal):
    io = FaultyJournalIO()
    j = healthy_journal(make_journal, io, last=3)
    assert j.roll() == 4
    io.fail_write_errno = errno.ENOSPC
    j.append(4, 1, payload(4))
    wait_for(lambda: j.stats().failed)
    assert j.durable_txid == 3
    assert list(j.read(1)) == expected(1, 3)
    io.heal()
    assert j.wait_durable(4, timeout=2)
    j.close()
    assert [t for t, _ in seg.list_segments(wal)] == [1, 4]
    assert reopened_records(wal) == expected(1, 4)


def test_a_crash_while_failed_recovers_the_durable_prefix(make_journal, wal):
    io = FaultyJournalIO()
    j = healthy_journal(make_journal, io, last=3)
    j.roll()
    io.fail_write_errno = errno.ENOSPC
    j.append(4, 1, payload(4))
    wait_for(lambda: j.stats().failed)
    j.abandon()
    # the new segment was created but never got its header: recovery moves it aside
    j2 = make_journal()
    report = j2.open()
    assert report.last_txid == 3 and len(report.broken_paths) == 1
    j2.roll()
    j2.append(4, 1, payload(4))
    j2.close()
    assert list(seg.iter_records(wal)) == expected(1, 4)


def test_close_while_the_disk_still_fails_names_the_lost_txids(make_journal, wal):
    io = FaultyJournalIO()
    j = healthy_journal(make_journal, io)
    io.fail_fsync_errno = errno.EIO
    append_range(j, 6, 8)
    wait_for(lambda: j.stats().failed)
    with pytest.raises(JournalUnavailable, match=r"txids 6\.\.8 were not saved"):
        j.close()
    j.close()  # idempotent, quiet the second time
    assert j.durable_txid == 5
    assert [t for t, _, _ in seg.iter_records(wal)][:5] == [1, 2, 3, 4, 5]


def test_appends_blocked_by_back_pressure_are_released_by_a_failure(make_journal, wal):
    io = FaultyJournalIO()
    j = healthy_journal(make_journal, io, buffer_limit_bytes=300)
    io.block_writes.clear()
    j.append(6, 1, payload(6))
    wait_for(lambda: io.writes_waiting == 1)
    outcome: list[object] = []

    def produce():
        try:
            append_range(j, 7, 100)
        except JournalUnavailable as e:
            outcome.append(e)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(lambda: j.stats().appends_waiting == 1)
    io.fail_write_errno = errno.ENOSPC
    io.block_writes.set()
    producer.join(2)
    assert not producer.is_alive()
    assert isinstance(outcome[0], JournalUnavailable)
    last = j.last_txid
    assert 7 <= last < 100 and j.durable_txid == 5
    io.heal()
    assert j.wait_durable(last, timeout=2)
    j.close()
    assert reopened_records(wal) == expected(1, last)
