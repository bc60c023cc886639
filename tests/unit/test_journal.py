"""The Journal writer: appends, the flusher, rolls, purge, reads, back-pressure, close/abandon."""

from __future__ import annotations

import threading

import pytest

from mwcluster.errors import CorruptionError, JournalUnavailable, StorageError
from mwcluster.storage import segments as seg
from mwcluster.storage.journal import FaultyJournalIO, Journal
from mwcluster.testing import wait_for


@pytest.fixture
def wal(tmp_path):
    return tmp_path / "wal"


@pytest.fixture
def make_journal(wal):
    made: list[Journal] = []

    def make(directory=None, **kwargs) -> Journal:
        j = Journal(directory or wal, **kwargs)
        made.append(j)
        return j

    yield make
    for j in made:
        j.abandon()


def payload(txid: int) -> bytes:
    return b"record-%d-" % txid + bytes(txid % 50)


def append_range(j: Journal, first: int, last: int, epoch: int = 1) -> None:
    for txid in range(first, last + 1):
        j.append(txid, epoch, payload(txid))


def records(directory, from_txid: int = 1) -> list[tuple[int, int, bytes]]:
    return list(seg.iter_records(directory, from_txid))


def expected(first: int, last: int, epoch: int = 1) -> list[tuple[int, int, bytes]]:
    return [(t, epoch, payload(t)) for t in range(first, last + 1)]


def seg_files(directory) -> list[int]:
    return [t for t, _ in seg.list_segments(directory)]


# --- basics --------------------------------------------------------------------------------


def test_append_close_reopen_round_trip(make_journal, wal):
    j = make_journal()
    report = j.open()
    assert (report.segments, report.first_txid, report.last_txid) == (0, None, 0)
    assert j.first_txid is None
    append_range(j, 1, 100)
    assert j.last_txid == 100
    j.close()
    assert j.durable_txid == 100
    assert records(wal) == expected(1, 100)

    j2 = make_journal()
    report = j2.open()
    assert (report.first_txid, report.last_txid, report.cut_bytes) == (1, 100, 0)
    assert (j2.last_txid, j2.durable_txid, j2.first_txid) == (100, 100, 1)
    assert list(j2.read(1)) == expected(1, 100)
    j2.append(101, 2, b"after reopen")
    j2.close()
    assert seg_files(wal) == [1]  # the newest segment is continued, not replaced
    assert records(wal, 100) == [(100, 1, payload(100)), (101, 2, b"after reopen")]


def test_append_validates_its_arguments(make_journal):
    j = make_journal(max_record_bytes=100)
    with pytest.raises(JournalUnavailable, match="not open"):
        j.append(1, 1, b"x")
    j.open()
    with pytest.raises(ValueError, match="in order"):
        j.append(2, 1, b"x")
    with pytest.raises(ValueError, match="above the maximum"):
        j.append(1, 1, b"x" * 101)
    with pytest.raises(ValueError, match="epoch"):
        j.append(1, -1, b"x")
    j.append(1, 1, b"x" * 100)
    j.check_writable()
    j.close()
    j.close()  # idempotent
    with pytest.raises(JournalUnavailable, match="closed"):
        j.append(2, 1, b"x")
    with pytest.raises(JournalUnavailable, match="closed"):
        j.check_writable()


def test_open_twice_is_refused(make_journal):
    j = make_journal()
    j.open()
    with pytest.raises(RuntimeError):
        j.open()


def test_wait_durable(make_journal):
    j = make_journal()
    j.open()
    append_range(j, 1, 5)
    assert j.wait_durable(5, timeout=2)
    assert j.durable_txid == 5
    assert not j.wait_durable(6, timeout=0.02)
    j.close()
    assert not j.wait_durable(6)  # nothing more can become durable: no hang


def test_on_durable_is_called_with_increasing_txids(make_journal):
    seen: list[int] = []
    j = make_journal(on_durable=seen.append)
    j.open()
    for txid in range(1, 201):
        j.append(txid, 1, b"x")
        if txid % 50 == 0:
            assert j.wait_durable(txid, timeout=2)
    j.close()
    assert seen == sorted(set(seen)) and seen[-1] == 200


def test_concurrent_appenders_do_not_corrupt_anything(make_journal, wal):
    j = make_journal()
    j.open()
    order = threading.Lock()
    counter = [0]

    def worker():
        for _ in range(500):
            with order:
                counter[0] += 1
                j.append(counter[0], 1, payload(counter[0]))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    j.close()
    assert records(wal) == expected(1, 2000)


# --- segments: roll, size, purge, read ------------------------------------------------------


def test_roll_splits_exactly_at_the_roll_point(make_journal, wal):
    io = FaultyJournalIO()
    j = make_journal(io=io)
    j.open()
    io.block_writes.clear()
    j.append(1, 1, payload(1))  # the flusher takes it and waits in write
    wait_for(lambda: io.writes_waiting == 1)
    append_range(j, 2, 3)
    assert j.roll() == 4
    assert j.roll() == 4  # asking twice is one roll
    append_range(j, 4, 6)
    assert j.roll() == 7
    j.append(7, 1, payload(7))  # 2..7 are one batch written in three pieces
    io.block_writes.set()
    j.close()
    report = seg.verify_dir(wal)
    assert report.ok
    assert [(s.first_txid, s.last_txid) for s in report.segments] == [(1, 3), (4, 6), (7, 7)]
    assert records(wal) == expected(1, 7)


def test_roll_is_lazy(make_journal, wal):
    j = make_journal()
    j.open()
    assert j.roll() == 1
    assert j.roll() == 1
    assert seg_files(wal) == []
    j.append(1, 1, b"a")
    assert j.wait_durable(1, 2)
    assert j.roll() == 2
    assert seg_files(wal) == [1]
    j.close()
    assert seg_files(wal) == [1]


def test_roll_requested_while_the_flusher_writes(make_journal, wal):
    io = FaultyJournalIO()
    j = make_journal(io=io)
    j.open()
    io.block_writes.clear()
    append_range(j, 1, 2)
    wait_for(lambda: io.writes_waiting == 1)
    assert j.roll() == 3  # before any record of the next batch: it starts the batch
    append_range(j, 3, 4)
    io.block_writes.set()
    j.close()
    assert [(s.first_txid, s.last_txid) for s in seg.verify_dir(wal).segments] == [
        (1, 2), (3, 4)]


def test_full_segments_roll_at_batch_boundaries(make_journal, wal):
    j = make_journal(segment_bytes=200)
    j.open()
    for txid in range(1, 31):
        j.append(txid, 1, payload(txid))
        assert j.wait_durable(txid, 2)
    j.close()
    report = seg.verify_dir(wal)
    assert report.ok and len(report.segments) > 5
    for s in report.segments[:-1]:
        # a segment is only started once the previous one reached segment_bytes
        assert s.size_bytes >= 200
    assert records(wal) == expected(1, 30)
    assert j.stats().segments == len(report.segments)


def test_read_across_segments_from_every_txid(make_journal):
    j = make_journal(segment_bytes=150)
    j.open()
    for txid in range(1, 41):
        j.append(txid, 1, payload(txid))
        j.wait_durable(txid, 2)
    assert len(seg.list_segments(j.directory)) > 5
    for start in range(1, 42):
        assert list(j.read(start)) == expected(start, 40)


def test_read_over_many_index_entries(make_journal):
    # records far apart enough that the read index holds several entries per segment
    j = make_journal()
    j.open()
    big = b"z" * 40_000
    for txid in range(1, 21):
        j.append(txid, 1, big + b"%d" % txid)
        j.wait_durable(txid, 2)
    for start in (1, 2, 7, 13, 20):
        got = list(j.read(start))
        assert [t for t, _, _ in got] == list(range(start, 21))
        assert got[0][2] == big + b"%d" % start


def test_read_stops_at_max_bytes_but_returns_at_least_one(make_journal):
    j = make_journal()
    j.open()
    for txid in range(1, 11):
        j.append(txid, 1, b"x" * 100)
    assert j.wait_durable(10, 2)
    assert [t for t, _, _ in j.read(1, max_bytes=250)] == [1, 2]
    assert [t for t, _, _ in j.read(3, max_bytes=10)] == [3]
    assert list(j.read(11)) == []


def test_read_returns_only_durable_records(make_journal):
    io = FaultyJournalIO()
    j = make_journal(io=io)
    j.open()
    append_range(j, 1, 3)
    assert j.wait_durable(3, 2)
    io.block_writes.clear()
    append_range(j, 4, 6)
    wait_for(lambda: io.writes_waiting == 1)
    assert list(j.read(1)) == expected(1, 3)
    io.block_writes.set()
    assert j.wait_durable(6, 2)
    assert list(j.read(4)) == expected(4, 6)


def test_purge_deletes_whole_segments_and_never_the_newest(make_journal, wal):
    j = make_journal()
    j.open()
    for first, last in [(1, 3), (4, 6), (7, 9)]:
        j.roll()
        append_range(j, first, last)
    assert j.wait_durable(9, 2)
    assert seg_files(wal) == [1, 4, 7]
    assert j.purge(5) == [wal / seg.segment_name(1)]  # 4..6 still holds 6
    assert seg_files(wal) == [4, 7]
    assert j.first_txid == 4
    with pytest.raises(StorageError, match="purged"):
        list(j.read(2))
    assert list(j.read(4)) == expected(4, 9)
    assert j.purge(100) == [wal / seg.segment_name(4)]
    assert seg_files(wal) == [7]
    assert j.purge(100) == []
    assert j.first_txid == 7
    append_range(j, 10, 11)
    j.close()
    assert records(wal) == expected(7, 11)
    assert j.stats().segments == 1


def test_set_next_txid_on_an_empty_journal(make_journal, wal):
    j = make_journal()
    j.open()
    j.set_next_txid(101)
    assert (j.last_txid, j.durable_txid) == (100, 100)
    assert j.wait_durable(100, 0)
    j.append(101, 3, b"first after the snapshot")
    with pytest.raises(ValueError):
        j.set_next_txid(101)
    with pytest.raises(ValueError, match="gap"):
        j.set_next_txid(200)
    j.set_next_txid(102)  # already next: allowed
    j.close()
    assert seg_files(wal) == [101]
    j2 = make_journal()
    assert j2.open().last_txid == 101


def test_set_next_txid_replaces_a_header_only_segment(make_journal, wal):
    wal.mkdir()
    (wal / seg.segment_name(5)).write_bytes(seg.encode_header(5, 1))
    j = make_journal()
    assert j.open().last_txid == 4
    j.roll()
    j.set_next_txid(50)
    j.append(50, 2, b"x")
    j.close()
    assert seg_files(wal) == [50]
    assert records(wal) == [(50, 2, b"x")]


def test_a_header_only_newest_segment_is_continued(make_journal, wal):
    wal.mkdir()
    (wal / seg.segment_name(1)).write_bytes(
        seg.encode_header(1, 1) + seg.encode_record(1, 1, b"a") + seg.encode_record(2, 1, b"b"))
    (wal / seg.segment_name(3)).write_bytes(seg.encode_header(3, 1))
    j = make_journal(epoch=2)
    report = j.open()
    assert (report.segments, report.last_txid, report.first_txid) == (2, 2, 1)
    j.append(3, 2, b"c")
    j.close()
    assert seg_files(wal) == [1, 3]
    assert records(wal) == [(1, 1, b"a"), (2, 1, b"b"), (3, 2, b"c")]


# --- recovery at open ------------------------------------------------------------------------


def test_open_cuts_a_torn_tail_and_continues(make_journal, wal):
    j = make_journal()
    j.open()
    append_range(j, 1, 5)
    j.close()
    path = wal / seg.segment_name(1)
    good = path.read_bytes()
    path.write_bytes(good + seg.encode_record(6, 1, b"torn")[:20])
    j2 = make_journal()
    report = j2.open()
    assert report.last_txid == 5 and report.cut_bytes == 20 and report.cut_records_guess == 1
    assert [p.read_bytes() for p in report.broken_paths] == [
        seg.encode_record(6, 1, b"torn")[:20]]
    append_range(j2, 6, 7)
    j2.close()
    assert records(wal) == expected(1, 7)
    j3 = make_journal()
    assert any(".broken" in w for w in j3.open().warnings)


def test_open_moves_a_torn_header_aside(make_journal, wal):
    j = make_journal()
    j.open()
    append_range(j, 1, 3)
    j.close()
    (wal / seg.segment_name(4)).write_bytes(b"MWJL")
    j2 = make_journal()
    report = j2.open()
    assert report.last_txid == 3 and len(report.broken_paths) == 1
    j2.roll()
    append_range(j2, 4, 5)
    j2.close()
    assert seg_files(wal) == [1, 4]
    assert records(wal) == expected(1, 5)


def test_open_refuses_corruption(make_journal, wal):
    j = make_journal()
    j.open()
    append_range(j, 1, 5)
    j.close()
    path = wal / seg.segment_name(1)
    data = bytearray(path.read_bytes())
    data[seg.HEADER_SIZE + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="mwcluster log verify"):
        make_journal().open()


def test_open_warns_about_a_newer_epoch(make_journal, wal):
    j = make_journal(epoch=5)
    j.open()
    j.append(1, 5, b"x")
    j.close()
    report = make_journal(epoch=3).open()
    assert any("epoch 5" in w for w in report.warnings)


# --- back-pressure, close, abandon, stats ------------------------------------------------------


def test_append_blocks_while_the_buffer_is_full_then_proceeds(make_journal, wal):
    io = FaultyJournalIO()
    j = make_journal(io=io, buffer_limit_bytes=1000)
    j.open()
    io.block_writes.clear()
    j.append(1, 1, b"x" * 100)
    wait_for(lambda: io.writes_waiting == 1)
    done = threading.Event()

    def produce():
        for txid in range(2, 31):
            j.append(txid, 1, b"x" * 100)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(lambda: j.stats().appends_waiting == 1)
    assert not done.is_set()
    assert j.stats().buffered_bytes >= 1000
    io.block_writes.set()
    producer.join(2)
    assert done.is_set()
    assert j.wait_durable(30, 2)
    assert j.stats().buffered_bytes == 0


def test_close_drains_everything(make_journal, wal):
    io = FaultyJournalIO()
    j = make_journal(io=io)
    j.open()
    io.block_writes.clear()
    append_range(j, 1, 500)
    closer = threading.Thread(target=j.close)
    closer.start()
    wait_for(lambda: j.closed)
    with pytest.raises(JournalUnavailable):
        j.append(501, 1, b"late")
    io.block_writes.set()
    closer.join(2)
    assert not closer.is_alive()
    assert j.durable_txid == 500
    assert records(wal) == expected(1, 500)


def test_abandon_loses_only_what_was_not_flushed(make_journal, wal):
    io = FaultyJournalIO()
    j = make_journal(io=io)
    j.open()
    append_range(j, 1, 10)
    assert j.wait_durable(10, 2)
    io.block_writes.clear()
    j.append(11, 1, payload(11))
    wait_for(lambda: io.writes_waiting == 1)  # 11 is being written, not yet fsynced
    append_range(j, 12, 20)  # buffered only
    abandoner = threading.Thread(target=j.abandon)
    abandoner.start()
    wait_for(lambda: j.closed)
    io.block_writes.set()
    abandoner.join(2)
    assert j.durable_txid == 10
    report = make_journal().open()
    # 11 reached the page cache (no fsync); 12..20 never left memory
    assert report.last_txid in (10, 11)
    assert records(wal) == expected(1, report.last_txid)


def test_stats_report_the_loss_window(make_journal):
    now = [100.0]
    io = FaultyJournalIO()
    j = make_journal(io=io, clock=lambda: now[0])
    j.open()
    assert j.stats().oldest_unflushed_age_s == 0.0
    io.block_writes.clear()
    j.append(1, 1, b"x" * 80)
    wait_for(lambda: io.writes_waiting == 1)
    now[0] = 100.25
    j.append(2, 1, b"y" * 80)
    now[0] = 100.5
    stats = j.stats()
    assert stats.oldest_unflushed_age_s == pytest.approx(0.5)
    assert stats.buffered_bytes == 2 * (24 + 80)
    assert (stats.last_txid, stats.durable_txid) == (2, 0)
    io.block_writes.set()
    assert j.wait_durable(2, 2)
    wait_for(lambda: j.stats().flushes == 2)
    stats = j.stats()
    assert stats.oldest_unflushed_age_s == 0.0 and stats.buffered_bytes == 0
    assert stats.records_written == 2 and stats.fsyncs == 2
    assert stats.bytes_written == 24 + 2 * (24 + 80) == stats.journal_bytes
    assert stats.loss_window_samples == (0.5, 0.25)
    assert not stats.failed and stats.last_error is None and stats.segments == 1


# --- without a flusher thread (background=False: the in-memory simulation's journal) ------


def test_without_a_thread_nothing_is_written_until_flush(make_journal, wal):
    j = make_journal(background=False)
    j.open()
    append_range(j, 1, 5)
    assert j.durable_txid == 0
    assert not [t for t in threading.enumerate() if t.name == f"journal-flusher:{wal}"]
    assert list(j.read(1)) == []                    # nothing durable yet
    assert j.flush() is True and j.durable_txid == 5
    assert [t for t, _e, _p in j.read(1)] == [1, 2, 3, 4, 5]
    append_range(j, 6, 7)
    assert j.wait_durable(7) is True                # flushes by itself
    j.roll()
    append_range(j, 8, 9)
    j.close()                                       # flushes what is left
    assert [first for first, _path in seg.list_segments(wal)] == [1, 8]
    reopened = make_journal()
    reopened.open()
    assert [t for t, _e, _p in reopened.read(1)] == list(range(1, 10))


def test_without_a_thread_a_failed_write_refuses_appends_until_a_flush_succeeds(
        make_journal, wal):
    io = FaultyJournalIO()
    j = make_journal(background=False, io=io)
    j.open()
    append_range(j, 1, 3)
    io.fail_fsync_errno = 28                        # ENOSPC
    assert j.flush() is False
    assert j.durable_txid == 0 and "cannot take writes" in j.failure
    with pytest.raises(JournalUnavailable, match="Free disk space"):
        j.append(4, 1, payload(4))
    io.heal()
    assert j.flush() is True and j.durable_txid == 3 and j.failure is None
    append_range(j, 4, 4)
    assert j.flush() and j.durable_txid == 4


def test_without_a_thread_abandon_loses_what_was_not_flushed(make_journal, wal):
    j = make_journal(background=False)
    j.open()
    append_range(j, 1, 3)
    j.flush()
    append_range(j, 4, 6)
    j.abandon()
    reopened = make_journal()
    reopened.open()
    assert reopened.last_txid == 3
    with pytest.raises(RuntimeError):
        reopened.flush()                            # a threaded journal flushes itself
