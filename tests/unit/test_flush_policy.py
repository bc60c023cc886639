"""The journal's flush policy (`flush_interval_s`, storage/flusher.py): a batch waits until its
oldest record is that old, unless the journal is urged, a caller waits for durability, appends
wait for buffer space, or it closes. The journal's clock is a hand-moved one, so "not yet
flushed" is a fact of the test, not a race: the flusher cannot reach the interval until the
test moves the clock."""

from __future__ import annotations

import threading

import pytest

from mwcluster.nodes.master.parking import ParkedReplies
from mwcluster.nodes.master.stats import Histogram
from mwcluster.storage import segments as seg
from mwcluster.storage.journal import FaultyJournalIO, Journal
from mwcluster.testing import wait_for


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lingering(tmp_path):
    """A journal with a 0.2 s flush interval on a clock that only the test moves."""
    made: list[Journal] = []

    def make(**kwargs) -> tuple[Journal, HandClock]:
        clock = HandClock()
        j = Journal(tmp_path / f"wal{len(made)}", clock=clock,
                    flush_interval_s=kwargs.pop("flush_interval_s", 0.2), **kwargs)
        j.open()
        made.append(j)
        return j, clock

    yield make
    for j in made:
        j.abandon()


def append(j: Journal, first: int, last: int) -> None:
    for txid in range(first, last + 1):
        j.append(txid, 1, b"r%d" % txid)


def test_a_batch_waits_out_the_interval_then_goes_as_one_fsync(lingering):
    j, clock = lingering()
    append(j, 1, 50)
    wait_for(lambda: j.lingering, 10, "the flusher waits out the interval")
    assert j.durable_txid == 0 and j.stats().fsyncs == 0
    append(j, 51, 100)               # arrive while it waits: they share its write
    clock.now += 0.2                 # the oldest record is now as old as the interval
    wait_for(lambda: j.durable_txid == 100, 10, "the batch is written once due")
    assert j.stats().fsyncs == 1
    assert [t for t, _, _ in seg.iter_records(j.directory, 1)] == list(range(1, 101))


def test_a_wait_for_a_buffered_record_writes_at_once(lingering):
    j, _clock = lingering()
    append(j, 1, 10)
    wait_for(lambda: j.lingering, 10, "the flusher waits out the interval")
    j.wake(10)               # a reply is parked until txid 10 is durable
    wait_for(lambda: j.durable_txid == 10, 10, "an urged batch is written without waiting")
    assert not j.lingering


def test_an_urge_with_nothing_buffered_leaves_no_flag(lingering):
    j, _clock = lingering()
    j.wake(1)                # nothing buffered: nothing to urge, and no flag left behind
    append(j, 1, 5)
    wait_for(lambda: j.lingering, 10, "an urge with nothing buffered is not kept")
    j.wake(5)
    wait_for(lambda: j.durable_txid == 5, 10, "urged")
    append(j, 6, 8)
    wait_for(lambda: j.lingering, 10, "the next batch waits again: the urge was spent")
    assert j.durable_txid == 5


def test_waking_for_durable_records_urges_nothing(lingering):
    j, _clock = lingering()
    append(j, 1, 5)
    j.wake(5)
    wait_for(lambda: j.durable_txid == 5, 10, "urged")
    append(j, 6, 8)
    wait_for(lambda: j.lingering, 10, "the next batch waits out the interval")
    j.wake(5)               # a parked reply waits for txid 5: durable already
    assert j.lingering      # urging would end the wait at once, on this thread
    j.wake(7)
    wait_for(lambda: j.durable_txid == 8, 10, "a wait for txid 7 writes its batch")


def test_waking_for_records_being_written_leaves_the_next_batch_its_interval(tmp_path):
    io = FaultyJournalIO()
    clock = HandClock()
    j = Journal(tmp_path / "wal", clock=clock, io=io, flush_interval_s=0.2)
    j.open()
    try:
        io.block_writes.clear()
        append(j, 1, 3)
        j.wake(3)
        wait_for(lambda: io.writes_waiting == 1, 10, "the batch 1..3 is being written")
        append(j, 4, 5)
        j.wake(3)               # txid 3 is in the batch being written: nothing to urge
        io.block_writes.set()
        wait_for(lambda: j.durable_txid == 3 and j.lingering, 10,
                 "batch 1..3 written, then 4..5 waits out its interval")
        assert j.durable_txid == 3
    finally:
        io.block_writes.set()
        j.abandon()


def test_parked_replies_say_the_highest_txid_they_wait_for():
    parked = ParkedReplies(Histogram())
    assert parked.waiting_for() == 0
    parked.park(3, b"a", b"r", 0.0, 1)
    parked.park(7, b"b", b"r", 0.0, 2)
    parked.park(5, b"c", b"r", 0.0, 1)      # a retry of an older request
    assert parked.waiting_for() == 7
    assert len(parked.release(7, 1.0)) == 3
    assert parked.waiting_for() == 0


def test_wait_durable_does_not_wait_for_the_interval(lingering):
    j, _clock = lingering(flush_interval_s=60.0)
    append(j, 1, 3)
    assert j.wait_durable(3, timeout=30)     # 30 s < the 60 s interval: it urged
    assert j.durable_txid == 3


def test_appends_waiting_for_buffer_space_end_the_wait(lingering):
    j, _clock = lingering(flush_interval_s=60.0, buffer_limit_bytes=4096)
    done = threading.Event()

    def fill() -> None:
        for txid in range(1, 201):           # far more than 4 KiB
            j.append(txid, 1, b"x" * 100)
        done.set()

    writer = threading.Thread(target=fill, daemon=True)
    writer.start()
    writer.join(timeout=30)
    assert done.is_set(), "appends blocked by back-pressure waited for the interval"
    j.wake(200)
    wait_for(lambda: j.durable_txid == 200, 10, "the rest is written once urged")


def test_close_writes_what_lingers(lingering):
    j, _clock = lingering(flush_interval_s=60.0)
    append(j, 1, 7)
    wait_for(lambda: j.lingering, 10, "the flusher waits out the interval")
    j.close()
    assert [t for t, _, _ in seg.iter_records(j.directory, 1)] == list(range(1, 8))


def test_the_interval_is_bounded(tmp_path):
    for bad in (-0.001, 60.5):
        with pytest.raises(ValueError, match="flush_interval_s must be within 0..60 s"):
            Journal(tmp_path / "wal", flush_interval_s=bad)


def test_no_interval_keeps_writing_as_fast_as_it_can(tmp_path):
    clock = HandClock()          # never moves: with an interval this would wait for ever
    j = Journal(tmp_path / "wal", clock=clock)
    j.open()
    try:
        append(j, 1, 20)
        wait_for(lambda: j.durable_txid == 20, 10, "written without any interval")
        assert not j.lingering
    finally:
        j.close()
