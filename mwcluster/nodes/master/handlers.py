"""What the master answers to one request frame: no sockets, no threads, no clock reads.

`Handlers.handle(ident, frame, drain)` decodes an untrusted frame with `wire.protocol`, runs
the operation against the Engine and returns the encoded reply, or None when the reply is
parked until the fsync that covers it (sync durability; `release` hands parked replies back
once `durable_txid` passed their txid; parking.py). Every failure becomes an error reply with a
code; nothing is applied from a request that fails to decode or validate. The event loop
(nodes/master/node.py) owns the sockets and calls this once per frame, with the `Drain` it is
in (its start time and its count of requests per op); tests and the in-memory twins call it
directly.

Every operation runs through `_apply(req) -> (status, txid, result)`; `handle` packs that
into one reply frame, `_batch` packs the answers of a BATCH's sub-requests into one frame (the
frame is decoded once; each sub-request is validated and applied exactly as a single request
would be, with its own request id for idempotency and its own durability).

Job and worker operations (JOB_SUBMIT..WORKER_LEAVE, JOB_LIST/STATUS/TASKS) are answered by
jobs.JobHandlers, with the same idempotency, parking and error rules.

Mutations: decode -> recent(origin) answers a retry -> `records.from_wire` builds and
type-checks the record -> `Engine.submit(..., durability=ASYNC, origin=...)` -> reply now,
or park it when the request (or the master's default) asks for sync: a batch is parked whole,
until the fsync that covers its highest txid. The engine never waits for the disk on this
thread.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from mwcluster import errors
from mwcluster.core.durability import FAST, LEVEL_MASK, Durability
from mwcluster.core.failover import Fence
from mwcluster.core.records import from_wire
from mwcluster.engine import Engine
from mwcluster.nodes.master.checkpoints import BadHello
from mwcluster.nodes.master.answers import Answer, error_frame, refusal
from mwcluster.nodes.master.audit import ADMIN_OPS, AuditLog
from mwcluster.nodes.master.guard import Guard
from mwcluster.nodes.master.jobs import JobHandlers, JobsConfig
from mwcluster.nodes.master.coordination import Coordination
from mwcluster.nodes.master.parking import ParkedReplies
from mwcluster.nodes.master.replication import ReplicationReads
from mwcluster.nodes.master.reads import NAMESPACE_READS
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.nodes.master.upload import SnapshotUploads, UploadRefused
from mwcluster.security.access import Access, bound_client_id
from mwcluster.wire.protocol import (DEFAULT_MAX_BATCH, DEFAULT_MAX_MESSAGE_BYTES,
                                     FIRST_JOB_OP, LEASE_OPS, STATE_READS, ErrorCode, Op,
                                     ProtocolError, Request,
                                     args_check, decode_batch, decode_request, encode_reply,
                                     error_code_for)

log = logging.getLogger(__name__)

_BATCH = int(Op.BATCH)
_PUT = int(Op.PUT)
_UPLOAD_END = int(Op.SNAPSHOT_UPLOAD_END)
_UPLOAD_CHUNK = int(Op.SNAPSHOT_UPLOAD_CHUNK)
_ASYNC = Durability.ASYNC
_REPLICATED = int(Durability.REPLICATED)
_REPLICA_ACK = int(Op.REPLICA_ACK)
_HELLO = int(Op.CHECKPOINT_HELLO)
_REGISTER = int(Op.WORKER_REGISTER)
_WATCH, _KEEPALIVE = int(Op.WATCH), int(Op.LEASE_KEEPALIVE)
_AUDITED = frozenset(int(op) for op in ADMIN_OPS)
# A checkpoint node says hello every 2 s and acks every batch it applies: silent this long, no
# standby follows, and `replicated` requests are refused at once instead of parked.
STANDBY_SILENT_S = 10.0
# What a fenced master still answers: its status, and the replication reads a standby or the
# new master may need to take its last records (never a client's read or write).
FENCED_ALLOWED = frozenset(int(op) for op in (Op.STATUS, Op.PING, Op.FETCH, Op.SNAPSHOT_INFO,
                                              Op.SNAPSHOT_CHUNK, Op.CHECKPOINT_HELLO))


class Drain:
    """One drain of the master's loop, as the handlers see it: when it began (the time a
    reply is parked at, and a worker was last heard) and how many requests of each op it
    answered (the loop accounts their latency per drain)."""

    __slots__ = ("now", "ops")

    def __init__(self, now: float) -> None:
        self.now = now
        self.ops: dict[int, int] = {}


class Handlers:
    """The request handlers of one master. Owned by the event loop thread."""

    def __init__(self, engine: Engine, epoch: int, stats: MasterStats, *,
                 default_sync: bool = False, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 fetch_max_bytes: int = 4 << 20, max_batch: int = DEFAULT_MAX_BATCH,
                 status: Callable[[], dict] = dict,
                 uploads: SnapshotUploads | None = None, jobs: JobsConfig = JobsConfig(),
                 wall_ms: Callable[[], int] | None = None, fenced_by: int | None = None,
                 on_fenced: Callable[[int], None] | None = None,
                 wake_flusher: bool = True, access: Access | None = None,
                 audit: AuditLog | None = None,
                 reload_principals: Callable[[], int] | None = None,
                 coordination: Coordination | None = None, max_watches: int = 10_000) -> None:
        self.engine = engine
        # Authorization (security/access.py): with CURVE on, every request (and every BATCH
        # sub-request) is checked against its connection's principal before anything else.
        self.access = access
        self.audit = audit
        self.guard = Guard(access, audit, stats, epoch)
        self._reload_principals = reload_principals
        # Epoch fencing (core/failover.py): a request carrying a higher epoch than this
        # master's fences it for good; `on_fenced` persists that before any refusal goes out.
        self.fence = Fence(epoch)
        if fenced_by is not None:        # from the fence file: fenced whatever its value
            self.fence.fenced_by = fenced_by
        self.on_fenced = on_fenced
        self._dropped_ops: frozenset[int] = frozenset()   # the loop's fault seam (cut_off)
        self.uploads = uploads if uploads is not None else SnapshotUploads(engine, epoch)
        self.epoch = epoch
        self.stats = stats
        self.default_sync = default_sync
        self.max_message_bytes = max_message_bytes
        replication = ReplicationReads(engine, stats, epoch, fetch_max_bytes)
        # watches and leases (coordination.py); WATCH and LEASE_KEEPALIVE go by handle()
        self.coord = coordination or Coordination(
            engine, stats, epoch, 0.0, replica_txid=lambda: self.replica_txid,
            max_watches=max_watches)
        self.max_batch = max_batch
        self.status = status
        self._stopping = False
        # The master's loop passes False and wakes the journal flusher itself once a drain's
        # replies are sent; with True every append wakes it (as in-memory callers expect).
        self._wake = wake_flusher
        self.batches = 0             # BATCH messages answered (their sub-requests count as
        #                              requests of their own op)
        # sync replies waiting for their fsync
        self.parked = ParkedReplies(stats.sync_wait)
        # `replicated` replies: released when the standby's REPLICA_ACK reaches their txid (it
        # applies only records durable here)
        self.parked_replicated = ParkedReplies(stats.sync_wait)
        # where a reply of each level waits: SYNC, DEFAULT when the master's default is sync,
        # and REPLICATED; the other levels (async) never wait
        self._queues = {int(Durability.SYNC): self.parked,
                        int(Durability.REPLICATED): self.parked_replicated,
                        **({int(Durability.DEFAULT): self.parked} if default_sync else {})}
        self.replica_txid = 0        # the highest txid a standby reported applied
        self.standby_heard_at = float("-inf")   # a checkpoint node's last hello or ack
        self.replica_acks = 0
        self._reads: dict[int, Callable[[Request], Answer]] = {
            **{op: self._namespace_read(read) for op, read in NAMESPACE_READS.items()},
            Op.STATUS: self._status, Op.PING: self._ping,
            Op.FETCH: replication.fetch, Op.SNAPSHOT_INFO: replication.snapshot_info,
            Op.SNAPSHOT_CHUNK: replication.snapshot_chunk,
            Op.WATCH: self._upload_in_batch, Op.LEASE_KEEPALIVE: self._upload_in_batch,
            Op.SNAPSHOT_UPLOAD_BEGIN: self._upload_begin,
            Op.SNAPSHOT_UPLOAD_CHUNK: self._upload_in_batch,
            Op.SNAPSHOT_UPLOAD_END: self._upload_in_batch,
            Op.SNAPSHOT_UPLOAD_ABORT: self._upload_abort,
            Op.CHECKPOINT_HELLO: self._checkpoint_hello,
            Op.PROMOTE: self._standby_only, Op.VOTE: self._standby_only,
            Op.STANDBY_READ: self._standby_only,
            Op.REPLICA_ACK: self._replica_ack,
            Op.RELOAD_PRINCIPALS: self._reload,
        }
        # jobs and workers (jobs.py): ops FIRST_JOB_OP..99 through _mutate, and reads
        self.jobs = JobHandlers(engine, stats, epoch, jobs, wake_flusher=wake_flusher,
                                **({"wall_ms": wall_ms} if wall_ms else {}))
        for op in (Op.JOB_LIST, Op.JOB_STATUS, Op.JOB_TASKS):
            self._reads[op] = self.jobs.read

    # --- what the loop tells the handlers -----------------------------------------------

    def stop_taking_requests(self) -> None:
        """From now on every request is answered `shutting_down` (the master is stopping)."""
        self._stopping = True

    def cut_off(self, ops: frozenset[int]) -> None:
        """Leave requests of these ops unanswered (the loop's fault seam, CUT_STANDBY_ENV)."""
        self._dropped_ops = ops

    # --- entry points ----------------------------------------------------------------------

    def handle(self, ident: bytes, frame: bytes, drain: Drain, user: str | None = None,
               peer: str = "") -> bytes | None:
        """The reply to one request frame, or None when it was parked for sync. `user` is
        the connection's User-Id (its CURVE key, set by the ZAP handler), `peer` its
        address (for the audit log)."""
        try:
            req = decode_request(frame, self.max_message_bytes)
        except ProtocolError as exc:
            return self.error(exc.request_id or 0, exc.error, str(exc))
        op = req[2]
        if op in self._dropped_ops:
            return None              # the fault seam (node.CUT_STANDBY_ENV): unanswered
        if self.access is not None:
            why = self.guard.check(user, op, req[4])
            if why is not None:      # before the epoch it carries can fence this master
                return encode_reply(req[1], self.epoch,
                                    *self.guard.refuse(user, peer, op, req[4], why))
            req = req._replace(client_id=bound_client_id(user, req[0]))
        if req[5] > self.epoch:
            self.saw_epoch(req[5])
        if self.fence.fenced_by is not None and op not in FENCED_ALLOWED:
            return self.fenced_error(req[1])
        if op == _BATCH:
            return self._batch(ident, req, drain, user, peer)
        ops = drain.ops
        ops[op] = ops.get(op, 0) + 1
        if self._stopping:
            return self._refuse_stopping(req[1])
        if op == _UPLOAD_END or op == _UPLOAD_CHUNK:
            return self._upload_parked(ident, req)
        if op == _WATCH or op == _KEEPALIVE:
            return self._coordinate(ident, req, drain.now)
        status, txid, result, level, mark = self._run(req, drain.now)
        if user or self.audit is not None:
            self._noted(user, peer, req, status, txid)
        reply = encode_reply(req[1], self.epoch, status, txid, result)
        if mark:
            queue = self._queues.get(level)      # None: async, nothing to wait for
            if queue is not None and mark > self._covered(queue):
                return self._park(queue, mark, ident, reply, drain.now, req[1])
        return reply

    def durability_wanted(self) -> int:
        """The highest txid a parked reply waits to see durable here (0: none): a sync reply
        waits for its fsync, a replicated one for the standby, which gets only durable
        records."""
        return max(self.parked.waiting_for(), self.parked_replicated.waiting_for())

    def _covered(self, queue: ParkedReplies) -> int:
        """The highest txid the replies parked in `queue` no longer wait for."""
        if queue is self.parked_replicated:
            return self.replica_txid
        return self.engine.journal.durable_txid

    def _run(self, req: Request, now: float) -> tuple[int, int, Any, int, int]:
        """Run one request: its answer (status, txid, result) and when the reply may go,
        as (level, mark): once every record up to `mark` is durable at `level` (mark 0: at
        once). A reply that depends on the state (a mutation's success or refusal, a read of
        the namespace or the jobs) has for mark the txid of the last record applied when it
        was computed, unless it asked for consistency "fast" (then a mutation waits only for
        its own record and anything else goes at once). A read's txid is the txid it was
        served at."""
        op = req[2]
        if op < 100 or op in STATE_READS:
            level = req[3]
            if level & LEVEL_MASK == _REPLICATED and \
                    now - self.standby_heard_at > STANDBY_SILENT_S:
                return (*self._no_standby(now), 0, 0)
            status, txid, result = self._apply(req, now)
            applied = self.engine.state.txid
            served = txid or (applied if op >= 100 and not status else 0)   # a read: served at
            if level & FAST:
                return status, served, result, level & LEVEL_MASK, txid if op < 100 else 0
            return status, served, result, level, txid or applied
        if op == _REPLICA_ACK or op == _HELLO:
            self.standby_heard_at = now
        status, txid, result = self._apply(req, now)
        return status, txid, result, 0, 0

    def standby_follows(self, now: float) -> bool:
        """Whether a checkpoint node was heard from (a hello or a replica ack) within
        STANDBY_SILENT_S: without one a `replicated` request is refused at once."""
        return now - self.standby_heard_at <= STANDBY_SILENT_S

    def _no_standby(self, now: float) -> Answer:
        heard = self.standby_heard_at
        when = ("no checkpoint node has said hello to this master since it started"
                if heard == float("-inf") else
                f"the last checkpoint node was heard {now - heard:.1f} s ago")
        return self._fail(ErrorCode.UNAVAILABLE,
                          f"no standby follows this master ({when}), so a replicated request "
                          "cannot be confirmed: it was not run now (one run before stays "
                          "applied). Start a checkpoint node (mwcluster checkpoint), or ask "
                          "durability sync")

    def saw_epoch(self, epoch: int) -> None:
        """An epoch seen on any message (a request, the other node): fence on a higher one."""
        if self.fence.saw_epoch(epoch):
            log.error("epoch %d: FENCED: a peer has seen epoch %d, so another master replaced "
                      "this one; client requests are refused from now on (rejoin as a "
                      "standby: mwcluster master --rejoin-as-standby)", self.epoch, epoch)
            if self.on_fenced is not None:
                self.on_fenced(epoch)

    def fenced_error(self, request_id: int) -> bytes:
        return self.error(request_id, ErrorCode.FENCED,
                          f"this master (epoch {self.epoch}) is fenced: a master under epoch "
                          f"{self.fence.fenced_by} replaced it; nothing was applied, ask the "
                          "other master")

    def _park(self, queue: ParkedReplies, txid: int, ident: bytes, reply: bytes, now: float,
              request_id: int) -> bytes | None:
        """Park a reply in `queue` (sync: until its fsync; replicated: until the standby has
        it); while the journal is failing, answer at once that the record is not durable (a
        retry with the same request id learns its fate)."""
        failure = self.engine.journal.failure
        if failure is not None:
            return self.error(request_id, ErrorCode.UNAVAILABLE, _not_durable(txid, failure))
        queue.park(txid, ident, reply, now, request_id)
        return None

    def release(self, durable_txid: int, now: float) -> list[tuple[bytes, bytes]]:
        """Parked sync replies whose record is now durable."""
        return self.parked.release(durable_txid, now)

    def release_replicated(self, now: float) -> list[tuple[bytes, bytes]]:
        """Replicated replies the standby now has."""
        return self.parked_replicated.release(self.replica_txid, now)

    def expire_replicated(self, now: float, timeout_s: float) -> list[tuple[bytes, bytes]]:
        """Replicated replies parked longer than `timeout_s`: answered `unavailable` (the
        record is applied and, once durable, kept here; the standby did not confirm it)."""
        out = []
        for txid, ident, _reply, _at, request_id in self.parked_replicated.older_than(
                now, timeout_s):
            out.append((ident, self.error(
                request_id, ErrorCode.UNAVAILABLE,
                f"this reply depends on records up to txid {txid}, applied on the master, but "
                f"no standby confirmed having them within {timeout_s:g} s (is a checkpoint "
                "node following this master?); they may be lost by a failover. A retry waits "
                "again (a mutation: with the same request id, to learn its fate)")))
        return out

    def fail_parked(self, failure: str | None = None) -> list[tuple[bytes, bytes]]:
        """The parked sync replies as `unavailable` errors, oldest first, while the journal
        is failing (or with `failure` given, at a stop that could not save them): their
        records were applied but may never become durable, and a sync caller must not wait
        in silence for a disk that may stay full."""
        failure = failure or self.engine.journal.failure
        if failure is None or not self.parked:
            return []
        return [(ident, self.error(request_id, ErrorCode.UNAVAILABLE, _not_durable(txid, failure)))
                for txid, ident, _reply, _at, request_id in self.parked.take_all()]

    def _apply(self, req: Request, now: float) -> Answer:
        """Run one decoded request; every failure becomes an error answer."""
        op = req[2]
        try:
            if op < 100:
                return self._mutate(req, now)
            return self._reads[op](req)
        except ProtocolError as exc:
            return self._fail(exc.error, str(exc))
        except errors.InvalidRecord as exc:     # a read's bad path (CHILDREN)
            return self._fail(ErrorCode.INVALID, str(exc))
        except Exception as exc:
            return self._internal(op, exc)

    def _internal(self, op: int, exc: Exception) -> Answer:
        """A bug: log it, answer it, and keep serving everyone else."""
        log.exception("epoch %d: request op %d failed unexpectedly", self.epoch, op)
        return self._fail(ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}: {exc})")

    def _noted(self, user: str | None, peer: str, req: Request, status: int,
               txid: int) -> None:
        """After a request ran: its audit line, and a registering worker's CURVE key (its
        status endpoint serves with it)."""
        op = req[2]
        if self.audit is not None and (op < 100 or op in _AUDITED):
            self.guard.audit(user, peer, op, req[4], status, txid)
        if op == _REGISTER and user and not status:
            self.jobs.status_keys[req[4][0]] = user

    def _batch(self, ident: bytes, req: Request, drain: Drain, user: str | None = None,
               peer: str = "") -> bytes | None:
        """One reply frame for a BATCH: the sub-replies in order; parked whole until the
        fsync that covers its highest txid when any sub-request wants sync."""
        client_id, request_id, _op, _durability, subs, _epoch_seen = req
        if len(subs) > self.max_batch:
            return self.error(request_id, ErrorCode.TOO_LARGE,
                              f"a BATCH carries at most {self.max_batch} sub-requests; got "
                              f"{len(subs)} (split it)")
        if self._stopping:
            return self._refuse_stopping(request_id)
        self.batches += 1
        now = drain.now
        ops = drain.ops
        out = []
        append = out.append
        top = wait = 0
        queue = None                 # where the whole reply waits: replicated wins over sync
        queues = self._queues
        run = self._run
        access, audit = self.access, self.audit
        for sub in decode_batch(client_id, subs):
            if type(sub) is not Request:
                append((sub.request_id or 0, *self._fail(sub.error, str(sub))))
                continue
            op = sub[2]
            ops[op] = ops.get(op, 0) + 1
            if access is not None:
                why = self.guard.check(user, op, sub[4])
                if why is not None:
                    append((sub[1], *self.guard.refuse(user, peer, op, sub[4], why)))
                    continue
            try:
                status, txid, result, level, mark = run(sub, now)
            except Exception as exc:
                status, txid, result = self._internal(op, exc)
                level = mark = 0
            if user or audit is not None:
                self._noted(user, peer, sub, status, txid)
            if op < 100 and txid > top:
                top = txid
            if mark:
                sub_queue = queues.get(level)
                if sub_queue is not None:
                    wait = max(wait, mark)
                    if queue is not self.parked_replicated:
                        queue = sub_queue
            append((sub[1], status, txid, result))
        reply = encode_reply(request_id, self.epoch, 0, top, out)
        # parked whole, up to the highest txid of the batch when any part must wait (the
        # standby applies only records durable here, so its ack covers both levels)
        if queue is not None:
            wait = max(wait, top)
            if wait > self._covered(queue):
                return self._park(queue, wait, ident, reply, now, request_id)
        return reply

    def _refuse_stopping(self, request_id: int) -> bytes:
        return self.error(request_id, ErrorCode.SHUTTING_DOWN,
                          "the master is stopping; nothing was applied, retry later")

    def error(self, request_id: int, code: ErrorCode, message: str) -> bytes:
        return error_frame(self.stats, request_id, self.epoch, code, message)

    def _fail(self, code: ErrorCode, message: str) -> Answer:
        return refusal(self.stats, code, message)

    # --- mutations ---------------------------------------------------------------------------

    def _mutate(self, req: Request, now: float) -> Answer:
        client_id, request_id, op, _durability, args, _epoch_seen = req
        if op >= FIRST_JOB_OP:
            return (self.coord if op in LEASE_OPS else self.jobs).handle(req, now)
        engine = self.engine
        origin = (client_id, request_id)
        hit = engine.recent(origin)
        if hit is not None:
            self.stats.retries += 1
            return 0, *hit
        rec = None
        if op != _PUT or len(args) != 3 or type(args[0]) is not str or \
                type(args[1]) is not bytes or (args[2] is not None and type(args[2]) is not int):
            try:                 # the test above is from_wire's own for a Put: its hot path
                rec = from_wire([op, *args])
            except errors.InvalidRecord as exc:
                return self._fail(ErrorCode.BAD_REQUEST, f"{Op(op).name}: {exc}")
        try:
            if rec is None:
                txid, result = engine.submit_put(*args, origin, self._wake)
            else:
                txid, result = engine.submit(rec, durability=_ASYNC, origin=origin,
                                             wake=self._wake)
        except errors.MwclusterError as exc:  # refused: nothing was applied
            return self._fail(error_code_for(exc), str(exc))
        return 0, txid, result

    # --- reads -------------------------------------------------------------------------------

    @staticmethod
    def _ok(req: Request, result: Any) -> Answer:
        return 0, 0, result

    def _namespace_read(self, read: Callable[[Any, Request], Any]) -> Callable[[Request], Answer]:
        """The handler of one namespace read (nodes/master/reads.py) on this engine's state."""
        engine = self.engine

        def answer(req: Request) -> Answer:
            return 0, 0, read(engine.state.ns, req)
        return answer

    def _status(self, req: Request) -> Answer:
        args_check(req, (), ())
        return self._ok(req, self.status())

    def _replica_ack(self, req: Request) -> Answer:
        txid, = args_check(req, (int,), ("replica_txid",))
        self._replica_at(txid)
        self.replica_acks += 1
        return self._ok(req, None)

    def _replica_at(self, txid: int) -> None:
        if txid > self.replica_txid:
            # never above what is durable here: the stream carries only durable records
            self.replica_txid = min(txid, self.engine.journal.durable_txid)

    def _reload(self, req: Request) -> Answer:
        args_check(req, (), ())
        if self._reload_principals is None:
            return self._fail(ErrorCode.BAD_REQUEST, "this master runs without keys "
                              "(no key_file): there are no principals to reload")
        try:
            return self._ok(req, self._reload_principals())
        except errors.ConfigError as exc:     # the principals in force stay
            return self._fail(ErrorCode.INVALID, f"the principals were not reloaded: {exc}")

    def _standby_only(self, req: Request) -> Answer:
        return self._fail(ErrorCode.BAD_REQUEST, f"{Op(req.op).name} is sent to a checkpoint "
                          "node's status endpoint (the standby), not to a master")

    def _ping(self, req: Request) -> Answer:
        args_check(req, (), ())
        return self._ok(req, None)

    # --- snapshot upload (nodes/master/upload.py) ------------------------------------------------

    def _upload_begin(self, req: Request) -> Answer:
        try:
            return self._ok(req, self.uploads.begin(req.client_id, req.args))
        except UploadRefused as exc:
            return self._fail(exc.code, str(exc))

    def _upload_abort(self, req: Request) -> Answer:
        try:
            return self._ok(req, self.uploads.abort(req.args))
        except UploadRefused as exc:
            return self._fail(exc.code, str(exc))

    def _checkpoint_hello(self, req: Request) -> Answer:
        uploads = self.uploads
        try:
            uploads.nodes.hello(req.client_id, req.args, uploads.clock())
        except BadHello as exc:
            return self._fail(ErrorCode.BAD_REQUEST, str(exc))
        self._replica_at(req.args[1])     # the replica txid it names is an ack too
        return self._ok(req, None)

    def _upload_in_batch(self, req: Request) -> Answer:
        return self._fail(ErrorCode.BAD_REQUEST, f"{Op(req.op).name} cannot be part of a BATCH")

    def _coordinate(self, ident: bytes, req: Request, now: float) -> bytes | None:
        """WATCH (None: parked until events come or its wait ends) and LEASE_KEEPALIVE."""
        try:
            if req[2] == _WATCH:
                answer = self.coord.watch(ident, req, now)
                if answer is None:
                    return None
            else:
                answer = self.coord.keepalive(req, now)
        except ProtocolError as exc:
            answer = self._fail(exc.error, str(exc))
        return encode_reply(req[1], self.epoch, *answer)

    def _upload_parked(self, ident: bytes, req: Request) -> bytes | None:
        """CHUNK and END: None, the reply comes from uploads.finished() once the worker
        thread wrote the chunk or installed the file; an error reply at once."""
        try:
            if req.op == _UPLOAD_END:
                self.uploads.end(ident, req.request_id, req.args)
            else:
                self.uploads.chunk(ident, req.request_id, req.args)
        except UploadRefused as exc:
            return self.error(req.request_id, exc.code, str(exc))
        except Exception as exc:
            status, _txid, result = self._internal(req.op, exc)
            return encode_reply(req.request_id, self.epoch, status, 0, result)
        return None


def _not_durable(txid: int, failure: str) -> str:
    return (f"this reply depends on records up to txid {txid}, applied but not durable: "
            f"{failure}. They become durable only if the disk recovers before the master "
            "stops; a mutation's retry with the same request id learns whether it did (a "
            "read: retry later, or ask consistency \"fast\")")
