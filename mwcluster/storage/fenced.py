"""The fence file: a master's durable note that it saw a higher epoch than its own.

A master that learns of a higher epoch (another node was promoted) is fenced for good: it
refuses writes and client reads until it rejoins as a standby. The fact must survive a
restart, or a restarted old master would serve again, so it is written here before the
first refusal goes out.

`DATA_DIR/fenced`, 24 bytes, integers little-endian:

    offset  size  field
         0     8  magic b"MWFENCE\\0"
         8     2  format version (u16) = 1
        10     2  reserved, zero
        12     4  own epoch when fenced (u32)
        16     4  fenced_by: the higher epoch seen (u32)
        20     4  crc32 of bytes 0..20 (u32)

Written like the epoch file (temporary file, fsync, rename, directory fsync). A damaged file
counts as fenced by an unknown epoch (fenced_by = own epoch + 1): refusing to serve is the
safe reading. Never removed by mwcluster: a rejoin as standby keeps it too.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from mwcluster.errors import StorageError
from mwcluster.storage.fsutil import write_file_atomic

MAGIC = b"MWFENCE\0"
VERSION = 1
FILE_NAME = "fenced"
_BODY = struct.Struct("<8sHHII")
_CRC = struct.Struct("<I")
FILE_BYTES = _BODY.size + _CRC.size   # 24


def encode(own_epoch: int, fenced_by: int) -> bytes:
    body = _BODY.pack(MAGIC, VERSION, 0, own_epoch, fenced_by)
    return body + _CRC.pack(zlib.crc32(body))


def read_fenced(data_dir: str | os.PathLike[str], own_epoch: int = 0) -> int | None:
    """The epoch that fenced this data directory, or None when it is not fenced."""
    path = Path(data_dir) / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the fence file {path}: {exc}") from exc
    if len(raw) == FILE_BYTES and zlib.crc32(raw[:_BODY.size]) == _CRC.unpack_from(
            raw, _BODY.size)[0]:
        magic, version, _reserved, _own, fenced_by = _BODY.unpack_from(raw)
        if magic == MAGIC and version == VERSION:
            return fenced_by
    return own_epoch + 1


def write_fenced(data_dir: str | os.PathLike[str], own_epoch: int, fenced_by: int) -> None:
    """Persist the fence atomically and durably."""
    path = Path(data_dir) / FILE_NAME
    try:
        write_file_atomic(path, encode(own_epoch, fenced_by))
    except OSError as exc:
        raise StorageError(f"cannot write the fence file {path}: {exc}") from exc

