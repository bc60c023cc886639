"""Journal segment files: record framing, the segment header, naming, scanning, verification
and torn-tail recovery. Knows nothing of what a payload means.

A journal directory holds segment files named ``{first_txid:020d}.wal``. All integers are
little-endian. Segment header, 24 bytes::

    offset  size  field
         0     4  magic            b"MWJL"
         4     2  format version   u16 = 1
         6     2  reserved         u16 = 0
         8     8  first_txid       u64, txid of the first record of this segment (= file name)
        16     4  epoch            u32, epoch of the writer that created the segment
        20     4  crc32            u32, zlib.crc32 of bytes 0..20
        24        records, back to back, up to the end of the file

Record frame, a 24-byte header then the payload::

    offset  size  field
         0     2  sync marker      C3 5A
         2     2  flags            u16 = 0
         4     4  payload length   u32, <= max_record_bytes (64 MiB by default)
         8     8  txid             u64, previous record's txid + 1
        16     4  epoch            u32, epoch of the writer of the record
        20     4  crc32            u32, zlib.crc32(payload, zlib.crc32(bytes 0..20))
        24   len  payload

The sync marker lets a scanner resynchronise with ``bytes.find`` after damage: damage followed
by a valid record with a larger txid is corruption; damage followed by nothing valid is a torn
tail (a crash in the middle of a write), which only the newest segment may have.
"""

from __future__ import annotations

import enum
import logging
import os
import struct
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from mwcluster.errors import CorruptionError, StorageError
from mwcluster.storage.fsutil import JournalIO, cut_aside

_log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"MWJL"
FORMAT_VERSION = 1
SEGMENT_SUFFIX = ".wal"
SYNC_MARKER = b"\xc3\x5a"
HEADER_SIZE = 24
FRAME_HEADER_SIZE = 24
DEFAULT_MAX_RECORD_BYTES = 64 << 20

SEGMENT_HEAD20 = struct.Struct("<4sHHQI")  # header bytes 0..20; the crc32 follows
FRAME_HEAD20 = struct.Struct("<2sHIQI")  # frame bytes 0..20; the crc32 follows
FRAME_HEAD = struct.Struct("<2sHIQII")
U32 = struct.Struct("<I")
_ZERO_HEADER = bytes(HEADER_SIZE)


def inspect_hint(directory: str | os.PathLike[str]) -> str:
    """The sentence every corruption message ends with."""
    return f"inspect with `mwcluster log verify {directory}` / `mwcluster log dump {directory}`"


class Verdict(enum.StrEnum):
    OK = "ok"
    TORN_TAIL = "torn_tail"  # trailing bytes that are no valid record: cut at recovery
    TORN_HEADER = "torn_header"  # crash while creating the file: moved aside at recovery
    CORRUPT = "corrupt"  # damage that a crash cannot explain: startup must stop


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    first_txid: int
    epoch: int
    version: int = FORMAT_VERSION


# --- naming and encoding -------------------------------------------------------------------


def segment_name(first_txid: int) -> str:
    return f"{first_txid:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    stem, dot, ext = name.partition(".")
    if dot + ext != SEGMENT_SUFFIX or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def list_segments(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The segment files of a directory as (first_txid, path), oldest first."""
    directory = Path(directory)
    found = []
    for entry in os.scandir(directory):
        txid = parse_segment_name(entry.name)
        if txid is not None:
            found.append((txid, directory / entry.name))
    found.sort()
    return found


def encode_header(first_txid: int, epoch: int) -> bytes:
    head = SEGMENT_HEAD20.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, first_txid, epoch)
    return head + U32.pack(zlib.crc32(head))


def header_problem(data: bytes) -> str | None:
    """Why the first 24 bytes of `data` are not a valid segment header, or None."""
    if len(data) < HEADER_SIZE:
        return f"segment header is {len(data)} bytes long, not {HEADER_SIZE}"
    magic, version, reserved, _, _ = SEGMENT_HEAD20.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        return f"bad segment magic {magic!r}"
    if U32.unpack_from(data, 20)[0] != zlib.crc32(data[:20]):
        return "segment header crc mismatch"
    if version != FORMAT_VERSION:
        return f"unknown segment format version {version}"
    if reserved != 0:
        return f"reserved header field is {reserved}, not 0"
    return None


def decode_header(data: bytes) -> SegmentHeader:
    """Parse a segment header; ValueError says what is wrong with it."""
    problem = header_problem(data)
    if problem is not None:
        raise ValueError(problem)
    _, version, _, first_txid, epoch = SEGMENT_HEAD20.unpack_from(data)
    return SegmentHeader(first_txid, epoch, version)


def encode_record(txid: int, epoch: int, payload: bytes) -> bytes:
    head = FRAME_HEAD20.pack(SYNC_MARKER, 0, len(payload), txid, epoch)
    return head + U32.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def frame_problem(buf: bytes | memoryview, pos: int, max_record_bytes: int
                  ) -> tuple[str | None, int, int, int]:
    """Check the frame at `pos`: (problem or None, txid, epoch, end offset of the frame)."""
    size = len(buf)
    if size - pos < FRAME_HEADER_SIZE:
        return f"{size - pos} bytes left, too few for a record header", 0, 0, size
    sync, flags, length, txid, epoch, crc = FRAME_HEAD.unpack_from(buf, pos)
    if sync != SYNC_MARKER:
        return "no sync marker", 0, 0, size
    if flags != 0:
        return f"unknown record flags {flags:#x}", 0, 0, size
    if length > max_record_bytes:
        return f"payload length {length} above the maximum {max_record_bytes}", 0, 0, size
    end = pos + FRAME_HEADER_SIZE + length
    if end > size:
        return f"record of {length} payload bytes runs past the end of the file", 0, 0, size
    view = memoryview(buf)
    if zlib.crc32(view[pos + FRAME_HEADER_SIZE:end], zlib.crc32(view[pos:pos + 20])) != crc:
        return "record crc mismatch", txid, epoch, end
    return None, txid, epoch, end


def decode_record(buf: bytes, pos: int = 0, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
                  ) -> tuple[int, int, bytes, int]:
    """Decode the frame at `pos`: (txid, epoch, payload, end offset). ValueError if invalid."""
    problem, txid, epoch, end = frame_problem(buf, pos, max_record_bytes)
    if problem is not None:
        raise ValueError(f"{problem} at offset {pos}")
    return txid, epoch, bytes(buf[pos + FRAME_HEADER_SIZE:end]), end


# --- scanning one segment ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What a scan found in one segment file. Record i has txid first_txid + i, offsets[i]."""

    path: Path
    first_txid: int  # from the header; from the file name when the header is unreadable
    epoch: int | None  # the header's epoch, None when the header is unreadable
    record_count: int
    valid_end: int  # end offset of the last valid record (HEADER_SIZE when none)
    size_bytes: int
    verdict: Verdict
    problem: str | None = None
    problem_offset: int | None = None
    problem_txid: int | None = None  # the txid expected at the damage point
    cut_record_starts: int = 0  # sync markers in the cut bytes that looked like frame starts
    offsets: array | None = None

    @property
    def last_txid(self) -> int | None:
        return self.first_txid + self.record_count - 1 if self.record_count else None


def _find_valid_frame(data: bytes, start: int, max_record_bytes: int, min_txid: int
                      ) -> tuple[int, int] | None:
    """The first valid frame at or after `start` whose txid >= min_txid: (offset, txid)."""
    pos = data.find(SYNC_MARKER, start)
    while pos >= 0:
        problem, txid, _, _ = frame_problem(data, pos, max_record_bytes)
        if problem is None and txid >= min_txid:
            return pos, txid
        pos = data.find(SYNC_MARKER, pos + 1)
    return None


def _count_record_starts(data: bytes, start: int, max_record_bytes: int) -> int:
    """Sync markers in data[start:] whose flags and length (where present) look sane."""
    count = 0
    pos = data.find(SYNC_MARKER, start)
    while pos >= 0:
        if len(data) - pos < 8:
            count += 1
        else:
            flags, length = struct.unpack_from("<HI", data, pos + 2)
            count += flags == 0 and length <= max_record_bytes
        pos = data.find(SYNC_MARKER, pos + 1)
    return count


def scan_bytes(path: Path, data: bytes, *, expect_first_txid: int | None = None,
               max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, keep_offsets: bool = True
               ) -> SegmentScan:
    """Scan the contents of a segment file (see `scan_segment`)."""
    size = len(data)
    named = expect_first_txid if expect_first_txid is not None else 0
    problem = header_problem(data)
    if problem is not None:
        later = _find_valid_frame(data, 0, max_record_bytes, 0)
        if later is None and (size < HEADER_SIZE or data[:HEADER_SIZE] == _ZERO_HEADER):
            verdict, problem = Verdict.TORN_HEADER, f"torn segment header ({problem})"
        else:
            verdict = Verdict.CORRUPT
        return SegmentScan(path, named, None, 0, 0, size, verdict, problem, 0, named)
    header = decode_header(data)
    first = header.first_txid
    if expect_first_txid is not None and first != expect_first_txid:
        return SegmentScan(path, first, header.epoch, 0, HEADER_SIZE, size, Verdict.CORRUPT,
                           f"header first_txid {first} does not match the file name "
                           f"({expect_first_txid})", 8, expect_first_txid)
    offsets = array("Q")
    pos, expected = HEADER_SIZE, first
    verdict, problem, cut_starts = Verdict.OK, None, 0
    while pos < size:
        bad, txid, _, end = frame_problem(data, pos, max_record_bytes)
        if bad is None:
            if txid != expected:
                verdict = Verdict.CORRUPT
                problem = f"record txid {txid} where {expected} was expected"
                break
            if keep_offsets:
                offsets.append(pos)
            pos, expected = end, expected + 1
            continue
        later = _find_valid_frame(data, pos + 1, max_record_bytes, expected)
        if later is not None:
            verdict = Verdict.CORRUPT
            problem = (f"damaged record ({bad}) followed by a valid record "
                       f"(txid {later[1]} at offset {later[0]})")
        else:
            verdict = Verdict.TORN_TAIL
            problem = f"torn tail: the last {size - pos} bytes are not a valid record ({bad})"
            cut_starts = _count_record_starts(data, pos, max_record_bytes)
        break
    count = expected - first
    if verdict is Verdict.OK:
        return SegmentScan(path, first, header.epoch, count, pos, size, verdict,
                           offsets=offsets if keep_offsets else None)
    return SegmentScan(path, first, header.epoch, count, pos, size, verdict, problem, pos,
                       expected, cut_starts, offsets if keep_offsets else None)


def scan_segment(path: str | os.PathLike[str], *, expect_first_txid: int | None = None,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, keep_offsets: bool = True
                 ) -> SegmentScan:
    """Read and check one segment file; never modifies it.

    The verdict says whether it is all valid, ends with a torn tail (nothing valid with a
    larger txid after the damage), has a torn header (shorter than 24 bytes or 24 zero bytes,
    nothing valid after), or is corrupt. `expect_first_txid` is the txid from the file name.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise StorageError(f"cannot read journal segment {path}: {e}") from e
    return scan_bytes(path, data, expect_first_txid=expect_first_txid,
                      max_record_bytes=max_record_bytes, keep_offsets=keep_offsets)


# --- a directory of segments ---------------------------------------------------------------


def _classify(scan: SegmentScan, newest: bool, prev_last: int | None
              ) -> tuple[Verdict, str, int | None, int | None] | None:
    """The problem of one segment in its place in the directory, or None."""
    v = scan.verdict
    if v is Verdict.CORRUPT:
        return v, scan.problem or "corrupt", scan.problem_offset, scan.problem_txid
    if v is Verdict.TORN_HEADER:
        if newest:
            return v, scan.problem or "torn header", 0, scan.first_txid
        return (Verdict.CORRUPT, f"{scan.problem} in a segment that is not the newest", 0,
                scan.first_txid)
    if prev_last is not None and scan.first_txid != prev_last + 1:
        kind = "gap" if scan.first_txid > prev_last + 1 else "overlap"
        return (Verdict.CORRUPT, f"txid {kind} between segments: the previous one ends at "
                f"{prev_last}, this one starts at {scan.first_txid}", 8, prev_last + 1)
    if not newest:
        if v is Verdict.TORN_TAIL:
            return (Verdict.CORRUPT, f"{scan.problem}, in a segment that is not the newest "
                    "(each segment is fsynced whole before the next is started)",
                    scan.problem_offset, scan.problem_txid)
        if scan.record_count == 0:
            return (Verdict.CORRUPT, "empty segment that is not the newest", HEADER_SIZE,
                    scan.first_txid)
    if v is Verdict.TORN_TAIL:
        return v, scan.problem or "torn tail", scan.problem_offset, scan.problem_txid
    return None


@dataclass(frozen=True, slots=True)
class DirReport:
    """Every segment of a journal directory and the first problem found, if any."""

    directory: Path
    segments: tuple[SegmentScan, ...]
    problem: str | None = None
    problem_kind: Verdict | None = None  # TORN_TAIL / TORN_HEADER: recovery fixes it; CORRUPT
    problem_path: Path | None = None
    problem_offset: int | None = None
    problem_txid: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def corrupt(self) -> bool:
        return self.problem_kind is Verdict.CORRUPT

    @property
    def kept(self) -> tuple[SegmentScan, ...]:
        """The segments recovery keeps (a torn-header newest segment is treated as absent)."""
        if self.segments and self.segments[-1].verdict is Verdict.TORN_HEADER:
            return self.segments[:-1]
        return self.segments

    @property
    def first_txid(self) -> int | None:
        return next((s.first_txid for s in self.kept if s.record_count), None)

    @property
    def last_txid(self) -> int | None:
        return next((s.last_txid for s in reversed(self.kept) if s.record_count), None)

    @property
    def record_count(self) -> int:
        return sum(s.record_count for s in self.kept)

    def to_dict(self) -> dict:
        """The report as plain data (for `log verify --json`)."""
        return {
            "directory": str(self.directory), "ok": self.ok, "problem": self.problem,
            "problem_kind": self.problem_kind and str(self.problem_kind),
            "problem_path": self.problem_path and str(self.problem_path),
            "problem_offset": self.problem_offset, "problem_txid": self.problem_txid,
            "first_txid": self.first_txid, "last_txid": self.last_txid,
            "records": self.record_count,
            "segments": [{"name": s.path.name, "first_txid": s.first_txid,
                          "last_txid": s.last_txid, "records": s.record_count, "epoch": s.epoch,
                          "bytes": s.size_bytes, "valid_bytes": s.valid_end,
                          "verdict": str(s.verdict), "problem": s.problem,
                          "problem_offset": s.problem_offset} for s in self.segments],
        }

    def describe(self) -> str:
        """A human-readable report, one line per segment, then the verdict."""
        lines = [f"journal {self.directory}: {len(self.segments)} segment(s)"]
        for s in self.segments:
            span = f"txids {s.first_txid}..{s.last_txid}" if s.record_count else "no records"
            lines.append(f"  {s.path.name}  epoch {s.epoch}  {s.record_count} records  {span}  "
                         f"{s.size_bytes} bytes  {s.verdict}")
        if self.problem is None:
            lines.append("ok: every record is valid")
        else:
            what = {Verdict.TORN_TAIL: "torn tail that recovery would cut",
                    Verdict.TORN_HEADER: "torn header that recovery would move aside",
                    Verdict.CORRUPT: "CORRUPTION: the journal cannot be opened"}[self.problem_kind]
            lines.append(f"{what}: {self.problem} (file {self.problem_path}, offset "
                         f"{self.problem_offset}, txid {self.problem_txid})")
        return "\n".join(lines)


def verify_dir(directory: str | os.PathLike[str], *,
               max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, keep_offsets: bool = False
               ) -> DirReport:
    """Check every segment of a journal directory without modifying anything."""
    directory = Path(directory)
    try:
        listed = list_segments(directory)
    except OSError as e:
        raise StorageError(f"cannot list journal directory {directory}: {e}") from e
    scans: list[SegmentScan] = []
    first_problem = None
    prev_last = None
    for i, (name_txid, path) in enumerate(listed):
        scan = scan_segment(path, expect_first_txid=name_txid,
                            max_record_bytes=max_record_bytes, keep_offsets=keep_offsets)
        scans.append(scan)
        if first_problem is None:
            found = _classify(scan, i == len(listed) - 1, prev_last)
            if found is not None:
                first_problem = (found, path)
        prev_last = scan.last_txid if scan.record_count else scan.first_txid - 1
    if first_problem is None:
        return DirReport(directory, tuple(scans))
    (kind, problem, offset, txid), path = first_problem
    return DirReport(directory, tuple(scans), problem, kind, path, offset, txid)


def corruption_error(report: DirReport) -> CorruptionError:
    return CorruptionError(
        f"journal {report.directory} is damaged where a crash cannot explain it: "
        f"{report.problem}; the journal cannot be opened; {inspect_hint(report.directory)}",
        path=str(report.problem_path), offset=report.problem_offset, txid=report.problem_txid)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What recovery kept and what it cut."""

    segments: tuple[SegmentScan, ...]  # the segments kept, oldest first, as they are now
    cut_bytes: int = 0
    cut_records_guess: int = 0
    broken_paths: tuple[Path, ...] = ()


def recover_dir(directory: str | os.PathLike[str], *, io: JournalIO | None = None,
                max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Recovery:
    """Check a journal directory and repair what a crash explains: cut the torn tail of the
    newest segment (the cut bytes are kept, fsynced, in a `.broken` file beside it) or move a
    newest segment with a torn header aside whole. Raises CorruptionError for anything else.
    """
    io = io or JournalIO()
    report = verify_dir(directory, max_record_bytes=max_record_bytes, keep_offsets=True)
    if report.corrupt:
        raise corruption_error(report)
    if report.ok:
        return Recovery(report.segments)
    newest = report.segments[-1]
    kept = list(report.segments)
    torn_header = report.problem_kind is Verdict.TORN_HEADER
    try:
        broken, cut = cut_aside(io, newest.path, 0 if torn_header else newest.valid_end)
    except OSError as e:
        raise StorageError(f"cannot repair the torn end of journal segment {newest.path}: {e}; "
                           f"check the disk and permissions, then start again") from e
    _log.warning("journal %s: %s; cut %d bytes at offset %d of %s (kept in %s); last txid %s",
                 report.directory, report.problem, cut, report.problem_offset, newest.path.name,
                 broken.name, report.last_txid)
    if torn_header:
        kept.pop()
        return Recovery(tuple(kept), cut, 0, (broken,))
    kept[-1] = replace(newest, size_bytes=newest.valid_end, verdict=Verdict.OK, problem=None,
                       problem_offset=None, problem_txid=None)
    return Recovery(tuple(kept), cut, newest.cut_record_starts, (broken,))


# --- reading records -----------------------------------------------------------------------


def iter_records(directory: str | os.PathLike[str], from_txid: int = 1, *,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
                 ) -> Iterator[tuple[int, int, bytes]]:
    """Yield (txid, epoch, payload) for every record with txid >= from_txid, oldest first.

    Read-only. Stops at a torn tail of the newest segment (the records recovery would keep);
    raises CorruptionError on anything else, when it reaches it. Segments wholly below
    from_txid are skipped unread. The caller checks that the first txid is the one it needs.
    """
    directory = Path(directory)
    listed = list_segments(directory)
    start = max(0, bisect_right([t for t, _ in listed], from_txid) - 1)
    prev_last = None
    for i in range(start, len(listed)):
        name_txid, path = listed[i]
        try:
            data = path.read_bytes()
        except OSError as e:
            raise StorageError(f"cannot read journal segment {path}: {e}") from e
        scan = scan_bytes(path, data, expect_first_txid=name_txid,
                          max_record_bytes=max_record_bytes)
        found = _classify(scan, i == len(listed) - 1, prev_last)
        if found is not None and found[0] is Verdict.CORRUPT:
            raise corruption_error(DirReport(directory, (scan,), found[1], found[0], path,
                                             found[2], found[3]))
        if scan.verdict is Verdict.TORN_HEADER:
            return
        view = memoryview(data)
        for n, pos in enumerate(scan.offsets):
            txid = scan.first_txid + n
            if txid >= from_txid:
                length, _, epoch = struct.unpack_from("<IQI", data, pos + 4)
                yield txid, epoch, bytes(view[pos + FRAME_HEADER_SIZE:
                                              pos + FRAME_HEADER_SIZE + length])
        prev_last = scan.last_txid if scan.record_count else scan.first_txid - 1


def read_records_at(path: Path, offset: int, txid: int, upto_txid: int, *,
                    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, verify: bool = True,
                    chunk_bytes: int = 1 << 20) -> Iterator[tuple[int, int, bytes]]:
    """Yield records of one segment from `offset` (where record `txid` starts) up to upto_txid
    inclusive or the end of the file. Used on durable data: any bad frame is CorruptionError.

    Reads in chunks of `chunk_bytes` and parses frames from memory. `verify=False` skips the
    crc check, for data that was verified moments before (replay right after the open-time
    scan); headers, lengths and txids are always checked.
    """
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError as e:
        raise StorageError(f"journal segment {path} was purged while being read; read again "
                           f"from the oldest txid") from e
    unpack = FRAME_HEAD.unpack_from
    crc32 = zlib.crc32
    hsize = FRAME_HEADER_SIZE
    with f:
        f.seek(offset)
        buf = b""
        pos = 0
        base = offset          # file offset of buf[0]
        while txid <= upto_txid:
            problem = None
            if len(buf) - pos < hsize:
                more = f.read(chunk_bytes)
                if not more:
                    if pos == len(buf):
                        return
                    problem = "truncated record header"
                else:
                    base += pos
                    buf = buf[pos:] + more
                    pos = 0
                    continue
            if problem is None:
                sync, flags, length, got, epoch, crc = unpack(buf, pos)
                if sync != SYNC_MARKER or flags or length > max_record_bytes or got != txid:
                    problem = "bad record header"
                else:
                    end = pos + hsize + length
                    if end > len(buf):
                        more = f.read(max(chunk_bytes, end - len(buf)))
                        if more:
                            base += pos
                            buf = buf[pos:] + more
                            pos = 0
                            continue
                        problem = "truncated record payload"
                    else:
                        payload = buf[pos + hsize:end]
                        if verify and crc32(payload, crc32(memoryview(buf)[pos:pos + 20])) != crc:
                            problem = "bad record payload"
            if problem is not None:
                raise CorruptionError(f"durable journal record is damaged ({problem}); "
                                      f"{inspect_hint(path.parent)}", path=str(path),
                                      offset=base + pos, txid=txid)
            yield txid, epoch, payload
            pos = end
            txid += 1
