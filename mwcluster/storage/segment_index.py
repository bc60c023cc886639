"""The journal's segments as its writer knows them, and how a batch and a read go through
them: no thread, no lock (journal.py holds those).

- `SegmentIndex`: one segment file (an fsutil.AppendFile) with a sparse txid -> offset
  index, built as records are written and at open from the scan;
- `Batch` and `plan_pieces`: the records a flush writes together, split where a segment
  roll falls (each piece goes whole into one segment and is fsynced before the next);
- `read_durable`: durable records from a txid, through the indexes (the files' format is
  segments.py's).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path

from mwcluster.errors import CorruptionError
from mwcluster.storage import fsutil
from mwcluster.storage import segments as seg

INDEX_STRIDE_BYTES = 64 << 10  # one (txid, offset) read-index entry per this many bytes


class SegmentIndex:
    """A segment file as the writer knows it, with a sparse txid -> offset read index (one
    entry per INDEX_STRIDE_BYTES)."""

    __slots__ = ("file", "first_txid", "has_records", "index_txids", "index_offsets")

    def __init__(self, file: fsutil.AppendFile, first_txid: int, has_records: bool):
        self.file = file  # file.synced_bytes == 0: its creation is not durable yet
        self.first_txid = first_txid
        self.has_records = has_records
        self.index_txids = array("Q")
        self.index_offsets = array("Q")

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def size_bytes(self) -> int:
        return self.file.synced_bytes

    def index(self, txid: int, offset: int) -> None:
        offsets = self.index_offsets
        if not offsets or offset - offsets[-1] >= INDEX_STRIDE_BYTES:
            self.index_txids.append(txid)
            offsets.append(offset)


class Batch:
    """Records taken from the buffer to be written and fsynced together (group commit)."""

    __slots__ = ("data", "first_txid", "last_txid", "rolls", "t0", "next_piece")

    def __init__(self, data, first_txid, last_txid, rolls, t0):
        self.data: bytearray = data
        self.first_txid: int = first_txid
        self.last_txid: int = last_txid
        self.rolls: list[tuple[int, int]] = rolls  # (txid, offset): a segment starts there
        self.t0: float = t0  # clock() when its oldest record was appended
        self.next_piece = 0  # pieces before it are durable (kept across retries)


def plan_pieces(batch: Batch) -> list[tuple[int, int, int, int, bool]]:
    """Split a batch at its roll points: (first_txid, last_txid, start, end, roll)."""
    cuts = [(batch.first_txid, 0, False)] + [(t, off, True) for t, off in batch.rolls]
    if len(cuts) > 1 and cuts[1][1] == 0:
        cuts.pop(0)
    pieces = []
    for k, (txid, start, roll) in enumerate(cuts):
        last, end = ((cuts[k + 1][0] - 1, cuts[k + 1][1]) if k + 1 < len(cuts)
                     else (batch.last_txid, len(batch.data)))
        pieces.append((txid, last, start, end, roll))
    return pieces


def read_durable(directory: Path, segs: list, from_txid: int, durable: int,
                 max_bytes: int | None, max_record_bytes: int, verify: bool = True
                 ) -> Iterator[tuple[int, int, bytes]]:
    """Yield the durable records (txid, epoch, payload) from `from_txid`, through the segments
    `segs` ((first_txid, path, index txids, index offsets, index length) of each, oldest
    first): at least one record when any is due, then stop before `max_bytes` of payload
    would be passed."""
    i = max(0, bisect_right([s[0] for s in segs], from_txid) - 1)
    first_txid, path, txids, offsets, n = segs[i]
    j = bisect_right(txids, from_txid, 0, n) - 1
    txid, offset = (txids[j], offsets[j]) if j >= 0 else (first_txid, seg.HEADER_SIZE)
    sent_bytes = sent = 0
    for k in range(i, len(segs)):
        first_txid, path = segs[k][0], segs[k][1]
        if k > i:
            if first_txid != txid:
                raise CorruptionError(f"txid gap between segments; "
                                      f"{seg.inspect_hint(directory)}",
                                      path=str(path), offset=8, txid=txid)
            offset = seg.HEADER_SIZE
        for rec in seg.read_records_at(path, offset, txid, durable,
                                       max_record_bytes=max_record_bytes,
                                       verify=verify):
            txid = rec[0] + 1
            if rec[0] < from_txid:
                continue
            sent_bytes += len(rec[2])
            if max_bytes is not None and sent and sent_bytes > max_bytes:
                return
            sent += 1
            yield rec
        if txid > durable:
            return
