"""The engine: the write path, graceful stop, snapshots, and recovery from them."""

from __future__ import annotations

import pytest

from mwcluster.core import records as r
from mwcluster.core.values import encode
from mwcluster.engine import Engine
from mwcluster.errors import BadVersion, CorruptionError, InvalidRecord, MultiFailed
from mwcluster.storage import snapshot as snapshots


def _fill(engine: Engine, n: int, start: int = 0) -> int:
    txid = 0
    for i in range(start, start + n):
        txid, _ = engine.submit(r.Put(f"/k/{i % 50:03d}", encode({"i": i})))
    return txid


def _reopen(path, **kw) -> Engine:
    engine = Engine(path, **kw)
    engine.open()
    return engine


def test_graceful_close_then_reopen_loses_nothing(tmp_path):
    engine = _reopen(tmp_path)
    txid = _fill(engine, 500)
    engine.submit(r.JobSubmit("j1", "n", "h", 0, 2, [[1, {}], [2, {}]], 5))
    image, digest = engine.state.image_bytes(), engine.state.digest
    engine.close()
    again = _reopen(tmp_path)
    assert again.state.txid == txid + 1
    assert again.state.digest == digest and again.state.image_bytes() == image
    assert again.recovery.replayed_records == txid + 1
    assert again.state.validate() == []
    again.close()


def test_refused_records_are_not_logged(tmp_path):
    engine = _reopen(tmp_path)
    engine.submit(r.Put("/a", encode(1)))
    with pytest.raises(BadVersion):
        engine.submit(r.Put("/a", encode(2), expected_version=7))
    with pytest.raises(InvalidRecord):
        engine.submit(r.Put("relative", encode(2)))
    assert engine.state.txid == 1
    txid, version = engine.submit(r.Put("/a", encode(3), expected_version=1))
    assert (txid, version) == (2, 2)
    engine.close()
    again = _reopen(tmp_path)
    assert again.state.txid == 2 and again.state.ns.get("/a") == 3
    again.close()


def test_sync_submit_returns_only_when_durable(tmp_path):
    engine = _reopen(tmp_path, durability="sync")
    for i in range(20):
        txid, _ = engine.submit(r.Put(f"/s/{i}", encode(i)))
        assert engine.journal.durable_txid >= txid
    engine.close()


def test_snapshot_then_replay_equals_live_state(tmp_path):
    engine = _reopen(tmp_path, keep_snapshots=2)
    _fill(engine, 300)
    first = engine.snapshot()
    _fill(engine, 300, start=300)
    engine.snapshot()
    _fill(engine, 100, start=600)
    image, digest = engine.state.image_bytes(), engine.state.digest
    engine.close()
    again = _reopen(tmp_path)
    assert again.recovery.snapshot_txid == 600
    assert again.recovery.replayed_records == 100
    assert again.state.image_bytes() == image and again.state.digest == digest
    # the journal before the oldest kept snapshot may be gone, but never past it
    assert again.journal.first_txid <= first.txid + 1
    again.close()


def test_retention_purges_segments_covered_by_the_oldest_kept_snapshot(tmp_path):
    engine = _reopen(tmp_path, keep_snapshots=1, segment_bytes=4096, durability="sync")
    _fill(engine, 400)
    engine.snapshot()
    _fill(engine, 10, start=400)
    engine.snapshot()
    assert len(snapshots.list_snapshots(engine.snapshot_dir)) == 1
    assert engine.journal.first_txid is None or engine.journal.first_txid > 400
    engine.close()
    again = _reopen(tmp_path)
    assert again.state.txid == 410
    again.close()


def _damage(path, offset_from_end: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_newest_snapshot_falls_back_to_the_previous_one(tmp_path):
    engine = _reopen(tmp_path, keep_snapshots=2)
    _fill(engine, 200)
    engine.snapshot()
    _fill(engine, 200, start=200)
    newest = engine.snapshot()
    _fill(engine, 50, start=400)
    digest = engine.state.digest
    engine.close()
    _damage(newest.path)
    again = _reopen(tmp_path, keep_snapshots=2)
    assert again.recovery.snapshot_txid == 200
    assert again.recovery.replayed_records == 250
    assert [p for p, _ in again.recovery.skipped_snapshots] == [str(newest.path)]
    assert any("skipped" in w for w in again.recovery.warnings)
    assert again.state.digest == digest
    again.close()


def test_missing_journal_between_snapshot_and_log_refuses_to_start(tmp_path):
    engine = _reopen(tmp_path, keep_snapshots=1, segment_bytes=4096, durability="sync")
    _fill(engine, 400)
    only = engine.snapshot()
    _fill(engine, 20, start=400)
    engine.close()
    _damage(only.path)
    with pytest.raises(CorruptionError) as err:
        _reopen(tmp_path, keep_snapshots=1)
    assert "missing" in str(err.value)


def test_leftover_snapshot_temp_file_is_removed_at_start(tmp_path):
    engine = _reopen(tmp_path)
    _fill(engine, 10)
    engine.close()
    leftover = tmp_path / "snapshots" / ".snap-00000000000000000010.mws.tmp"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"partial")
    again = _reopen(tmp_path)
    assert not leftover.exists()
    assert any("removed" in w for w in again.recovery.warnings)
    again.close()


def test_crash_without_flush_recovers_a_prefix(tmp_path):
    engine = _reopen(tmp_path)
    _fill(engine, 200)
    engine.wait_durable(200)
    durable_image = engine.state.image_bytes()
    for i in range(50):
        engine.submit(r.Put(f"/late/{i}", encode(i)))
    engine.journal.abandon()       # a crash: whatever is still buffered is gone
    again = _reopen(tmp_path)
    assert 200 <= again.state.txid <= 250
    late = set(again.state.ns.list_prefix("/late/", limit=100))
    assert late == {f"/late/{i}" for i in range(again.state.txid - 200)}   # a prefix: no holes
    if again.state.txid == 200:
        assert again.state.image_bytes() == durable_image
    again.close()


def test_a_retried_request_is_recognised_after_a_restart(tmp_path):
    engine = _reopen(tmp_path)
    origin = (b"client-1", 41)
    txid, version = engine.submit(r.Put("/r", encode("x")), origin=origin)
    engine.submit(r.Put("/r", encode("y")))
    assert engine.recent(origin) == (txid, version)
    assert engine.recent((b"client-1", 42)) is None
    engine.close()
    again = _reopen(tmp_path)
    assert again.recent(origin) == (txid, version)
    again.close()


def test_records_come_from_the_tail_or_the_files_alike(tmp_path):
    engine = _reopen(tmp_path, tail_bytes=2000)     # a small tail: older records from files
    last = _fill(engine, 300)
    assert engine.wait_durable(last, timeout=10)
    got = []
    txid = 1
    while txid <= last:
        batch = engine.records(txid, max_bytes=700)
        assert batch and batch[0][0] == txid
        got.extend(batch)
        txid = batch[-1][0] + 1
    assert [t for t, _, _ in got] == list(range(1, last + 1))
    from mwcluster.core.records import decode_payload
    assert decode_payload(got[-1][2])[0] == r.Put(f"/k/{299 % 50:03d}", encode({"i": 299}))
    assert engine.records(last + 1) == []
    engine.close()


def test_records_below_the_oldest_kept_say_truncated(tmp_path):
    from mwcluster.errors import Truncated

    engine = _reopen(tmp_path, keep_snapshots=1, segment_bytes=4096, durability="sync",
                     tail_bytes=0)
    _fill(engine, 400)
    engine.snapshot()
    _fill(engine, 5, start=400)
    engine.snapshot()
    with pytest.raises(Truncated):
        engine.records(1)
    assert engine.records(engine.journal.first_txid)[0][0] == engine.journal.first_txid
    engine.close()


def test_a_merge_that_would_grow_a_value_past_the_limit_is_refused(tmp_path):
    from mwcluster.core.limits import Limits

    engine = _reopen(tmp_path, limits=Limits(max_value_bytes=1000), durability="sync")
    engine.submit(r.Put("/big", encode({"a": "x" * 600})))
    engine.submit(r.Put("/other", encode({"n": 1})))
    before = (engine.state.txid, engine.state.digest)
    with pytest.raises(InvalidRecord, match="/big would make its value .* the limit is 1000"):
        engine.submit(r.Merge("/big", encode({"b": "y" * 600})))
    with pytest.raises(MultiFailed, match="operation 1 .* the limit is 1000"):   # all or none
        engine.submit(r.Multi((r.Put("/other", encode({"n": 2})),
                               r.Merge("/big", encode({"b": "y" * 600})))))
    assert (engine.state.txid, engine.state.digest) == before
    assert engine.state.ns.get("/other") == {"n": 1}
    engine.submit(r.Merge("/big", encode({"b": "y" * 100})))      # within the limit
    engine.close()
    # what was accepted replays under a smaller limit: the limit applies to new merges only
    again = _reopen(tmp_path, limits=Limits(max_value_bytes=100))
    assert again.state.txid == before[0] + 1 and set(again.state.ns.get("/big")) == {"a", "b"}
    again.close()
