"""The crash simulator: real journal segments and snapshots, written by an Engine running a
realistic history (namespace updates, multis, a job with workers, assignments, progress and
finishes, two snapshots), then damaged the ways disks and crashes damage files. Every
recovery is from a fresh copy of the files and is checked against the digest the live state
had at the txid it recovered to:

- the newest segment cut at every record boundary, inside every frame of its last records,
  at random offsets and inside its header; zero-filled 512-byte and 4 KiB sectors over its
  end or after it: an exact prefix, never less than what the older files hold;
- a flipped bit in the newest segment's last record: the prefix before it; in any earlier
  record (older segments included): a refusal naming the file, the offset and the txid;
- the newest snapshot cut or flipped anywhere: the previous snapshot and a longer replay give
  the same state; both snapshots damaged while the journal no longer reaches back to txid 1:
  a refusal that names the missing records.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from mwcluster.core import records as r
from mwcluster.core.state import State
from mwcluster.core.values import encode
from mwcluster.engine import Engine
from mwcluster.errors import CorruptionError
from mwcluster.storage import segments
from mwcluster.storage import snapshot as snapshots

pytestmark = pytest.mark.fault

SEGMENT_BYTES = 6 << 10


def history(rng: random.Random, count: int, start: int) -> list[r.Record]:
    """A mixed history; every record applies on the state the ones before it make."""
    out: list[r.Record] = []
    for i in range(start, start + count):
        roll = rng.random()
        key = f"/ds/{rng.randrange(40):02d}"
        if roll < 0.5:
            out.append(r.Put(key, encode({"i": i, "pad": "x" * rng.randrange(80)})))
        elif roll < 0.7:
            out.append(r.Put(f"/new/{i}", encode([i, i * 2])))
        elif roll < 0.85:
            out.append(r.Multi((r.Put(f"/m/{i}/a", encode(i)), r.Put(f"/m/{i}/b", encode(-i)))))
        else:
            out.append(r.Noop(f"note {i}"))
    return out


def job_history(now: int) -> list[r.Record]:
    recs: list[r.Record] = [
        r.JobSubmit("wc", "wordcount", "count", 0, 2, [[f"shard-{i}", {}] for i in range(6)],
                    now),
        r.WorkerRegister("w1", "host-a", 2, now + 1), r.WorkerRegister("w2", "host-b", 2, now + 2),
    ]
    for index in range(4):
        worker = "w1" if index % 2 == 0 else "w2"
        recs += [r.TaskAssign("wc", index, worker, 1, now + 10 + index),
                 r.TaskProgress("wc", index, 1, 0.5, {"lines": 10 * index}, now + 20 + index)]
    recs += [r.TaskFinish("wc", 0, 1, True, {"words": 120}, now + 30),
             r.WorkerLost("w2", "missed heartbeats", now + 40),
             r.TaskFinish("wc", 2, 1, False, "disk error", now + 41)]
    return recs


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> tuple[Path, dict[int, int], int]:
    """A data directory, the live digest after every txid, and the last txid."""
    data = tmp_path_factory.mktemp("torn") / "data"
    rng = random.Random(20261126)
    engine = Engine(data, segment_bytes=SEGMENT_BYTES, keep_snapshots=2, durability="sync",
                    epoch=1)
    engine.open()
    digests = {0: engine.state.digest}
    plan = [history(rng, 150, 0), job_history(1000), history(rng, 150, 150), "snapshot",
            history(rng, 120, 300), "snapshot", history(rng, 90, 420)]
    for step in plan:
        if step == "snapshot":
            engine.snapshot(created_ms=1)
            continue
        for rec in step:
            txid, _ = engine.submit(rec)
            digests[txid] = engine.state.digest
    last = engine.state.txid
    engine.close()
    assert len(segments.list_segments(data / "journal")) >= 3
    assert len(snapshots.list_snapshots(data / "snapshots")) == 2
    return data, digests, last


def copy_of(original_dir: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(original_dir, target)
    return target


def recover(data: Path) -> State:
    engine = Engine(data, epoch=2)
    try:
        engine.open()
        problems = engine.state.validate()
        assert problems == [], problems
        return engine.state
    finally:
        engine.close()


def newest_segment(data: Path) -> Path:
    return segments.list_segments(data / "journal")[-1][1]


def frame_ends(path: Path) -> list[tuple[int, int]]:
    """(txid, end offset) of every record in a segment."""
    scan = segments.scan_segment(path)
    offsets = list(scan.offsets)
    ends = offsets[1:] + [scan.valid_end]
    return [(scan.first_txid + i, end) for i, end in enumerate(ends)]


def assert_exact_prefix(state: State, digests: dict[int, int], at_least: int) -> None:
    assert state.txid >= at_least, f"recovered only to {state.txid}; {at_least} was durable"
    assert state.digest == digests[state.txid], f"state at {state.txid} is not the prefix"


def test_cut_at_every_record_boundary_and_inside_frames(original, tmp_path):
    data0, digests, last = original
    seg = newest_segment(data0)
    ends = frame_ends(seg)
    first_txid = ends[0][0]
    offsets = {segments.HEADER_SIZE} | {end for _, end in ends}
    starts = [segments.HEADER_SIZE] + [end for _, end in ends[:-1]]
    offsets |= set(range(starts[-4], ends[-1][1]))    # every byte of the last four frames
    rng = random.Random(7)
    offsets |= {rng.randrange(segments.HEADER_SIZE, seg.stat().st_size) for _ in range(40)}
    size = seg.stat().st_size
    assert len(offsets) > 100 and len(ends) >= 8, (len(offsets), len(ends))
    for n, offset in enumerate(sorted(offsets)):
        data = copy_of(data0, tmp_path, f"cut{n}")
        with open(newest_segment(data), "r+b") as f:
            f.truncate(offset)
        state = recover(data)
        complete = max((t for t, e in ends if e <= offset), default=first_txid - 1)
        assert state.txid == complete, (offset, size, state.txid, complete)
        assert_exact_prefix(state, digests, complete)
        shutil.rmtree(data)


@pytest.mark.parametrize("cut", list(range(0, segments.HEADER_SIZE)))
def test_cut_inside_the_newest_segments_header(original, tmp_path, cut):
    data0, digests, _ = original
    data = copy_of(data0, tmp_path, "d")
    seg = newest_segment(data)
    first_txid = segments.parse_segment_name(seg.name)
    with open(seg, "r+b") as f:
        f.truncate(cut)
    state = recover(data)
    assert state.txid == first_txid - 1
    assert_exact_prefix(state, digests, first_txid - 1)


@pytest.mark.parametrize("sector", [512, 4096])
@pytest.mark.parametrize("where", ["over-the-end", "after-the-end"])
def test_zero_filled_sectors_at_the_tail(original, tmp_path, sector, where):
    data0, digests, last = original
    data = copy_of(data0, tmp_path, "d")
    seg = newest_segment(data)
    ends = frame_ends(seg)
    raw = bytearray(seg.read_bytes())
    if where == "over-the-end":
        start = max(segments.HEADER_SIZE, len(raw) - sector)
        raw[start:] = bytes(len(raw) - start)
        intact = max((t for t, e in ends if e <= start), default=ends[0][0] - 1)
    else:
        raw += bytes(sector)
        intact = last
    seg.write_bytes(bytes(raw))
    state = recover(data)
    assert state.txid == intact
    assert_exact_prefix(state, digests, intact)


def test_a_bit_flip_in_the_last_record_loses_only_that_record(original, tmp_path):
    data0, digests, last = original
    ends = frame_ends(newest_segment(data0))
    start = ends[-2][1]
    rng = random.Random(11)
    for n in range(12):
        data = copy_of(data0, tmp_path, f"f{n}")
        seg = newest_segment(data)
        raw = bytearray(seg.read_bytes())
        pos = rng.randrange(start, len(raw))
        raw[pos] ^= 1 << rng.randrange(8)
        seg.write_bytes(bytes(raw))
        state = recover(data)
        assert state.txid == last - 1, (pos, state.txid)
        assert_exact_prefix(state, digests, last - 1)
        shutil.rmtree(data)


def test_a_bit_flip_before_the_tail_is_refused_with_where(original, tmp_path):
    data0, _, _ = original
    rng = random.Random(13)
    segs = segments.list_segments(data0 / "journal")
    for n in range(16):
        data = copy_of(data0, tmp_path, f"f{n}")
        index = rng.randrange(len(segs))
        seg = segments.list_segments(data / "journal")[index][1]
        ends = frame_ends(seg)
        limit = ends[-2][1] if index == len(segs) - 1 else ends[-1][1]
        raw = bytearray(seg.read_bytes())
        pos = rng.randrange(segments.HEADER_SIZE, limit)
        raw[pos] ^= 1 << rng.randrange(8)
        seg.write_bytes(bytes(raw))
        with pytest.raises(CorruptionError) as info:
            recover(data)
        err = info.value
        assert err.path and Path(err.path).name == seg.name, (pos, str(err))
        assert err.offset is not None and err.offset <= pos, (pos, str(err))
        assert err.txid is not None, str(err)
        shutil.rmtree(data)


def test_a_damaged_newest_snapshot_falls_back_to_the_previous_one(original, tmp_path):
    data0, digests, last = original
    rng = random.Random(17)
    for n in range(12):
        data = copy_of(data0, tmp_path, f"s{n}")
        (older_txid, _), (newest_txid, path) = sorted(
            snapshots.list_snapshots(data / "snapshots"))
        raw = bytearray(path.read_bytes())
        if n % 2:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        else:
            del raw[rng.randrange(len(raw)):]
        path.write_bytes(bytes(raw))
        engine = Engine(data, epoch=2)
        report = engine.open()
        try:
            assert report.snapshot_txid == older_txid, report
            assert [p for p, _ in report.skipped_snapshots] == [str(path)]
            assert engine.state.txid == last and engine.state.digest == digests[last]
        finally:
            engine.close()
        shutil.rmtree(data)


def test_both_snapshots_damaged_past_the_journal_is_refused(original, tmp_path):
    data0, _, _ = original
    data = copy_of(data0, tmp_path, "d")
    first = segments.list_segments(data / "journal")[0][0]
    assert first > 1, "the snapshots let the journal be purged"
    for _, path in snapshots.list_snapshots(data / "snapshots"):
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        path.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match=f"records 1..{first - 1} are missing"):
        recover(data)
