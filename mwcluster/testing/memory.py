"""In-memory twins of the master, built on the real code: no socket, no thread of their own.

`MasterTwin` is a master as nodes/master/node.Master opens one (the epoch file raised, the
Engine recovered from its data directory, the request Handlers, the log stream), minus the
sockets, the event loop and the journal's flusher thread: whoever drives it hands it request
frames (`drain`), flushes its journal when it chooses (`flush`, which releases the parked
replies the fsync covers and returns the log batches to publish) and ticks it. The in-memory
cluster simulation (testing/simulation) drives twins with a seeded scheduler;
`MemoryMaster` drives one at once, for tests of a worker or of the job commands:

    master = MemoryMaster()
    node = WorkerNode(config, registry, client_factory=master.client)
    job_id = master.submit_job("count", "count", [1, 2, 3])      # every Client call works

Every call of a `MemoryClient` (and of the MemoryMaster itself, a Client of its own) is a
request frame through `Handlers.handle`, answered exactly as the master answers it: the real
scheduler picks the tasks, the real records are logged, a sync reply waits for the journal's
flush, errors are the same typed exceptions. Faults are named seams: `restart()` (the twin is
closed and opened again on its files: recovery, a new epoch), `unreachable` (every call
raises RequestTimeout and is not sent), `lose_worker(id)` (the master's own declaration of
a lost worker, as its liveness check makes it). Thread-safe: one lock around every call.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

from mwcluster.client.calls import Calls, convert_reply
from mwcluster.core.jobs import TaskState
from mwcluster.core.limits import Limits
from mwcluster.engine import Engine
from mwcluster.errors import JournalUnavailable, RequestTimeout
from mwcluster.nodes.master.handlers import Drain, Handlers
from mwcluster.nodes.master.jobs import JobsConfig
from mwcluster.nodes.master.node import REPLICATED_TIMEOUT_S
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.nodes.master.stream import LogStream
from mwcluster.nodes.master.upload import SnapshotUploads
from mwcluster.storage import epoch as epochs
from mwcluster.storage import fenced as fence_file
from mwcluster.storage.fsutil import JournalIO
from mwcluster.wire.protocol import Op, Reply, decode_reply, encode_request

__all__ = ["MasterTwin", "MemoryClient", "MemoryMaster", "NoSyncIO", "RunningWorker"]

Replies = list[tuple[bytes, bytes]]


class NoSyncIO(JournalIO):
    """The journal's I/O without the fsyncs: for twins whose process never crashes (the
    files are whole when they are opened again)."""

    def fsync(self, fd: int) -> None:
        pass

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: Path) -> None:
        pass


class MasterTwin:
    def __init__(self, data_dir: str | Path, *, jobs: JobsConfig = JobsConfig(),
                 limits: Limits | None = None, journal_io: JournalIO | None = None,
                 durability: str = "async", wall_ms: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 publish_batch_bytes: int = 1 << 20, recent_requests: int = 100_000) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fenced_by = fence_file.read_fenced(self.data_dir, epochs.read_epoch(self.data_dir))
        self.epoch = (epochs.read_epoch(self.data_dir) if fenced_by is not None
                      else epochs.next_epoch(self.data_dir))
        self.engine = Engine(self.data_dir, epoch=self.epoch, limits=limits,
                             journal_io=journal_io, clock=clock, background=False,
                             recent_requests=recent_requests)
        self.recovery = self.engine.open()
        self.uploads = SnapshotUploads(self.engine, self.epoch, clock=clock)
        state = self.engine.state
        self.uploads.record(state.txid, state.digest)
        self.stream = LogStream(self.engine, self.epoch, self.uploads, publish_batch_bytes)
        self.stats = MasterStats()
        self.handlers = Handlers(
            self.engine, self.epoch, self.stats, default_sync=durability == "sync",
            status=self.status, uploads=self.uploads, jobs=jobs, fenced_by=fenced_by,
            wake_flusher=False,
            **({"wall_ms": wall_ms} if wall_ms is not None else {}))
        self.handlers.jobs.grace(clock())

    # --- what drives it -----------------------------------------------------------------

    def drain(self, messages: list[tuple[bytes, bytes]], now: float) -> Replies:
        """One drain of the loop: the reply to each (ident, frame), in order, but for those
        parked until a flush."""
        drain = Drain(now)
        handle = self.handlers.handle
        out = []
        for ident, frame in messages:
            reply = handle(ident, frame, drain)
            if reply is not None:
                out.append((ident, reply))
        self.stream.drain_ended()
        return out

    def flush(self, now: float) -> tuple[Replies, list[bytes]]:
        """Write and fsync the journal's buffer: the parked replies that makes due, and the
        log batches (TOPIC_LOG bodies) newly durable records make."""
        try:
            self.engine.journal.flush()
        except JournalUnavailable:
            pass                                     # closed: nothing more becomes durable
        handlers = self.handlers
        durable = self.engine.journal.durable_txid
        replies = handlers.release(durable, now)
        if handlers.parked_replicated.due(handlers.replica_txid):
            replies += handlers.release_replicated(now)
        return replies, self.stream.publish(durable) or []

    def tick(self, now: float) -> Replies:
        """The loop's tick, but for the heartbeat (`heartbeat`) and the figures: parked
        replies failed while the journal fails, replicated ones expired, silent workers
        declared lost, an idle upload dropped."""
        handlers = self.handlers
        out = handlers.fail_parked() if self.engine.journal.failure is not None else []
        out += handlers.expire_replicated(now, REPLICATED_TIMEOUT_S)
        handlers.jobs.expire(now)
        self.uploads.expire()
        self.stream.drain_ended()
        return out

    def heartbeat(self, now_ms: int) -> bytes:
        """A TOPIC_HEARTBEAT body."""
        return self.stream.heartbeat(now_ms)

    def status(self) -> dict[str, Any]:
        engine = self.engine
        return {"role": "fenced" if self.handlers.fence.fenced else "master",
                "epoch": self.epoch, "txid": engine.state.txid,
                "durable_txid": engine.journal.durable_txid, "digest": engine.state.digest,
                "published_txid": self.stream.published_txid, **self.handlers.jobs.status()}

    def close(self) -> None:
        """A graceful stop: the journal drained and fsynced."""
        self.engine.close()

    def crash(self) -> None:
        """A crash: what the journal buffered and did not write is gone."""
        self.engine.journal.abandon()


class MemoryMaster(Calls):
    """A MasterTwin behind one lock, answering at once (a sync reply after a flush), with
    its own temporary data directory (removed when the MemoryMaster is collected or closed).
    It is a Client itself: `master.submit_job(...)`, `master.job_tasks(job_id)`..."""

    def __init__(self, *, heartbeat_ms: int = 1000, worker_timeout_ms: int = 10_000,
                 limits: Limits | None = None, data_dir: str | Path | None = None) -> None:
        self.lock = threading.RLock()
        parent = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self._tmp = None if data_dir is not None else tempfile.mkdtemp(
            prefix="mwcluster-memory-", dir=parent)
        self.data_dir = Path(data_dir if data_dir is not None else self._tmp)
        self._jobs = JobsConfig(worker_timeout_s=worker_timeout_ms / 1000,
                                worker_heartbeat_ms=heartbeat_ms)
        self._limits = limits
        self.twin = self._open()
        self.unreachable = False
        self.refused: list[Op] = []       # ops called while unreachable (not sent)
        self.calls: list[tuple[Op, list]] = []   # every request sent, in order
        self._ids = iter(range(1, 1 << 62))
        self._client_id = b"memory-master"
        self._finalizer = weakref.finalize(self, MemoryMaster._cleanup, [self.twin], self._tmp)

    def _open(self) -> MasterTwin:
        return MasterTwin(self.data_dir, jobs=self._jobs, limits=self._limits,
                          journal_io=NoSyncIO(), wall_ms=lambda: time.time_ns() // 1_000_000)

    @staticmethod
    def _cleanup(twins: list, tmp: str | None) -> None:
        for twin in twins:
            try:
                twin.close()
            except Exception:     # noqa: BLE001  closing at collection: nothing to tell
                pass
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def close(self) -> None:
        with self.lock:
            self._finalizer()

    def __enter__(self) -> MemoryMaster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def epoch(self) -> int:
        return self.twin.epoch

    def client(self) -> MemoryClient:
        return MemoryClient(self)

    # --- requests -----------------------------------------------------------------------

    def request(self, client_id: bytes, op: int, args: list, durability: int) -> Reply:
        """One request frame through the real handlers; its reply (a parked one after the
        flush that covers it)."""
        with self.lock:
            op = Op(op)
            if self.unreachable:
                self.refused.append(op)
                raise RequestTimeout(f"{op.name}: the in-memory master is unreachable")
            self.calls.append((op, list(args)))
            frame = encode_request(client_id, next(self._ids), op, args, durability)
            now = time.monotonic()
            out = self.twin.drain([(b"memory", frame)], now)
            if not out:
                out, _batches = self.twin.flush(now)
            if not out:                          # a parked reply the flush did not release
                raise RequestTimeout(f"{op.name}: no reply (the journal did not flush)")
            return decode_reply(out[-1][1])

    def _run(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any]):
        value, error = convert_reply(self.request(self._client_id, op, args, durability),
                                     convert)
        if error is not None:
            raise error
        return value

    # --- seams --------------------------------------------------------------------------

    def restart(self) -> None:
        """Stop and start again on the same files: recovery, a new epoch."""
        with self.lock:
            self.twin.close()
            self.twin = self._open()
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, MemoryMaster._cleanup, [self.twin],
                                               self._tmp)

    def lose_worker(self, worker_id: str, reason: str = "missed heartbeats") -> None:
        """The master declares the worker lost (its tasks go back to pending)."""
        with self.lock:
            self.twin.handlers.jobs.declare_lost(worker_id, reason)
            self.twin.flush(time.monotonic())

    # --- what tests read ------------------------------------------------------------------

    def task_states(self, job_id: str) -> list[TaskState]:
        with self.lock:
            return [t.state for t in self.twin.engine.state.jobs.jobs[job_id].tasks]

    def job_state(self, job_id: str) -> str:
        with self.lock:
            return self.twin.engine.state.jobs.jobs[job_id].state.value

    def count(self, op: Op) -> int:
        """How many requests of `op` were sent (not counting those refused unreachable)."""
        with self.lock:
            return sum(1 for sent, _args in self.calls if sent == op)

    @property
    def status_endpoints(self) -> dict[str, str]:
        """The workers' status endpoints the master keeps (named at register)."""
        with self.lock:
            return dict(self.twin.handlers.jobs.status_endpoints)


class MemoryClient(Calls):
    """The Client calls of one connection to a MemoryMaster (its own client id)."""

    _count = 0

    def __init__(self, master: MemoryMaster) -> None:
        self.master = master
        MemoryClient._count += 1
        self.client_id = f"memory-client-{MemoryClient._count}".encode()
        self.epoch: int | None = None

    def _run(self, op: int, args: list, durability: int, convert: Callable[[Reply], Any]):
        reply = self.master.request(self.client_id, op, args, durability)
        self.epoch = reply.epoch
        value, error = convert_reply(reply, convert)
        if error is not None:
            raise error
        return value

    def close(self) -> None:
        pass

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunningWorker:
    """A WorkerNode (nodes/worker/node.py) run on a thread: a context manager that always stops
    and joins it; `code` is what its run() returned."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.code = None

    def _run(self) -> None:
        self.code = self.node.run()

    def __enter__(self) -> RunningWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.node.request_stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the worker did not stop"
