"""Writing a snapshot of the live replica without stopping it: a forked child (like Redis's
BGSAVE).

`os.fork()` gives the child a copy-on-write image of the replica at txid T and of its table of
recent requests (as of T: the parent forks between two records); the child streams
`state.image_chunks(recent)` through storage.snapshot.write_snapshot (temporary file, fsync, rename,
directory fsync) and leaves with `os._exit`. The parent keeps applying the stream at once; it
learns the outcome through a pidfd (readable when the child exits) and `waitpid`.

What the child may do, and why: the fork copied only the forking thread, so any lock another
thread held (logging's, libzmq's, the allocator's arenas are fork-safe) may stay locked
forever in the child. The child therefore touches nothing but the state and the snapshot
code: no logging, no zmq, no socket; it resets SIGTERM/SIGINT to their defaults (the parent's
handlers would poke the parent's wake pipe), asks the kernel to SIGKILL it if the parent dies
(PR_SET_PDEATHSIG: a kill -9 of the node never leaves an orphan writing), disables the
garbage collector (a collection would touch, and so copy, every object's page), runs under
SCHED_IDLE (else at CHILD_NICE: the write is background work; on a small machine it must not
take the CPU from the master or from the parent applying the stream), and on failure
writes the reason to a pipe for the parent. A crash of the child, or of both, leaves at most
a temporary `.snap-*.mws.tmp` file, which `clean_temp` removes at the next start.

Fault seam for tests: with MWCLUSTER_FAULT_CHECKPOINT_PAUSE_S=N in the environment, the child
pauses N seconds after its first chunk (a checkpoint that is surely in progress).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from mwcluster.core.recent import RecentRequests
from mwcluster.core.state import State
from mwcluster.storage import snapshot as snapshots

FAULT_PAUSE_ENV = "MWCLUSTER_FAULT_CHECKPOINT_PAUSE_S"
_PR_SET_PDEATHSIG = 1
CHILD_NICE = 10

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):   # not Linux: no parent-death signal
    _prctl = None

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    txid: int
    ok: bool
    reason: str                  # "" on success
    header: snapshots.SnapshotHeader | None
    size_bytes: int
    duration_s: float


class ForkedCheckpoint:
    """One checkpoint being written by a child process."""

    def __init__(self, state: State, recent: RecentRequests, directory: Path, epoch: int,
                 created_ms: int) -> None:
        self.directory = Path(directory)
        self.txid = state.txid
        self.started = time.monotonic()
        pause_s = float(os.environ.get(FAULT_PAUSE_ENV, "0") or 0)
        digest = state.digest
        parent = os.getpid()
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:                                          # the child
            _child(state, recent, self.directory, epoch, digest, created_ms, parent, read_fd,
                   write_fd, pause_s)
        os.close(write_fd)
        self.pid = pid
        self._read_fd = read_fd
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None                                 # polled with WNOHANG instead
        self.outcome: Outcome | None = None

    def poll(self) -> Outcome | None:
        """The outcome once the child has exited (reaped here), else None."""
        if self.outcome is not None:
            return self.outcome
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        return self._finish(status)

    def kill(self) -> Outcome:
        """Stop the child now (SIGKILL), reap it, remove its temporary file."""
        if self.outcome is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _pid, status = os.waitpid(self.pid, 0)
            self._finish(status)
        snapshots.clean_temp(self.directory)
        return self.outcome

    def _finish(self, status: int) -> Outcome:
        duration = time.monotonic() - self.started
        try:
            message = os.read(self._read_fd, 4096).decode(errors="replace")
        except OSError:
            message = ""
        os.close(self._read_fd)
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        header = None
        size = 0
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            path = self.directory / snapshots.snapshot_name(self.txid)
            try:
                header = snapshots.read_header(path)
                size = path.stat().st_size
                reason = ""
            except Exception as exc:  # noqa: BLE001  the child said ok; the file says not
                reason = f"the snapshot written at txid {self.txid} does not read back: {exc}"
        elif os.WIFSIGNALED(status):
            reason = f"the checkpoint process was killed by signal {os.WTERMSIG(status)}"
        else:
            reason = message or f"the checkpoint process exited with {os.WEXITSTATUS(status)}"
        self.outcome = Outcome(self.txid, header is not None, reason, header, size, duration)
        return self.outcome


def _background_priority() -> None:
    """Run only when nothing else wants a CPU: SCHED_IDLE where the kernel has it (a task
    woken by a request preempts it at once), else the lowest nice level we may take."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    try:
        os.nice(CHILD_NICE)
    except OSError:
        pass


def _child(state: State, recent: RecentRequests, directory: Path, epoch: int, digest: int,
           created_ms: int, parent: int, read_fd: int, write_fd: int, pause_s: float) -> None:
    """The forked child: write the snapshot and leave with os._exit, whatever happens."""
    code = 1
    try:
        os.close(read_fd)
        gc.disable()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:       # the parent died before the prctl took effect
            os._exit(1)
        _background_priority()
        chunks = state.image_chunks(recent)
        if pause_s > 0:
            chunks = _pause_after_first(chunks, pause_s)
        snapshots.write_snapshot(directory, state.txid, epoch, digest, chunks, created_ms)
        code = 0
    except BaseException as exc:  # noqa: BLE001  reported to the parent through the pipe
        try:
            os.write(write_fd, f"{type(exc).__name__}: {exc}".encode()[:4000])
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(code)


def _pause_after_first(chunks, pause_s: float):
    for i, chunk in enumerate(chunks):
        yield chunk
        if i == 0:
            time.sleep(pause_s)


def set_aside_snapshots(directory: Path, after_txid: int, reason: str) -> None:
    """Rename the snapshots above `after_txid` (the last point verified) to `*.diverged`:
    kept for inspection, never loaded."""
    for txid, path in snapshots.list_snapshots(directory):
        if txid > after_txid:
            aside = path.with_name(path.name + ".diverged")
            try:
                os.replace(path, aside)
                log.error("local snapshot %s set aside as %s (%s after txid %d, the last "
                          "point verified)", path.name, aside.name, reason, after_txid)
            except OSError as exc:
                log.error("could not set aside %s: %s", path, exc)
