"""File-system helpers for durable writes, and the I/O seam of the journal.

Owns:
- `fsync_dir`: make a create, rename or unlink durable;
- `write_file_atomic`: replace a small file whole (epoch, fence, ready files);
- `write_all`: a positional write that survives short writes;
- `cut_aside`: cut a damaged file, keeping the bytes it cuts in a `.broken` file beside it;
- `AppendFile`: a file written at its end, whose durable size is the end of its last
  successful fsync, and which rewinds to it after a failed write or fsync;
- `JournalIO`: every OS call the journal and its recovery make, so tests can fail them on
  demand without patching `os`; `FaultyJournalIO`, the in-package twin that fails or blocks
  those calls when a test asks it to.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mwcluster.errors import StorageError

__all__ = ["AppendFile", "FaultyJournalIO", "JournalIO", "WrappedJournalIO", "broken_path_for",
           "cut_aside", "fsync_dir", "write_all"]

BROKEN_SUFFIX = ".broken"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of a directory (files created, renamed, unlinked in it) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalIO:
    """The OS calls the journal makes. Subclass it to inject failures; never patch `os`.

    Writes are positional (`pwrite`) so the journal, not the file offset, decides where bytes go:
    that is what lets a failed batch be rewritten at the offset of the last good fsync.
    """

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        # fdatasync flushes the size change of an append too; macOS lacks it.
        (getattr(os, "fdatasync", None) or os.fsync)(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    def fsync_dir(self, path: Path) -> None:
        fsync_dir(path)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)

    def unlink(self, path: Path) -> None:
        os.unlink(path)


class WrappedJournalIO(JournalIO):
    """A JournalIO that hands every call to `inner` (the real one by default): subclass it
    and override only the calls to watch or change (timing, crash points)."""

    def __init__(self, inner: JournalIO | None = None) -> None:
        self.inner = inner or JournalIO()

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        return self.inner.open(path, flags, mode)

    def write(self, fd: int, data: memoryview, offset: int) -> int:
        return self.inner.write(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self.inner.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self.inner.fdatasync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        self.inner.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        self.inner.close(fd)

    def fsync_dir(self, path: Path) -> None:
        self.inner.fsync_dir(path)

    def rename(self, src: Path, dst: Path) -> None:
        self.inner.rename(src, dst)

    def unlink(self, path: Path) -> None:
        self.inner.unlink(path)


def write_file_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True
                      ) -> None:
    """Replace `path` with `data` so that a reader or a crash sees the old file or the new
    one, never a part: write `path.tmp`, rename it over `path`. `durable` adds the fsync of
    the file before the rename and of the directory after it. OSError as raised."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(JournalIO(), fd, data, 0)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def write_all(io: JournalIO, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
    """Write every byte of `data` at `offset` (retrying short writes); return the end offset."""
    view = memoryview(data).cast("B")
    while view:
        n = io.write(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "write returned no progress")
        offset += n
        view = view[n:]
    return offset


def broken_path_for(path: Path, offset: int) -> Path:
    """`{path}.{offset}.broken`; a numeric suffix keeps an earlier cut at the same offset."""
    broken = path.with_name(f"{path.name}.{offset}{BROKEN_SUFFIX}")
    n = 1
    while broken.exists():
        broken = path.with_name(f"{path.name}.{offset}{BROKEN_SUFFIX}.{n}")
        n += 1
    return broken


def cut_aside(io: JournalIO, path: Path, offset: int) -> tuple[Path, int]:
    """Cut `path` at `offset`, keeping the bytes past it in `{path}.{offset}.broken`.

    The copy is fsynced (file and directory) before the original is truncated and fsynced, so
    a crash in between loses nothing. At offset 0 the whole file is renamed aside instead.
    Returns (the .broken path, how many bytes were cut)."""
    broken = broken_path_for(path, offset)
    if offset == 0:
        size = path.stat().st_size
        io.rename(path, broken)
        io.fsync_dir(path.parent)
        return broken, size
    with open(path, "rb") as f:
        f.seek(offset)
        tail = f.read()
    fd = io.open(broken, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        write_all(io, fd, tail, 0)
        io.fsync(fd)
    finally:
        io.close(fd)
    io.fsync_dir(path.parent)
    fd = io.open(path, os.O_RDWR)
    try:
        io.ftruncate(fd, offset)
        io.fsync(fd)
    finally:
        io.close(fd)
    return broken, len(tail)


class AppendFile:
    """A file that only grows at its end, written through a `JournalIO`.

    `synced_bytes` is the end of the last successful fsync: what a crash cannot take away.
    After a failed write or fsync the page cache cannot be trusted, so the next `append`
    reopens the file, truncates it back to `synced_bytes` and writes everything again. A file
    created with `synced_bytes=0` gets `header` first; its creation is durable only once the
    first append fsynced the file and its directory, and until then a retry recreates it.
    """

    __slots__ = ("io", "path", "header", "synced_bytes", "fd", "dirty", "last_sync_s")

    def __init__(self, io: JournalIO, path: Path, synced_bytes: int, header: bytes = b""):
        self.io = io
        self.path = path
        self.header = header
        self.synced_bytes = synced_bytes
        self.fd: int | None = None
        self.dirty = False
        self.last_sync_s = 0.0

    def append(self, data: bytes | bytearray | memoryview,
               before_sync: Callable[[], None] | None = None) -> int:
        """Write `data` at `synced_bytes` and fsync it; return the new `synced_bytes`.

        `before_sync` runs between the write and the fsync (a crash test stops there). On
        OSError the file is marked dirty and closed, and the error propagates."""
        io = self.io
        try:
            if self.synced_bytes == 0:
                self.fd = io.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
                end = write_all(io, self.fd, data, write_all(io, self.fd, self.header, 0))
                sync = io.fsync
            else:
                if self.fd is None:
                    self.fd = io.open(self.path, os.O_RDWR)
                if self.dirty:
                    io.ftruncate(self.fd, self.synced_bytes)
                end = write_all(io, self.fd, data, self.synced_bytes)
                # an append needs only fdatasync; after a truncate, the full fsync
                sync = io.fsync if self.dirty else io.fdatasync
            if before_sync is not None:
                before_sync()
            t0 = time.perf_counter()
            sync(self.fd)
            if self.synced_bytes == 0:
                io.fsync_dir(self.path.parent)
            self.last_sync_s = time.perf_counter() - t0
        except OSError:
            self.dirty = True
            self.close()
            raise
        self.dirty = False
        self.synced_bytes = end
        return end

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                self.io.close(fd)
            except OSError:
                pass  # nothing was pending: every byte that counts was fsynced


class FaultyJournalIO(JournalIO):
    """A `JournalIO` that fails or blocks on demand; shipped so crash tests need no patching.

    - `fail_write_errno`: every write raises OSError(errno) while set.
    - `write_budget_bytes`: writes succeed until this many bytes went through, then the write
      that crosses it is short and the next raises OSError(`budget_errno`, ENOSPC by default).
    - `fail_fsync_errno`: every fsync and fdatasync of a file raises OSError(errno) while set.
    - `block_writes`: a cleared Event makes each write wait until the test sets it.
    - `heal()`: clear every failure.
    Counters (`writes`, `bytes_written`, `fsyncs`, `failures`) let tests wait for progress.
    """

    def __init__(self) -> None:
        self.fail_write_errno: int | None = None
        self.write_budget_bytes: int | None = None
        self.budget_errno = errno.ENOSPC
        self.fail_fsync_errno: int | None = None
        self.block_writes = threading.Event()
        self.block_writes.set()
        self.writes_waiting = 0
        self.writes = 0
        self.bytes_written = 0
        self.fsyncs = 0
        self.failures = 0
        self._lock = threading.Lock()

    def heal(self) -> None:
        self.fail_write_errno = None
        self.write_budget_bytes = None
        self.fail_fsync_errno = None

    def _fail(self, err: int, what: str) -> OSError:
        with self._lock:
            self.failures += 1
        return OSError(err, f"{os.strerror(err)} (injected on {what})")

    def write(self, fd: int, data: memoryview, offset: int) -> int:
        with self._lock:
            self.writes_waiting += 1
        try:
            self.block_writes.wait()
        finally:
            with self._lock:
                self.writes_waiting -= 1
        if self.fail_write_errno is not None:
            raise self._fail(self.fail_write_errno, "write")
        budget = self.write_budget_bytes
        if budget is not None:
            if budget <= 0:
                raise self._fail(self.budget_errno, "write")
            data = data[:budget]
            self.write_budget_bytes = budget - len(data)
        n = super().write(fd, data, offset)
        with self._lock:
            self.writes += 1
            self.bytes_written += n
        return n

    def _sync(self, fd: int, real) -> None:
        if self.fail_fsync_errno is not None:
            raise self._fail(self.fail_fsync_errno, "fsync")
        real(fd)
        with self._lock:
            self.fsyncs += 1

    def fsync(self, fd: int) -> None:
        self._sync(fd, super().fsync)

    def fdatasync(self, fd: int) -> None:
        self._sync(fd, super().fdatasync)


def lock_data_dir(directory: Path, what: str = "process") -> int:
    """Take an exclusive lock on `directory/lock` (creating both) and write our pid into it;
    return the file descriptor, which holds the lock until it is closed or the process
    exits. A second holder is refused with the first one's pid: two writers of one data
    directory would interleave their journals."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot use the data directory {directory}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StorageError(f"another {what} (pid {holder}) is using {directory}; stop it "
                           "first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
