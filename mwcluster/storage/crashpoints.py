"""Named crash points: a process that kills itself with SIGKILL at an exact moment of a
write, so crash tests can land a kill inside a segment roll, a torn flush, a snapshot
install or a journal purge instead of hoping a random kill falls there.

Off unless the environment asks for it: with `MWCLUSTER_FAULT_CRASH_AT=POINT:N` the process
sends itself SIGKILL the N-th time it reaches POINT (N defaults to 1). Nothing is flushed,
no handler runs: what is on disk at that moment is what a restart finds.

| point | where the process dies |
|---|---|
| `segment.create` | a new journal segment was created, still empty (no header) |
| `segment.header` | a new segment's header was written, no record yet |
| `flush.torn` | a flush's write to a segment stopped one byte short (its last record torn), then the process died |
| `flush.unsynced` | a flush's bytes were written, before their fsync |
| `purge.unlink` | a journal segment was deleted (by a purge, the others of it not yet; or an empty one left by an earlier run, at a roll) |
| `install.renamed` | an uploaded snapshot was renamed into place, before the directory fsync and the purge |

The journal's points live in `CrashingJournalIO`, a `JournalIO` that wraps the real one, so
the journal itself carries no test code. Points outside the journal call `crash_point(name)`.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from mwcluster.errors import ConfigError
from mwcluster.storage.fsutil import JournalIO, WrappedJournalIO

__all__ = ["CRASH_ENV", "POINTS", "CrashingJournalIO", "Trigger", "crash_point",
           "journal_io_from_env"]

CRASH_ENV = "MWCLUSTER_FAULT_CRASH_AT"
POINTS = ("segment.create", "segment.header", "flush.torn", "flush.unsynced", "purge.unlink",
          "install.renamed")


class Trigger:
    """Counts the hits of one point; the N-th kills the process."""

    def __init__(self, spec: str) -> None:
        point, _, count = spec.partition(":")
        if point not in POINTS:
            raise ConfigError(f"{CRASH_ENV}={spec!r}: unknown crash point {point!r}; "
                              f"use one of {', '.join(POINTS)}, optionally with ':N'")
        try:
            self.after = int(count) if count else 1
        except ValueError:
            raise ConfigError(f"{CRASH_ENV}={spec!r}: the count after ':' must be an "
                              "integer") from None
        if self.after < 1:
            raise ConfigError(f"{CRASH_ENV}={spec!r}: the count must be at least 1")
        self.point = point
        self.hits = 0
        self._lock = threading.Lock()

    def due(self, point: str) -> bool:
        """Count a hit of `point`; True when this hit is the one to die at."""
        if point != self.point:
            return False
        with self._lock:
            self.hits += 1
            return self.hits == self.after


_UNSET = object()
_trigger: object = _UNSET


def _active() -> Trigger | None:
    """The trigger the environment asks for (read once; ConfigError if it is malformed)."""
    global _trigger
    if _trigger is _UNSET:
        spec = os.environ.get(CRASH_ENV)
        _trigger = Trigger(spec) if spec else None
    return _trigger      # type: ignore[return-value]


def die() -> None:
    """SIGKILL this process: no handler, no flush, no cleanup."""
    os.kill(os.getpid(), signal.SIGKILL)
    threading.Event().wait()      # the signal is delivered before this returns in practice


def crash_point(point: str) -> None:
    """Die here if the environment asked for `point` and this is its N-th hit."""
    trigger = _active()
    if trigger is not None and trigger.due(point):
        die()


class CrashingJournalIO(WrappedJournalIO):
    """Delegates to `inner`, dying at the journal's crash points of `trigger`: `die` kills
    the process (the simulation's raises instead)."""

    def __init__(self, inner: JournalIO | None, trigger: Trigger,
                 die: Callable[[], None] | None = None) -> None:
        super().__init__(inner)
        self.trigger = trigger
        self._die = die
        self._created: set[int] = set()     # fds of segments created and not written yet

    def die(self) -> None:
        (self._die or die)()      # the module's die, looked up now (tests replace it)

    def open(self, path, flags, mode=0o644):
        fd = self.inner.open(path, flags, mode)
        if flags & os.O_CREAT:
            self._created.add(fd)
            if self.trigger.due("segment.create"):
                self.die()
        return fd

    def write(self, fd, data, offset):
        if fd in self._created:              # the header of a new segment
            self._created.discard(fd)
            n = self.inner.write(fd, data, offset)
            if self.trigger.due("segment.header"):
                self.die()
            return n
        if len(data) > 1 and self.trigger.due("flush.torn"):
            # one byte short: a write ends at a record boundary, so this always tears the
            # last record (half of it could land exactly on a boundary and tear nothing)
            n = self.inner.write(fd, data[:len(data) - 1], offset)
            self.die()
            return n
        return self.inner.write(fd, data, offset)

    def fdatasync(self, fd):
        if self.trigger.due("flush.unsynced"):
            self.die()
        self.inner.fdatasync(fd)

    def close(self, fd):
        self._created.discard(fd)
        self.inner.close(fd)

    def unlink(self, path: Path):
        self.inner.unlink(path)
        if self.trigger.due("purge.unlink"):
            self.die()


def journal_io_from_env(inner: JournalIO | None) -> JournalIO | None:
    """`inner` wrapped in a CrashingJournalIO when the environment names a journal point."""
    trigger = _active()
    if trigger is None or trigger.point == "install.renamed":
        return inner
    return CrashingJournalIO(inner, trigger)
