"""Snapshot files: a whole state image at a txid, checksummed, written atomically.

A snapshot file is `snap-{txid:020d}.mws` in the snapshot directory. Byte layout (integers
little-endian):

    offset  size  field
         0     6  magic b"MWSNAP"
         6     2  format version (u16) = 1
         8     8  txid: the last record the image covers (u64)
        16     4  epoch of the writer (u32)
        20     4  flags (u32) = 0
        24     8  state digest at txid (u64)
        32     8  body length in bytes (u64)
        40     8  created, unix milliseconds (u64)
        48    12  reserved, zero
        60     4  crc32 of bytes 0..60 (u32)
        64     n  body: the state image (opaque here; see docs/formats.md)
      64+n     4  crc32 of the body (u32)
      68+n     4  reserved, zero
      72+n     8  end magic b"MWSNEND\\0"

The writer streams the body to `.snap-{txid:020d}.mws.tmp`, then writes the real header,
fsyncs, renames to the final name and fsyncs the directory, so a crash leaves either the
complete file or a temporary file that `clean_temp` removes at the next start.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from mwcluster.errors import CorruptionError, StorageError
from mwcluster.storage.fsutil import fsync_dir

MAGIC = b"MWSNAP"
END_MAGIC = b"MWSNEND\0"
VERSION = 1
_HEADER = struct.Struct("<6sHQIIQQQ12x")
_HEADER_CRC = struct.Struct("<I")
_TRAILER = struct.Struct("<II8s")
HEADER_BYTES = _HEADER.size + _HEADER_CRC.size   # 64
TRAILER_BYTES = _TRAILER.size                    # 16
_NAME_RE = re.compile(r"snap-(\d{20})\.mws")
READ_CHUNK_BYTES = 1 << 20


def snapshot_name(txid: int) -> str:
    return f"snap-{txid:020d}.mws"


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    path: Path
    txid: int
    epoch: int
    digest: int
    body_bytes: int
    created_ms: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "txid": self.txid, "epoch": self.epoch,
                "digest": f"{self.digest:016x}", "body_bytes": self.body_bytes,
                "created_ms": self.created_ms}


def _pack_header(txid: int, epoch: int, digest: int, body_bytes: int, created_ms: int) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, txid, epoch, 0, digest, body_bytes, created_ms)
    return head + _HEADER_CRC.pack(zlib.crc32(head))


class SnapshotWriter:
    """Streams one snapshot to a temporary file; `commit()` makes it visible atomically."""

    def __init__(self, directory: str | Path, txid: int, epoch: int, digest: int,
                 created_ms: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.txid, self.epoch, self.digest, self.created_ms = txid, epoch, digest, created_ms
        self.final_path = self.directory / snapshot_name(txid)
        self.temp_path = self.directory / f".{snapshot_name(txid)}.tmp"
        self._file = open(self.temp_path, "wb")
        self._file.write(bytes(HEADER_BYTES))
        self._crc = 0
        self.body_bytes = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self.body_bytes += len(data)

    def commit(self) -> SnapshotHeader:
        try:
            f = self._file
            f.write(_TRAILER.pack(self._crc, 0, END_MAGIC))
            f.seek(0)
            f.write(_pack_header(self.txid, self.epoch, self.digest, self.body_bytes,
                                 self.created_ms))
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self.temp_path, self.final_path)
            fsync_dir(self.directory)
        except OSError as exc:
            self.abort()
            raise StorageError(f"could not write snapshot {self.final_path}: {exc}; check the "
                               "disk and the directory's permissions") from exc
        return SnapshotHeader(self.final_path, self.txid, self.epoch, self.digest,
                              self.body_bytes, self.created_ms)

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            self.temp_path.unlink(missing_ok=True)


def write_snapshot(directory: str | Path, txid: int, epoch: int, digest: int,
                   chunks: Iterable[bytes], created_ms: int) -> SnapshotHeader:
    writer = SnapshotWriter(directory, txid, epoch, digest, created_ms)
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def read_header(path: str | Path) -> SnapshotHeader:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise StorageError(f"cannot read snapshot {path}: {exc}") from exc
    hint = f"; inspect it with `mwcluster snapshot inspect {path}`"
    if len(raw) < HEADER_BYTES:
        raise CorruptionError(f"snapshot header is truncated{hint}", path=str(path), offset=0)
    magic, version, txid, epoch, _flags, digest, body_bytes, created_ms = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise CorruptionError(f"not a snapshot file (bad magic {magic!r}){hint}",
                              path=str(path), offset=0)
    if _HEADER_CRC.unpack_from(raw, _HEADER.size)[0] != zlib.crc32(raw[:_HEADER.size]):
        raise CorruptionError(f"snapshot header checksum mismatch{hint}", path=str(path),
                              offset=0)
    if version != VERSION:
        raise CorruptionError(f"snapshot format version {version} is not supported (this "
                              f"mwcluster reads version {VERSION}); upgrade mwcluster",
                              path=str(path), offset=6)
    expected = HEADER_BYTES + body_bytes + TRAILER_BYTES
    if size != expected:
        raise CorruptionError(f"snapshot is {size} bytes but its header says {expected}"
                              f" (truncated or extended){hint}", path=str(path), offset=size)
    return SnapshotHeader(path, txid, epoch, digest, body_bytes, created_ms)


def read_body(path: str | Path, chunk_bytes: int = READ_CHUNK_BYTES
              ) -> tuple[SnapshotHeader, Iterator[bytes]]:
    """The header and an iterator over the body; the iterator raises CorruptionError at the
    end if the body's checksum or the trailer does not match (so use what it yielded only
    after it finished)."""
    header = read_header(path)

    def body() -> Iterator[bytes]:
        crc = 0
        left = header.body_bytes
        with open(header.path, "rb") as f:
            f.seek(HEADER_BYTES)
            while left:
                data = f.read(min(chunk_bytes, left))
                if not data:
                    break
                crc = zlib.crc32(data, crc)
                left -= len(data)
                yield data
            trailer = f.read(TRAILER_BYTES)
        if left or len(trailer) != TRAILER_BYTES:
            raise CorruptionError("snapshot body is truncated", path=str(header.path))
        body_crc, _, end = _TRAILER.unpack(trailer)
        if end != END_MAGIC or body_crc != crc:
            raise CorruptionError("snapshot body checksum mismatch: the file is damaged",
                                  path=str(header.path), offset=HEADER_BYTES)

    return header, body()


def verify(path: str | Path) -> SnapshotHeader:
    """Read the whole file and check both checksums; return the header."""
    header, body = read_body(path)
    for _ in body:
        pass
    return header


def list_snapshots(directory: str | Path) -> list[tuple[int, Path]]:
    """(txid, path) of every snapshot file, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME_RE.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found, reverse=True)


def prune(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest snapshots; return what was deleted."""
    doomed = [path for _, path in list_snapshots(directory)[max(keep, 1):]]
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        fsync_dir(Path(directory))
    return doomed


def clean_temp(directory: str | Path) -> list[Path]:
    """Remove temporary files left by a crash during a snapshot write."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = [p for p in directory.glob(".snap-*.mws.tmp")]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
