"""Crash and damage properties of the journal: truncation at every byte of the newest segment's
last records, zero-filled sectors, bit flips, damage in older segments, gaps between segments."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mwcluster.errors import CorruptionError
from mwcluster.storage import segments as seg
from mwcluster.storage.journal import Journal

PROPS = settings(max_examples=30, deadline=None)

payload_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=12)
roll_points = st.sets(st.integers(min_value=2, max_value=12), max_size=4)


def write_journal(wal: Path, payloads: list[bytes], rolls: set[int], epoch: int = 1
                  ) -> list[tuple[int, int, bytes]]:
    j = Journal(wal, epoch=epoch)
    j.open()
    written = []
    for txid, p in enumerate(payloads, start=1):
        if txid in rolls:
            j.roll()
        j.append(txid, epoch, p)
        written.append((txid, epoch, p))
    j.close()
    return written


def records(wal: Path) -> list[tuple[int, int, bytes]]:
    return list(seg.iter_records(wal))


def clear_broken(wal: Path) -> None:
    for p in wal.glob("*.broken*"):
        p.unlink()


def check_recovered_prefix(wal: Path, written, newest: Path, data: bytes, ends: list[int],
                           cut_data: bytes) -> int:
    """Recover `wal` whose newest segment holds `cut_data` (a damaged `data`); check that
    exactly the records wholly intact are kept and the cut bytes are in the .broken file."""
    rec = seg.recover_dir(wal)
    intact = len(cut_data) >= seg.HEADER_SIZE and cut_data[:seg.HEADER_SIZE] == data[:24]
    in_newest = sum(1 for e in ends if e <= len(cut_data) and cut_data[:e] == data[:e]) \
        if intact else 0
    older = sum(s.record_count for s in rec.segments if s.path != newest)
    n = older + in_newest
    assert records(wal) == written[:n]
    if not intact:
        assert not newest.exists()
        (broken,) = rec.broken_paths
        assert broken.read_bytes() == cut_data
    else:
        keep = ends[in_newest - 1] if in_newest else seg.HEADER_SIZE
        assert newest.read_bytes() == data[:keep]
        if len(cut_data) > keep:
            (broken,) = rec.broken_paths
            assert broken.name == f"{newest.name}.{keep}.broken"
            assert broken.read_bytes() == cut_data[keep:]
        else:
            assert rec.broken_paths == ()
    return n


def newest_layout(wal: Path) -> tuple[Path, bytes, list[int]]:
    newest = seg.list_segments(wal)[-1][1]
    data = newest.read_bytes()
    scan = seg.scan_segment(newest)
    ends = list(scan.offsets[1:]) + [len(data)] if scan.record_count else []
    return newest, data, ends


def reopen_and_append(wal: Path, written, n: int) -> None:
    j = Journal(wal, epoch=2)
    report = j.open()
    assert report.last_txid == n
    j.append(n + 1, 2, b"after recovery")
    j.close()
    assert records(wal) == written[:n] + [(n + 1, 2, b"after recovery")]


@settings(max_examples=20, deadline=None)  # each example recovers up to ~200 times
@given(payload_lists, roll_points, st.data())
def test_truncating_the_newest_segment_at_every_byte_recovers_a_prefix(payloads, rolls, data):
    with tempfile.TemporaryDirectory() as d:
        wal = Path(d) / "wal"
        written = write_journal(wal, payloads, rolls)
        newest, content, ends = newest_layout(wal)
        starts = [seg.HEADER_SIZE] + ends[:-1]
        first_cut = starts[-3] if len(starts) >= 3 else 0
        for cut in range(first_cut, len(content)):
            newest.write_bytes(content[:cut])
            clear_broken(wal)
            check_recovered_prefix(wal, written, newest, content, ends, content[:cut])
        cut = data.draw(st.integers(0, len(content) - 1), label="reopen at")
        newest.write_bytes(content[:cut])
        clear_broken(wal)
        n = check_recovered_prefix(wal, written, newest, content, ends, content[:cut])
        reopen_and_append(wal, written, n)


@PROPS
@given(payload_lists, roll_points, st.sampled_from([512, 4096]), st.booleans(), st.data())
def test_zero_filled_sectors_at_the_end_are_a_torn_tail(payloads, rolls, sector, append, data):
    with tempfile.TemporaryDirectory() as d:
        wal = Path(d) / "wal"
        written = write_journal(wal, payloads, rolls)
        newest, content, ends = newest_layout(wal)
        if append:  # the file grew but the last sectors were never written
            damaged = content + bytes(sector)
        else:  # the sectors from the one holding `pos` on are zeros
            pos = data.draw(st.integers(0, len(content) - 1), label="zeroed from")
            start = pos - pos % sector
            end = -(-len(content) // sector) * sector
            damaged = content[:start] + bytes(end - start)
        newest.write_bytes(damaged)
        n = check_recovered_prefix(wal, written, newest, content, ends, damaged)
        reopen_and_append(wal, written, n)


@PROPS
@given(payload_lists.filter(lambda p: len(p) >= 2), roll_points, st.data())
def test_a_bit_flip_followed_by_valid_records_is_corruption(payloads, rolls, data):
    with tempfile.TemporaryDirectory() as d:
        wal = Path(d) / "wal"
        write_journal(wal, payloads, rolls)
        # every record but the very last of the newest segment is followed by a valid one
        targets = []
        for _, path in seg.list_segments(wal):
            scan = seg.scan_segment(path)
            ends = list(scan.offsets[1:]) + [scan.size_bytes]
            targets += [(path, start, end, scan.first_txid + i)
                        for i, (start, end) in enumerate(zip(scan.offsets, ends, strict=True))]
        path, start, end, txid = data.draw(st.sampled_from(targets[:-1]), label="record")
        bit = data.draw(st.integers(0, (end - start) * 8 - 1), label="bit")
        content = bytearray(path.read_bytes())
        content[start + bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(content))
        with pytest.raises(CorruptionError) as info:
            Journal(wal).open()
        assert (info.value.path, info.value.offset, info.value.txid) == (str(path), start, txid)
        assert "mwcluster log verify" in str(info.value)
        assert seg.verify_dir(wal).corrupt
        assert path.read_bytes() == bytes(content)  # nothing was cut


@PROPS
@given(payload_lists.filter(lambda p: len(p) >= 3), st.data())
def test_damage_in_an_older_segment_is_corruption(payloads, data):
    with tempfile.TemporaryDirectory() as d:
        wal = Path(d) / "wal"
        write_journal(wal, payloads, {2, 3})
        listed = seg.list_segments(wal)
        k = data.draw(st.integers(0, len(listed) - 2), label="segment")
        path, following = listed[k][1], listed[k + 1][1]
        content = path.read_bytes()
        how = data.draw(st.sampled_from(["truncate", "zeros", "flip header"]), label="damage")
        if how == "truncate":
            damaged = content[:data.draw(st.integers(0, len(content) - 1), label="cut")]
        elif how == "zeros":
            damaged = content + bytes(512)
        else:
            damaged = bytes([content[0] ^ 1]) + content[1:]
        path.write_bytes(damaged)
        with pytest.raises(CorruptionError) as info:
            Journal(wal).open()
        # a cut exactly at a record boundary shows as a gap where the next segment starts
        assert info.value.path in (str(path), str(following))
        assert path.read_bytes() == damaged


@PROPS
@given(payload_lists.filter(lambda p: len(p) >= 3), st.data())
def test_a_gap_between_segments_is_corruption(payloads, data):
    with tempfile.TemporaryDirectory() as d:
        wal = Path(d) / "wal"
        write_journal(wal, payloads, set(range(2, len(payloads) + 1)))
        listed = seg.list_segments(wal)
        k = data.draw(st.integers(1, len(listed) - 2), label="segment removed")
        listed[k][1].unlink()
        with pytest.raises(CorruptionError, match="gap") as info:
            Journal(wal).open()
        assert info.value.path == str(listed[k + 1][1])
        assert info.value.txid == listed[k][0]
