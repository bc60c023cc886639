"""The metadata state machine: all cluster metadata, changed only by applying records.

`State.apply(txid, record)` is the one apply path, used by the live master, the checkpoint
replica, journal replay and tests alike. It either raises an ApplyError and changes nothing,
or applies the whole record, advances `txid` and returns the record's result. It reads no
clock, no randomness and no files: everything that varies is inside the record.

The digest (see digest.py) covers the namespace, jobs, tasks and workers; `validate()` checks
every invariant and the digest from scratch (slow: for tests and offline checks).
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterator

import msgpack

from mwcluster.core import records as r
from mwcluster.core.changes import JOB_PREFIX, WORKER_PREFIX
from mwcluster.core.digest import MASK
from mwcluster.core.jobs import Job, Jobs, Task, Worker, WorkerState
from mwcluster.core.namespace import Namespace
from mwcluster.core.recent import RecentRequests, load_flat_rows
from mwcluster.errors import (ApplyError, CorruptionError, InvalidRecord, MultiFailed, NoNode,
                              NotFound)

IMAGE_FORMAT = 2              # 2: with the table of recent requests ("recent" items)
LEASES_FORMAT = 3             # 3: with a "leases" item; written only when leases exist
READABLE_FORMATS = (1, 2, 3)  # 1: written before the table was carried; loads with none
NS_CHUNK_KEYS = 4096
RECENT_CHUNK_ENTRIES = 4096


class State:
    __slots__ = ("txid", "ns", "jobs", "_dispatch")

    def __init__(self) -> None:
        self.txid = 0
        self.ns = Namespace()
        self.jobs = Jobs()
        self._dispatch: dict[type, Callable[[int, Any], Any]] = {
            r.Put: self._put, r.Merge: self._merge, r.Delete: self._delete,
            r.Check: self._check, r.Multi: self._multi, r.Noop: self._noop,
            r.JobSubmit: self._job_submit, r.JobCancel: self._job_cancel,
            r.JobDelete: self._job_delete, r.WorkerRegister: self._worker_register,
            r.WorkerLost: self._worker_lost, r.WorkerLeave: self._worker_leave,
            r.TaskAssign: self._task_assign, r.TaskProgress: self._task_progress,
            r.TaskFinish: self._task_finish, r.Attach: self._attach,
            r.LeaseGrant: self._lease_grant, r.LeaseRevoke: self._lease_revoke,
        }

    @property
    def digest(self) -> int:
        return (self.ns.digest + self.jobs.digest) & MASK

    def apply(self, txid: int, rec: r.Record) -> Any:
        """Apply one record at `txid` (which must be txid + 1); return its result."""
        if txid != self.txid + 1:
            raise InvalidRecord(f"record txid {txid} does not follow the state's txid "
                                f"{self.txid}")
        if type(rec) is r.Put:   # the most frequent record, without the dispatch
            result = self.ns.put(txid, rec.key, rec.value, rec.expected_version)
            self.txid = txid
            return result
        handler = self._dispatch.get(type(rec))
        if handler is None:
            raise InvalidRecord(f"not a record: {type(rec).__name__}")
        result = handler(txid, rec)
        if self.ns.changes is not None and rec.CODE >= r.RecordKind.JOB_SUBMIT and \
                rec.CODE < r.RecordKind.LEASE_GRANT:
            self.ns.changes.append(self._job_event(txid, rec, result))
        self.txid = txid
        return result

    def _job_event(self, txid: int, rec: r.Record, result: Any) -> tuple:
        """The watch event of a job or worker record: (txid, key, {"event": ..., fields})."""
        name = type(rec).__name__
        fields = {f: v for f, v in zip(rec._fields, rec) if f != "tasks" and f != "counters"}
        worker_id = fields.get("worker_id")
        if name.startswith("Worker"):
            fields["event"] = name[6:].lower()
            if type(result) is list:
                fields["requeued"] = len(result)
            return txid, WORKER_PREFIX + worker_id, fields
        fields["event"] = {"JobSubmit": "submit", "JobCancel": "cancel", "JobDelete": "delete",
                           "TaskAssign": "assign", "TaskProgress": "progress",
                           "TaskFinish": "finish"}[name]
        if name == "JobSubmit":
            fields["tasks"] = len(rec.tasks)
        elif name == "TaskFinish":
            fields["task_state"] = result
        job = self.jobs.jobs.get(rec.job_id)
        if job is not None:
            fields["state"] = job.state.value
        return txid, JOB_PREFIX + rec.job_id, fields

    # --- namespace -----------------------------------------------------------------------

    def _put(self, txid: int, rec: r.Put, undo: list | None = None) -> int:
        return self.ns.put(txid, rec.key, rec.value, rec.expected_version, undo)

    def _merge(self, txid: int, rec: r.Merge, undo: list | None = None) -> int:
        return self.ns.merge(txid, rec.key, rec.patch, rec.expected_version, undo)

    def _delete(self, txid: int, rec: r.Delete, undo: list | None = None) -> int:
        return self.ns.delete(rec.key, rec.recursive, rec.expected_version, undo, txid)

    def _attach(self, txid: int, rec: r.Attach, undo: list | None = None) -> None:
        if rec.key not in self.ns._entries:
            raise NoNode(f"{rec.key} does not exist, so it cannot be attached to a lease")
        if rec.lease_id not in self.ns.leases:
            raise NotFound(f"lease {rec.lease_id} does not exist (it expired or was revoked)")
        self.ns.attach(rec.key, rec.lease_id, undo)

    def _lease_grant(self, txid: int, rec: r.LeaseGrant) -> int:
        self.ns.grant(txid, rec.ttl_ms)
        return txid

    def _lease_revoke(self, txid: int, rec: r.LeaseRevoke) -> int:
        if rec.lease_id not in self.ns.leases:
            raise NotFound(f"lease {rec.lease_id} does not exist (it expired or was revoked)")
        return len(self.ns.revoke(txid, rec.lease_id))

    def _check(self, txid: int, rec: r.Check, undo: list | None = None) -> None:
        self.ns.check(rec.key, rec.expected_version)

    def _multi(self, txid: int, rec: r.Multi) -> list:
        undo: list = []
        results = []
        changes = self.ns.changes
        mark = -1 if changes is None else len(changes)
        for index, op in enumerate(rec.ops):
            handler = self._dispatch.get(type(op))
            if type(op) not in r.MULTI_MEMBERS:
                self.ns.rollback(undo, mark)
                raise MultiFailed(index, InvalidRecord(f"{type(op).__name__} inside a multi"))
            try:
                results.append(handler(txid, op, undo))
            except ApplyError as exc:
                self.ns.rollback(undo, mark)
                raise MultiFailed(index, exc) from None
            except BaseException:   # a bug or bad input that skipped admission: still all-or-none
                self.ns.rollback(undo, mark)
                raise
        return results

    def _noop(self, txid: int, rec: r.Noop) -> None:
        return None

    # --- jobs, tasks, workers ------------------------------------------------------------

    def _job_submit(self, txid: int, rec: r.JobSubmit) -> str:
        return self.jobs.submit(rec.job_id, rec.name, rec.handler, rec.priority,
                                rec.max_attempts, rec.tasks, rec.now_ms, rec.options)

    def _job_cancel(self, txid: int, rec: r.JobCancel) -> int:
        return self.jobs.cancel(rec.job_id, rec.reason, rec.now_ms)

    def _job_delete(self, txid: int, rec: r.JobDelete) -> int:
        return self.jobs.delete(rec.job_id)

    def _worker_register(self, txid: int, rec: r.WorkerRegister) -> bool:
        return self.jobs.register(rec.worker_id, rec.address, rec.slots, rec.now_ms)

    def _worker_lost(self, txid: int, rec: r.WorkerLost) -> list:
        return self.jobs.worker_gone(rec.worker_id, WorkerState.LOST, rec.reason, rec.now_ms)

    def _worker_leave(self, txid: int, rec: r.WorkerLeave) -> list:
        return self.jobs.worker_gone(rec.worker_id, WorkerState.LEFT, "left", rec.now_ms)

    def _task_assign(self, txid: int, rec: r.TaskAssign) -> None:
        self.jobs.assign(rec.job_id, rec.index, rec.worker_id, rec.attempt, rec.now_ms)

    def _task_progress(self, txid: int, rec: r.TaskProgress) -> None:
        self.jobs.progress(rec.job_id, rec.index, rec.attempt, rec.progress, rec.counters,
                           rec.now_ms)

    def _task_finish(self, txid: int, rec: r.TaskFinish) -> str:
        return self.jobs.finish(rec.job_id, rec.index, rec.attempt, rec.ok, rec.outcome,
                                rec.now_ms).value

    # --- invariants ----------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Every broken invariant, described; an empty list when the state is sound."""
        return self.ns.validate(self.txid) + self.jobs.validate()

    # --- the state image (the body of a snapshot file) -----------------------------------

    def image_chunks(self, recent: RecentRequests | None = None) -> Iterator[bytes]:
        """The whole state as a msgpack stream of items (see docs/formats.md, "State image"),
        with `recent`, the table of recent requests as of this state's txid (none if None).

        Items: ["meta", {...}], then ["ns", [key, entry, ...]] chunks in key order,
        ["workers", [row, ...]], one ["job", row, [task rows]] per job,
        ["recent", [client_id, request_id, txid, result, ...]] chunks oldest first,
        ["end", digest].
        """
        pack = msgpack.Packer(use_bin_type=True).pack
        leases = self.ns.lease_rows()
        fmt = LEASES_FORMAT if leases else IMAGE_FORMAT    # readable by older nodes without
        yield pack(["meta", {"format": fmt, "txid": self.txid, "digest": self.digest,
                             "keys": len(self.ns), "jobs": len(self.jobs.jobs),
                             "workers": len(self.jobs.workers),
                             "recent": 0 if recent is None else len(recent)}])
        chunk: list = []
        for key, entry in self.ns.items():
            chunk.append(key)
            chunk.append(entry)
            if len(chunk) >= 2 * NS_CHUNK_KEYS:
                yield pack(["ns", chunk])
                chunk = []
        if chunk:
            yield pack(["ns", chunk])
        if leases:
            yield pack(["leases", leases])
        yield pack(["workers", [w.row() for w in self.jobs.workers.values()]])
        for job in self.jobs.jobs.values():
            yield pack(["job", job.row(), job.tasks.rows()])
        if recent is not None:
            for flat in recent.flat_rows(RECENT_CHUNK_ENTRIES):
                yield pack(["recent", flat])
        yield pack(["end", self.digest])

    @classmethod
    def from_image(cls, chunks: Iterator[bytes], *, source: str = "state image",
                   recent: RecentRequests | None = None) -> "State":
        """Rebuild a state from `image_chunks()` output; verify the digest it carries.
        The image's recent requests are remembered in `recent` (checked, and dropped, when
        it is None); an image of format 1 has none. The caller gives an empty table and
        discards it if this raises."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True,
                                    max_buffer_size=1 << 31)
        state = cls()
        meta = None
        ended = None
        leases = None
        recent_count = 0
        try:
            for data in chunks:
                unpacker.feed(data)
                for item in unpacker:
                    kind = item[0]
                    if kind == "ns":
                        state.ns.load_sorted(item[1])
                    elif kind == "leases":
                        leases = item[1]
                    elif kind == "job":
                        state._load_job(item[1], item[2])
                    elif kind == "workers":
                        for row in item[1]:
                            worker = Worker.from_row(row)
                            state.jobs.workers[worker.worker_id] = worker
                            state.jobs.digest = (state.jobs.digest + worker.hash()) & MASK
                    elif kind == "recent":
                        if meta is None or meta["format"] < 2:
                            raise CorruptionError(f"{source}: a recent-requests item "
                                                  "before the meta item or in a format 1 image")
                        recent_count += load_flat_rows(recent, item[1], state.txid)
                    elif kind == "meta":
                        if meta is not None:
                            raise CorruptionError(f"{source}: a second meta item")
                        meta = item[1]
                        if meta.get("format") not in READABLE_FORMATS:
                            raise CorruptionError(
                                f"{source}: state image format {meta.get('format')} is not "
                                f"one this mwcluster reads ({READABLE_FORMATS}); upgrade "
                                "mwcluster")
                        state.txid = meta["txid"]
                    elif kind == "end":
                        ended = item[1]
                    else:
                        raise CorruptionError(f"{source}: unknown item {kind!r}")
            if meta is None or ended is None:
                raise CorruptionError(
                    f"{source}: state image is incomplete (no meta or end item)")
            if recent_count != meta.get("recent", 0):
                raise CorruptionError(f"{source}: the image holds {recent_count} recent "
                                      f"requests, its meta item says {meta.get('recent')}")
            # Damaged rows can also fail here (a task naming an unknown worker, a key that is
            # not a string): inside the try, so that they too surface as CorruptionError.
            state.ns.finish_load()
            if leases is not None:
                state.ns.load_leases(leases)
            state.jobs.rebuild_derived()
            if state.digest != meta["digest"] or ended != meta["digest"]:
                raise CorruptionError(
                    f"{source}: digest of the loaded state {state.digest:016x} does not "
                    f"match the recorded {meta['digest']:016x}")
        except (ValueError, TypeError, KeyError, IndexError, AttributeError,
                struct.error) as exc:
            # msgpack's unpacking errors (ExtraData, FormatError...) are ValueErrors; struct
            # errors come from entry headers that are too short.
            raise CorruptionError(f"{source}: malformed state image: {exc}") from None
        return state

    def _load_job(self, row: list, task_rows: list) -> None:
        job = Job.from_row(row)
        digest = job.hash()
        for task_row in task_rows:
            task = Task.from_row(job.job_id, task_row)
            job.tasks.append(task)
            digest += task.hash()
        self.jobs.jobs[job.job_id] = job
        self.jobs.digest = (self.jobs.digest + digest) & MASK

    def image_bytes(self) -> bytes:
        return b"".join(self.image_chunks())
