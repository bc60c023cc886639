"""The epoch file: how many times a master has started on a data directory.

The master increments the epoch at every start, before it opens the engine, and carries it in
every reply, every published message and every journal record it writes, so that a replica
can tell a restarted master's history from the one before.

`DATA_DIR/epoch`, 20 bytes, integers little-endian:

    offset  size  field
         0     8  magic b"MWEPOCH\\0"
         8     2  format version (u16) = 1
        10     2  reserved, zero
        12     4  epoch (u32)
        16     4  crc32 of bytes 0..16 (u32)

The new value is written to `epoch.tmp`, fsynced, renamed over `epoch`, and the directory is
fsynced, so a crash leaves either the old or the new epoch, never a torn file. A missing file
means epoch 0 (a new data directory); a damaged one stops the start with CorruptionError,
because guessing could reuse an epoch.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from mwcluster.errors import CorruptionError, StorageError
from mwcluster.storage.fsutil import write_file_atomic

MAGIC = b"MWEPOCH\0"
VERSION = 1
FILE_NAME = "epoch"
MAX_EPOCH = (1 << 32) - 1
_BODY = struct.Struct("<8sHHI")
_CRC = struct.Struct("<I")
FILE_BYTES = _BODY.size + _CRC.size   # 20


def encode(epoch: int) -> bytes:
    body = _BODY.pack(MAGIC, VERSION, 0, epoch)
    return body + _CRC.pack(zlib.crc32(body))


def read_epoch(data_dir: str | os.PathLike[str]) -> int:
    """The persisted epoch, 0 when the file does not exist."""
    path = Path(data_dir) / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StorageError(f"cannot read the epoch file {path}: {exc}") from exc
    fix = (f"; if the data directory is otherwise intact, write a new one with a larger epoch "
           f"than any journal segment's (`mwcluster log verify {Path(data_dir) / 'journal'}`)")
    if len(raw) != FILE_BYTES:
        raise CorruptionError(f"epoch file is {len(raw)} bytes, not {FILE_BYTES}{fix}",
                              path=str(path))
    magic, version, _reserved, epoch = _BODY.unpack_from(raw)
    if magic != MAGIC or _CRC.unpack_from(raw, _BODY.size)[0] != zlib.crc32(raw[:_BODY.size]):
        raise CorruptionError(f"epoch file has a bad magic or checksum{fix}", path=str(path))
    if version != VERSION:
        raise CorruptionError(f"epoch file format {version} is not supported (this mwcluster "
                              f"reads {VERSION})", path=str(path))
    return epoch


def write_epoch(data_dir: str | os.PathLike[str], epoch: int) -> None:
    """Persist `epoch` atomically and durably (temp file, fsync, rename, directory fsync)."""
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"epoch {epoch} does not fit in 32 bits")
    directory = Path(data_dir)
    path = directory / FILE_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, encode(epoch))
    except OSError as exc:
        raise StorageError(f"cannot write the epoch file {path}: {exc}; check that the data "
                           "directory is writable and the disk has space") from exc


def next_epoch(data_dir: str | os.PathLike[str]) -> int:
    """Read the epoch, persist epoch + 1 and return it: what a master does at every start."""
    epoch = read_epoch(data_dir) + 1
    if epoch > MAX_EPOCH:
        raise StorageError(f"the epoch in {data_dir} cannot grow past {MAX_EPOCH}")
    write_epoch(data_dir, epoch)
    return epoch
