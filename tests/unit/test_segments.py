"""Record framing, segment header, naming, scanning, verification and recovery of segment files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from mwcluster.errors import CorruptionError
from mwcluster.storage import segments as seg
from mwcluster.storage.segments import Verdict


def write_segment(directory: Path, first_txid: int, payloads: list[bytes], epoch: int = 1,
                  name_txid: int | None = None) -> Path:
    path = directory / seg.segment_name(first_txid if name_txid is None else name_txid)
    data = seg.encode_header(first_txid, epoch)
    for n, p in enumerate(payloads):
        data += seg.encode_record(first_txid + n, epoch, p)
    path.write_bytes(data)
    return path


def offsets_of(payloads: list[bytes]) -> list[int]:
    out, pos = [], seg.HEADER_SIZE
    for p in payloads:
        out.append(pos)
        pos += seg.FRAME_HEADER_SIZE + len(p)
    return out


# --- framing -------------------------------------------------------------------------------


def test_record_frame_layout_byte_by_byte():
    frame = seg.encode_record(0x0102030405060708, 7, b"hello")
    assert frame[0:2] == b"\xc3\x5a"
    assert frame[2:4] == b"\x00\x00"
    assert struct.unpack("<I", frame[4:8])[0] == 5
    assert struct.unpack("<Q", frame[8:16])[0] == 0x0102030405060708
    assert struct.unpack("<I", frame[16:20])[0] == 7
    assert struct.unpack("<I", frame[20:24])[0] == zlib.crc32(b"hello", zlib.crc32(frame[:20]))
    assert frame[24:] == b"hello"


def test_record_round_trip_at_an_offset():
    buf = b"junk" + seg.encode_record(9, 3, b"") + seg.encode_record(10, 3, b"abc")
    txid, epoch, payload, end = seg.decode_record(buf, 4)
    assert (txid, epoch, payload, end) == (9, 3, b"", 28)
    assert seg.decode_record(buf, end)[:3] == (10, 3, b"abc")


@pytest.mark.parametrize("damage, message", [
    (lambda f: b"\x00" + f[1:], "no sync marker"),
    (lambda f: f[:2] + b"\x01\x00" + f[4:], "unknown record flags"),
    (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "crc mismatch"),
    (lambda f: f[:-1], "runs past the end"),
    (lambda f: f[:10], "too few"),
])
def test_decode_record_rejects_damage(damage, message):
    frame = seg.encode_record(1, 1, b"payload")
    with pytest.raises(ValueError, match=message):
        seg.decode_record(damage(frame))


def test_decode_record_rejects_a_length_above_the_maximum():
    frame = seg.encode_record(1, 1, b"x" * 100)
    with pytest.raises(ValueError, match="above the maximum"):
        seg.decode_record(frame, max_record_bytes=99)


def test_segment_header_layout_and_round_trip():
    head = seg.encode_header(42, 5)
    assert len(head) == 24
    assert head[:4] == b"MWJL"
    assert struct.unpack("<HHQI", head[4:20]) == (1, 0, 42, 5)
    assert struct.unpack("<I", head[20:24])[0] == zlib.crc32(head[:20])
    assert seg.decode_header(head) == seg.SegmentHeader(42, 5, 1)


@pytest.mark.parametrize("damage, message", [
    (lambda h: b"XXXX" + h[4:], "magic"),
    (lambda h: h[:8] + bytes([h[8] ^ 1]) + h[9:], "crc"),
    (lambda h: h[:23], "23 bytes"),
])
def test_bad_segment_headers_are_refused(damage, message):
    with pytest.raises(ValueError, match=message):
        seg.decode_header(damage(seg.encode_header(1, 1)))


def test_unknown_format_version_is_refused():
    head = seg.SEGMENT_HEAD20.pack(b"MWJL", 2, 0, 1, 1)
    with pytest.raises(ValueError, match="version 2"):
        seg.decode_header(head + struct.pack("<I", zlib.crc32(head)))


def test_segment_names():
    assert seg.segment_name(17) == "00000000000000000017.wal"
    assert seg.parse_segment_name("00000000000000000017.wal") == 17
    for other in ("17.wal", "00000000000000000017.wal.24.broken", "0000000000000000001x.wal",
                  "00000000000000000017.snap"):
        assert seg.parse_segment_name(other) is None


def test_list_segments_sorts_by_txid_and_ignores_other_files(tmp_path):
    write_segment(tmp_path, 10, [b"a"])
    write_segment(tmp_path, 2, [b"a"] * 8)
    (tmp_path / "00000000000000000002.wal.40.broken").write_bytes(b"x")
    assert [t for t, _ in seg.list_segments(tmp_path)] == [2, 10]


# --- scanning one file ---------------------------------------------------------------------


def test_scan_of_a_valid_segment(tmp_path):
    payloads = [b"one", b"", b"three" * 20]
    path = write_segment(tmp_path, 5, payloads, epoch=3)
    scan = seg.scan_segment(path, expect_first_txid=5)
    assert scan.verdict is Verdict.OK
    assert (scan.first_txid, scan.last_txid, scan.record_count, scan.epoch) == (5, 7, 3, 3)
    assert list(scan.offsets) == offsets_of(payloads)
    assert scan.valid_end == scan.size_bytes == path.stat().st_size


def test_scan_of_a_header_only_segment(tmp_path):
    scan = seg.scan_segment(write_segment(tmp_path, 5, []))
    assert scan.verdict is Verdict.OK and scan.record_count == 0 and scan.last_txid is None


@pytest.mark.parametrize("cut", [1, 10, 23, 24, 30])
def test_truncation_inside_the_last_record_is_a_torn_tail(tmp_path, cut):
    payloads = [b"a" * 10, b"b" * 10]
    path = write_segment(tmp_path, 1, payloads)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    scan = seg.scan_segment(path)
    assert scan.verdict is Verdict.TORN_TAIL
    assert scan.record_count == 1 and scan.valid_end == offsets_of(payloads)[1]
    assert scan.problem_offset == scan.valid_end and scan.problem_txid == 2


@pytest.mark.parametrize("zeros", [512, 4096])
def test_zero_filled_tail_is_a_torn_tail(tmp_path, zeros):
    path = write_segment(tmp_path, 1, [b"a" * 10, b"b" * 10])
    path.write_bytes(path.read_bytes() + bytes(zeros))
    scan = seg.scan_segment(path)
    assert scan.verdict is Verdict.TORN_TAIL and scan.record_count == 2
    assert scan.cut_record_starts == 0


def test_torn_tail_counts_what_looked_like_record_starts(tmp_path):
    path = write_segment(tmp_path, 1, [b"a" * 10])
    path.write_bytes(path.read_bytes() + seg.encode_record(2, 1, b"b" * 50)[:40])
    scan = seg.scan_segment(path)
    assert scan.verdict is Verdict.TORN_TAIL and scan.cut_record_starts == 1


def test_bit_flip_followed_by_valid_records_is_corruption(tmp_path):
    payloads = [b"a" * 10, b"b" * 10, b"c" * 10]
    path = write_segment(tmp_path, 1, payloads)
    data = bytearray(path.read_bytes())
    data[offsets_of(payloads)[1] + 30] ^= 0x10
    path.write_bytes(bytes(data))
    scan = seg.scan_segment(path)
    assert scan.verdict is Verdict.CORRUPT
    assert scan.problem_offset == offsets_of(payloads)[1] and scan.problem_txid == 2
    assert "followed by a valid record (txid 3" in scan.problem


def test_txid_jump_inside_a_segment_is_corruption(tmp_path):
    path = tmp_path / seg.segment_name(1)
    path.write_bytes(seg.encode_header(1, 1) + seg.encode_record(1, 1, b"a")
                     + seg.encode_record(3, 1, b"b"))
    scan = seg.scan_segment(path)
    assert scan.verdict is Verdict.CORRUPT and "txid 3 where 2" in scan.problem


def test_first_record_must_match_the_header(tmp_path):
    path = tmp_path / seg.segment_name(1)
    path.write_bytes(seg.encode_header(1, 1) + seg.encode_record(2, 1, b"a"))
    assert seg.scan_segment(path).verdict is Verdict.CORRUPT


def test_header_must_match_the_file_name(tmp_path):
    path = write_segment(tmp_path, 1, [b"a"], name_txid=7)
    scan = seg.scan_segment(path, expect_first_txid=7)
    assert scan.verdict is Verdict.CORRUPT and "file name" in scan.problem


@pytest.mark.parametrize("content", [b"", b"MWJL\x01", bytes(24), bytes(4096)])
def test_short_or_zero_header_is_a_torn_header(tmp_path, content):
    path = tmp_path / seg.segment_name(1)
    path.write_bytes(content)
    assert seg.scan_segment(path, expect_first_txid=1).verdict is Verdict.TORN_HEADER


def test_damaged_header_before_records_is_corruption(tmp_path):
    path = write_segment(tmp_path, 1, [b"a", b"b"])
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    assert seg.scan_segment(path, expect_first_txid=1).verdict is Verdict.CORRUPT


# --- a directory ---------------------------------------------------------------------------


def test_verify_dir_reports_every_segment(tmp_path):
    write_segment(tmp_path, 1, [b"a"] * 3)
    write_segment(tmp_path, 4, [b"b"] * 2)
    report = seg.verify_dir(tmp_path)
    assert report.ok and not report.corrupt
    assert [(s.first_txid, s.last_txid) for s in report.segments] == [(1, 3), (4, 5)]
    assert (report.first_txid, report.last_txid, report.record_count) == (1, 5, 5)
    text = report.describe()
    assert "txids 1..3" in text and "txids 4..5" in text and "ok" in text
    data = report.to_dict()
    assert data["ok"] and data["problem"] is None and data["records"] == 5
    assert [(d["name"], d["first_txid"], d["last_txid"], d["records"]) for d in data["segments"]] \
        == [(seg.segment_name(1), 1, 3, 3), (seg.segment_name(4), 4, 5, 2)]


def test_verify_dir_tells_a_torn_tail_from_corruption_and_modifies_nothing(tmp_path):
    write_segment(tmp_path, 1, [b"a"] * 3)
    newest = write_segment(tmp_path, 4, [b"b"] * 2)
    damaged = newest.read_bytes()[:-3]
    newest.write_bytes(damaged)
    report = seg.verify_dir(tmp_path)
    assert report.problem_kind is Verdict.TORN_TAIL and not report.corrupt
    assert report.last_txid == 4
    assert "torn tail that recovery would cut" in report.describe()
    assert report.to_dict()["problem_kind"] == "torn_tail"
    assert newest.read_bytes() == damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == [seg.segment_name(1), seg.segment_name(4)]


def test_torn_tail_in_an_older_segment_is_corruption(tmp_path):
    older = write_segment(tmp_path, 1, [b"a"] * 3)
    write_segment(tmp_path, 4, [b"b"] * 2)
    older.write_bytes(older.read_bytes()[:-3])
    report = seg.verify_dir(tmp_path)
    assert report.corrupt and report.problem_path == older
    assert "CORRUPTION" in report.describe()


@pytest.mark.parametrize("second, problem", [(5, "gap"), (3, "overlap")])
def test_txid_discontinuity_between_segments_is_corruption(tmp_path, second, problem):
    write_segment(tmp_path, 1, [b"a"] * 3)
    write_segment(tmp_path, second, [b"b"])
    report = seg.verify_dir(tmp_path)
    assert report.corrupt and problem in report.problem and report.problem_txid == 4


def test_empty_segment_is_allowed_only_as_the_newest(tmp_path):
    write_segment(tmp_path, 1, [b"a"])
    write_segment(tmp_path, 2, [])
    assert seg.verify_dir(tmp_path).ok
    write_segment(tmp_path, 3, [b"b"])
    report = seg.verify_dir(tmp_path)
    assert report.corrupt and "empty segment" in report.problem


def test_recovery_cuts_the_torn_tail_and_keeps_the_bytes(tmp_path):
    payloads = [b"a" * 10, b"b" * 10]
    path = write_segment(tmp_path, 1, payloads)
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    rec = seg.recover_dir(tmp_path)
    boundary = offsets_of(payloads)[1]
    assert path.read_bytes() == data[:boundary]
    (broken,) = rec.broken_paths
    assert broken.name == f"{seg.segment_name(1)}.{boundary}.broken"
    assert broken.read_bytes() == data[boundary:-4]
    assert rec.cut_bytes == len(data) - 4 - boundary and rec.cut_records_guess == 1
    assert rec.segments[-1].verdict is Verdict.OK and rec.segments[-1].record_count == 1
    assert seg.verify_dir(tmp_path).ok


def test_recovery_keeps_an_earlier_broken_file_at_the_same_offset(tmp_path):
    path = write_segment(tmp_path, 1, [b"a"])
    good = path.read_bytes()
    path.write_bytes(good + b"first")
    first = seg.recover_dir(tmp_path).broken_paths[0]
    path.write_bytes(good + b"second")
    second = seg.recover_dir(tmp_path).broken_paths[0]
    assert first != second
    assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")


def test_recovery_moves_a_torn_header_aside(tmp_path):
    write_segment(tmp_path, 1, [b"a"] * 2)
    torn = tmp_path / seg.segment_name(3)
    torn.write_bytes(b"MWJL\x01\x00")
    rec = seg.recover_dir(tmp_path)
    assert not torn.exists()
    assert rec.broken_paths[0].read_bytes() == b"MWJL\x01\x00"
    assert [s.first_txid for s in rec.segments] == [1]


def test_recovery_refuses_corruption_with_an_actionable_message(tmp_path):
    payloads = [b"a" * 10, b"b" * 10]
    path = write_segment(tmp_path, 1, payloads)
    data = bytearray(path.read_bytes())
    data[offsets_of(payloads)[0] + 25] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as info:
        seg.recover_dir(tmp_path)
    err = info.value
    assert err.path == str(path) and err.offset == seg.HEADER_SIZE and err.txid == 1
    assert f"mwcluster log verify {tmp_path}" in str(err)
    assert f"mwcluster log dump {tmp_path}" in str(err)
    assert path.read_bytes() == bytes(data)
    assert len(list(tmp_path.iterdir())) == 1


def test_iter_records_from_a_txid_across_segments(tmp_path):
    write_segment(tmp_path, 1, [b"1", b"2", b"3"], epoch=1)
    write_segment(tmp_path, 4, [b"4", b"5"], epoch=2)
    assert list(seg.iter_records(tmp_path)) == [
        (1, 1, b"1"), (2, 1, b"2"), (3, 1, b"3"), (4, 2, b"4"), (5, 2, b"5")]
    assert [t for t, _, _ in seg.iter_records(tmp_path, 3)] == [3, 4, 5]
    assert [t for t, _, _ in seg.iter_records(tmp_path, 5)] == [5]
    assert list(seg.iter_records(tmp_path, 6)) == []


def test_iter_records_stops_at_a_torn_tail_and_raises_on_corruption(tmp_path):
    older = write_segment(tmp_path, 1, [b"1", b"2"])
    newest = write_segment(tmp_path, 3, [b"3", b"4"])
    newest.write_bytes(newest.read_bytes()[:-1])
    assert [t for t, _, _ in seg.iter_records(tmp_path)] == [1, 2, 3]
    older.write_bytes(older.read_bytes()[:-1])
    with pytest.raises(CorruptionError, match="not the newest"):
        list(seg.iter_records(tmp_path))


def test_read_records_at_refuses_damaged_durable_data(tmp_path):
    payloads = [b"a" * 10, b"b" * 10]
    path = write_segment(tmp_path, 1, payloads)
    assert [t for t, _, _ in seg.read_records_at(path, 24, 1, 10)] == [1, 2]
    assert [t for t, _, _ in seg.read_records_at(path, offsets_of(payloads)[1], 2, 2)] == [2]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as info:
        list(seg.read_records_at(path, 24, 1, 2))
    assert info.value.txid == 2
