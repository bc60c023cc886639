"""The master's disk in the simulation: real files in the node's directory, with what a crash
leaves of them decided here.

`SimDisk` is the journal's I/O seam (storage/fsutil.JournalIO): writes go to the files (the
page cache, as far as the process is concerned) and an fsync only records how much of the file
is now safe; no real fsync is made. A crash then leaves:

- `kill` (kill -9): every byte written (the kernel still has them); what the journal buffered
  and did not write is gone;
- `power` (power loss): of each file, what its last fsync covered, plus a random prefix of the
  bytes written after it (a torn tail, as a disk may leave).

Crash points (storage/crashpoints.py, the same names as MWCLUSTER_FAULT_CRASH_AT) make the
simulated process die at an exact moment of a flush, a roll or a purge: `crash_at("flush.torn",
2)` raises SimCrash at the second torn flush, through the journal, to the simulation, which
crashes the node there.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from mwcluster.storage.crashpoints import CrashingJournalIO, Trigger
from mwcluster.storage.fsutil import JournalIO, WrappedJournalIO

__all__ = ["SimCrash", "SimDisk"]


class SimCrash(Exception):
    """The simulated process dies here (a crash point was reached)."""


class _FileIO(JournalIO):
    """The real calls without fsync, with the synced size of each file recorded."""

    def __init__(self) -> None:
        self.synced: dict[str, int] = {}
        self.paths: dict[int, str] = {}

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        self.paths[fd] = str(path)
        if flags & os.O_TRUNC or str(path) not in self.synced:
            self.synced[str(path)] = 0 if flags & os.O_TRUNC else os.fstat(fd).st_size
        return fd

    def fsync(self, fd: int) -> None:
        self.synced[self.paths[fd]] = os.fstat(fd).st_size

    def fdatasync(self, fd: int) -> None:
        self.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        super().ftruncate(fd, length)
        path = self.paths[fd]
        self.synced[path] = min(self.synced.get(path, 0), length)

    def close(self, fd: int) -> None:
        self.paths.pop(fd, None)
        super().close(fd)

    def fsync_dir(self, path: Path) -> None:
        pass

    def rename(self, src: Path, dst: Path) -> None:
        super().rename(src, dst)
        self.synced[str(dst)] = self.synced.pop(str(src), 0)

    def unlink(self, path: Path) -> None:
        super().unlink(path)
        self.synced.pop(str(path), None)


def _die() -> None:
    raise SimCrash("crash point")


class SimDisk(WrappedJournalIO):
    def __init__(self) -> None:
        self.files = _FileIO()
        super().__init__(self.files)

    def crash_at(self, point: str, nth: int = 1) -> None:
        """Die (SimCrash) the `nth` time the journal reaches crash point `point`."""
        self.inner = CrashingJournalIO(self.files, Trigger(f"{point}:{nth}"), die=_die)

    def no_crash_points(self) -> None:
        self.inner = self.files

    def crash(self, mode: str, rng: random.Random) -> list[str]:
        """Leave the files as a crash of this kind would; the lines describing what was cut."""
        cut = []
        if mode == "power":
            for path, synced in sorted(self.files.synced.items()):
                try:
                    size = os.path.getsize(path)
                except OSError:
                    continue
                if size > synced:
                    keep = synced + rng.randint(0, size - synced)
                    os.truncate(path, keep)
                    cut.append(f"{Path(path).name}: {size} -> {keep} bytes")
        elif mode != "kill":
            raise ValueError(f"a crash is 'kill' or 'power', not {mode!r}")
        for fd in list(self.files.paths):
            try:
                os.close(fd)
            except OSError:
                pass
        self.files.paths.clear()
        self.files.synced.clear()     # what the crash left is on the disk: all of it counts
        return cut
