"""The master process: one event-loop thread that owns the Engine, the ROUTER and the PUB.

    open():  lock DATA_DIR -> epoch + 1 (storage/epoch.py) -> Engine.open() (recovery) ->
             bind the ROUTER and the PUB -> metrics server -> ready file
    run():   drain: read every ready message (up to MAX_DRAIN, for at most DRAIN_BUDGET_S),
                 answer each through Handlers (nodes/master/handlers.py; a BATCH message is many
                 requests), then send all the replies
             durable txid moved (read after every drain; the wake pipe when idle): send the
                 parked sync replies it covers, publish the newly durable records on PUB (one
                 message per publish_batch_bytes), each batch ending where a drain ended, with
                 the state digest there; answer the parked watches events reached
             the flusher stalled while the loop is busy (not lingering out its flush
                 interval): block on the wake pipe a moment (FLUSHER_STALL_S, _YIELD_S)
             tick (every TICK_S): heartbeat when nothing was published for a while, answer
                 watches whose wait is over, revoke expired leases (coordination.py), log
                 WorkerLost for silent workers (jobs.py), rate sample, forget silent peers,
                 metrics snapshot; poll [ROUTER, wake pipe] only when a drain found nothing
             until request_stop(); then shut down: answer late requests `shutting_down`,
             Engine.close() (drain + fsync), send the replies it made durable, publish the
             last records and a heartbeat, close the sockets with a bounded linger.

Threads: this loop; the journal flusher (storage/journal.py), whose `on_durable` callback
only writes one byte to the wake pipe (at most one pending byte, guarded by a flag); the
optional Prometheus HTTP server, which reads a snapshot the loop replaces once per tick.
The loop never waits for the disk: sync replies are parked, not waited for.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import time
from pathlib import Path
from typing import Any

import zmq

from mwcluster import errors
from mwcluster.config import MasterConfig
from mwcluster.engine import Engine
from mwcluster.nodes.master.audit import AuditLog
from mwcluster.nodes.master.handlers import Drain, Handlers
from mwcluster.nodes.master.jobs import JobsConfig
from mwcluster.nodes.master.stats import (PEER_WINDOW_S, MasterCollector, MasterStats,
                                          TimedJournalIO)
from mwcluster.nodes.master.status import master_status
from mwcluster.nodes.master.stream import LogStream
from mwcluster.nodes.master.upload import SnapshotUploads
from mwcluster.nodes.metrics import MetricsServer
from mwcluster.security.curve import STREAM_DOMAIN, ServerSecurity, protect
from mwcluster.storage import epoch as epochs
from mwcluster.storage import fenced as fence_file
from mwcluster.storage import crashpoints
from mwcluster.storage.fsutil import JournalIO, lock_data_dir, write_file_atomic
from mwcluster.wire.protocol import TOPIC_HEARTBEAT, TOPIC_LOG, ErrorCode, Op

log = logging.getLogger(__name__)

MAX_DRAIN = 4096        # messages read before the replies go out and the pipe is looked at
TICK_S = 0.25
# A drain stops reading after DRAIN_BUDGET_S, sends its replies, and the loop looks at the
# journal: replies and published records do not wait behind a long stream of batches.
DRAIN_BUDGET_S = 0.002
# The journal flusher needs the GIL after each of its system calls; CPython hands it over on a
# timer (the switch interval) only if the holder never released it, and this loop releases it
# at every socket call, so a loop that never blocks starves the flusher (the loss window grew
# to hundreds of ms under batched load). When the durable txid has not moved for
# FLUSHER_STALL_S while records wait, the loop blocks on the wake pipe at most FLUSHER_YIELD_S.
FLUSHER_STALL_S = 0.002
FLUSHER_YIELD_S = 0.001
# A `replicated` reply not confirmed by a standby within this long is answered unavailable.
REPLICATED_TIMEOUT_S = 5.0
_NOBLOCK = zmq.NOBLOCK
# Fault seam for the split-brain test (docs/failover.md): while the file named by this
# variable exists (looked at every tick), the master publishes nothing and leaves the requests
# a standby sends unanswered, as if the network between them were cut.
CUT_STANDBY_ENV = "MWCLUSTER_FAULT_CUT_STANDBY_FILE"
CUT_OPS = frozenset(int(op) for op in (Op.FETCH, Op.SNAPSHOT_INFO, Op.SNAPSHOT_CHUNK,
                                       Op.CHECKPOINT_HELLO, Op.PING))


def _wall_ms() -> int:
    """The wall clock in ms, for the times job and worker records carry."""
    return time.time_ns() // 1_000_000

_SNDMORE = zmq.SNDMORE


class Master:
    def __init__(self, config: MasterConfig, *, journal_io: JournalIO | None = None,
                 epoch: int | None = None) -> None:
        self.config = config
        # a promoted standby serves under the epoch it took (already persisted), not + 1
        self._promoted_epoch = epoch
        self.data_dir = Path(config.data_dir)
        self.stats = MasterStats()
        self.fsync_io = TimedJournalIO(crashpoints.journal_io_from_env(journal_io),
                                       config.slow_fsync_ms / 1000)
        self.engine: Engine | None = None
        self.handlers: Handlers | None = None
        self.uploads: SnapshotUploads | None = None
        self.epoch = 0
        self.client_endpoint = self.pub_endpoint = ""
        self.metrics: MetricsServer | None = None
        self.stream: LogStream | None = None
        self.peers: dict[bytes, float] = {}
        self.started = self.serving_since = time.monotonic()
        self._ctx: zmq.Context | None = None
        self.router: zmq.Socket | None = None
        self.pub: zmq.Socket | None = None
        self._lock_fd: int | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_pending = False
        self._stop_requested = False
        self._closed = False
        self._last_publish = 0.0
        self._next_rate = 0.0
        self.drains = 0             # drains that read something, and the messages they read
        self.drained = 0
        self._cut_file = os.environ.get(CUT_STANDBY_ENV) or None
        self._cut = False
        # CURVE (security/curve.py): None runs plain, allowed only on loopback unless insecure
        self.security: ServerSecurity | None = None
        self.insecure_warning: str | None = None
        self.audit: AuditLog | None = None
        self._reload_requested = False
        self._pub_unbound = False   # the PUB was unbound at a reload: bound again at a tick

    # --- start ---------------------------------------------------------------------------

    def open(self) -> Master:
        """Recover and bind; on any failure everything opened so far is closed again."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        cfg = self.config
        self.security = ServerSecurity.from_config(cfg.key_file, cfg.principals_dir,
                                                   cfg.server_key)
        self.insecure_warning = protect([cfg.client_endpoint, cfg.pub_endpoint],
                                        self.security is not None, cfg.insecure, "master")
        if self.insecure_warning:
            log.warning(self.insecure_warning)
        if cfg.audit_log:
            self.audit = AuditLog(cfg.audit_log)
        self._lock_fd = lock_data_dir(self.data_dir, "master")
        fenced_by = fence_file.read_fenced(self.data_dir, epochs.read_epoch(self.data_dir))
        if fenced_by is not None:
            # a fenced data directory claims no new epoch: it will not serve
            self.epoch = epochs.read_epoch(self.data_dir)
        elif self._promoted_epoch is None:
            self.epoch = epochs.next_epoch(self.data_dir)
        else:
            if epochs.read_epoch(self.data_dir) > self._promoted_epoch:
                raise errors.MwclusterError(f"{self.data_dir} already holds an epoch above "
                                            f"{self._promoted_epoch}")
            epochs.write_epoch(self.data_dir, self._promoted_epoch)
            self.epoch = self._promoted_epoch
        self.engine = Engine(self.data_dir, durability="async", keep_snapshots=cfg.keep_snapshots,
                             epoch=self.epoch, segment_bytes=cfg.segment_bytes,
                             buffer_limit_bytes=cfg.buffer_limit_bytes, journal_io=self.fsync_io,
                             on_durable=self._on_durable, recent_requests=cfg.recent_requests,
                             tail_bytes=cfg.tail_bytes, watch_events=cfg.watch_events,
                             watch_bytes=cfg.watch_bytes,
                             flush_interval_s=cfg.flush_interval_ms / 1000)
        report = self.engine.open()
        log.info("epoch %d: recovered txid %d in %.3f s", self.epoch, report.last_txid,
                 report.seconds)
        # The recovered state lives as long as the process: keep the cyclic garbage collector
        # from walking it at every full collection (each one holds the GIL, so it stalls the
        # loop and the flusher; 7-25 ms pauses twice a second were the loss window's p99).
        gc.freeze()
        self.uploads = SnapshotUploads(self.engine, self.epoch, wake=self._poke)
        self.uploads.record(self.engine.state.txid, self.engine.state.digest)
        self.stream = LogStream(self.engine, self.epoch, self.uploads, cfg.publish_batch_bytes)
        self.handlers = Handlers(self.engine, self.epoch, self.stats,
                                 default_sync=cfg.durability == "sync",
                                 max_message_bytes=cfg.max_message_bytes,
                                 fetch_max_bytes=cfg.fetch_max_bytes, status=self.status,
                                 uploads=self.uploads, wall_ms=_wall_ms,
                                 jobs=JobsConfig(cfg.worker_timeout_s, cfg.worker_heartbeat_ms,
                                                 cfg.max_assign_per_request),
                                 fenced_by=fenced_by,
                                 on_fenced=self._on_fenced,
                                 # _drain wakes the flusher after the replies
                                 wake_flusher=False,
                                 access=self.security.access if self.security else None,
                                 audit=self.audit,
                                 reload_principals=self.reload_principals
                                 if self.security else None, max_watches=cfg.max_watches)
        self.handlers.coord.started(time.monotonic())
        if self.handlers.fence.fenced:
            log.error("epoch %d: this data directory is FENCED (a master under epoch %d "
                      "replaced it): client requests are refused; rejoin as a standby",
                      self.epoch, self.handlers.fence.fenced_by)
        self._bind()
        if cfg.metrics_port:
            collector = MasterCollector(self.stats, {int(op): op.name.lower() for op in Op},
                                        {int(c): c.name.lower() for c in ErrorCode})
            self.metrics = MetricsServer(collector, cfg.metrics_host, cfg.metrics_port)
        self.serving_since = time.monotonic()
        # the workers recovered as active get a whole worker_timeout_s from now
        self.handlers.jobs.grace(self.serving_since)
        self.stats.publish(self.status(), self.fsync_io)
        if cfg.ready_file:
            write_file_atomic(Path(cfg.ready_file), json.dumps(self.ready_info()).encode(),
                              durable=False)
        log.info("epoch %d: serving requests on %s, log stream on %s (durability %s, %s)",
                 self.epoch, self.client_endpoint, self.pub_endpoint, cfg.durability,
                 f"CURVE, {len(self.security.access.grants)} principals" if self.security
                 else "no authentication")

    def _on_fenced(self, fenced_by: int) -> None:
        """Persist the fence before the first refusal is sent (a restart stays fenced)."""
        try:
            fence_file.write_fenced(self.data_dir, self.epoch, fenced_by)
        except errors.MwclusterError as exc:   # still fenced in memory; say it loudly
            log.error("epoch %d: %s", self.epoch, exc)

    def _bind(self) -> None:
        cfg = self.config
        self._ctx = ctx = zmq.Context()
        router = self.router = ctx.socket(zmq.ROUTER)
        for option, value in ((zmq.LINGER, 0), (zmq.MAXMSGSIZE, cfg.max_message_bytes),
                              (zmq.ROUTER_MANDATORY, 0), (zmq.SNDHWM, cfg.router_hwm),
                              (zmq.RCVHWM, cfg.router_hwm)):
            router.setsockopt(option, value)
        pub = self.pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, cfg.pub_hwm)
        if self.security is not None:
            self.security.serve(router)
            self.security.serve(pub, STREAM_DOMAIN)
        for sock, endpoint, what in ((router, cfg.client_endpoint, "client"),
                                     (pub, cfg.pub_endpoint, "pub")):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise errors.MwclusterError(f"cannot bind the {what} endpoint {endpoint}: "
                                            f"{exc} (is another process using it?)") from None
        self.client_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pub_endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)

    def ready_info(self) -> dict[str, Any]:
        return {"client": self.client_endpoint, "pub": self.pub_endpoint, "pid": os.getpid(),
                "epoch": self.epoch, "metrics_port": self.metrics.port if self.metrics else None}

    # --- wake-ups from other threads ------------------------------------------------------

    def _on_durable(self, _txid: int) -> None:
        """Called by the journal flusher after each fsync: one byte per pending wake-up."""
        if not self._wake_pending:
            self._wake_pending = True
            self._poke()

    def request_reload(self) -> None:
        """Read the principals directory again at the next tick (safe in a signal
        handler: SIGHUP)."""
        self._reload_requested = True

    def reload_principals(self) -> int:
        """Read the principals directory again; a bad one keeps those in force (ConfigError,
        logged). Returns how many principals are allowed now."""
        if self.security is None:
            raise errors.ConfigError("this master runs without keys: nothing to reload")
        streamed = self.security.stream_keys()
        try:
            count = self.security.reload()
        except errors.ConfigError as exc:
            log.error("epoch %d: the principals were not reloaded (those in force stay): %s",
                      self.epoch, exc)
            raise
        log.info("epoch %d: principals reloaded from %s: %d allowed", self.epoch,
                 self.security.principals_dir, count)
        if streamed - self.security.stream_keys() and self.pub is not None:
            # a subscription makes no requests to refuse: drop every subscriber (unbind ends
            # their connections) and let them come back through the ZAP handler; the bind
            # again waits for the next tick (libzmq releases the port asynchronously)
            self.pub.unbind(self.pub_endpoint)
            self._pub_unbound = True
            log.warning("epoch %d: a principal allowed on the log stream was removed: every "
                        "subscriber was disconnected and must authenticate again", self.epoch)
        return count

    def request_stop(self) -> None:
        """Ask the loop to stop (thread-safe, and safe in a signal handler)."""
        self._stop_requested = True
        if not self._closed:        # after close() the pipe's fd numbers may be reused
            self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"\x01")
        except (BlockingIOError, OSError):
            pass   # the pipe is full (a wake-up is pending anyway) or already closed

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until request_stop(); then shut down. Returns the process exit code.

        Under load the loop does not poll: it drains the ROUTER again as soon as the last
        drain found something, and looks at the journal's durable txid after every drain
        instead of waiting for the wake pipe (whose byte then stays, so the flusher does not
        write another). It polls, with a timeout up to the next tick, only when a drain found
        nothing.
        """
        router = self.router
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        poll = poller.poll
        wake_r = self._wake_r
        drain = self._drain
        journal = self.engine.journal
        handlers = self.handlers
        parked, parked_replicated = handlers.parked, handlers.parked_replicated
        monotonic = time.monotonic
        engine = self.engine
        uploads = self.uploads
        stream = self.stream
        coord = handlers.coord
        next_tick = stalled_since = monotonic()
        last_durable = journal.durable_txid
        try:
            while not self._stop_requested:
                busy = drain()
                durable = journal.durable_txid
                if durable > stream.published_txid or parked.due(durable):
                    self._after_durable()
                if parked_replicated.due(handlers.replica_txid):
                    self._send_all(handlers.release_replicated(monotonic()))
                if uploads.pending():
                    self._send_all(uploads.finished())
                if coord.parked:
                    self._send_all(coord.deliver())
                now = monotonic()
                if durable != last_durable or journal.lingering:   # lingering: not starved
                    last_durable, stalled_since = durable, now
                elif busy and now - stalled_since > FLUSHER_STALL_S and \
                        engine.state.txid > durable:
                    self._let_flusher_run(durable)
                    stalled_since = monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick = now + TICK_S
                if not busy:
                    for what, _ in poll(max(0.0, (next_tick - now) * 1000)):
                        if what == wake_r:
                            self._on_wake()
        except Exception:
            log.exception("epoch %d: the event loop failed; shutting down", self.epoch)
            self._shutdown()
            return 1
        return self._shutdown()

    def _let_flusher_run(self, durable: int) -> None:
        """Block until the journal flusher reports progress, or FLUSHER_YIELD_S."""
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        self._wake_pending = False
        if self.engine.journal.durable_txid == durable:
            select.select([self._wake_r], [], [], FLUSHER_YIELD_S)

    def _drain(self) -> int:
        """Read every ready request (up to MAX_DRAIN), then send all their replies; return
        how many messages were read."""
        router = self.router
        recv = router.recv
        handle = self.handlers.handle
        # with CURVE or the audit log, each request is handled with its connection's key
        secured = self.security is not None
        audit = self.audit is not None
        who = secured or audit
        peers = self.peers
        out = []
        append = out.append
        monotonic = time.monotonic
        t0 = monotonic()
        drain = Drain(t0)
        until = t0 + DRAIN_BUDGET_S
        n = 0
        while n < MAX_DRAIN and monotonic() < until:
            try:
                ident = recv(_NOBLOCK)
            except zmq.Again:
                break
            n += 1
            frame = recv(copy=False)
            peers[ident] = t0
            if frame.more:
                append((ident, self._multi_frame(frame)))
                continue
            if who:
                reply = handle(ident, frame.bytes, drain,
                               frame.get("User-Id") if secured else None,
                               frame.get("Peer-Address") if audit else "")
            else:
                reply = handle(ident, frame.bytes, drain)
            if reply is not None:
                append((ident, reply))
        if n:
            self._send_all(out)
            # The handlers appended without waking the flusher: woken earlier, it would take
            # the GIL between the appends and the replies and delay every reply of the drain.
            # A reply parked until its records are durable urges them past the flush interval.
            self.engine.journal.wake(self.handlers.durability_wanted())
            if self.engine.changes is not None:
                self.engine.changes.settle()
            self.stats.add_batch(drain.ops, time.monotonic() - t0)
            self.drains += 1
            self.drained += n
            self.stream.drain_ended()
        return n

    def _multi_frame(self, first: zmq.Frame) -> bytes:
        frames = 1
        size = len(first)
        while self.router.getsockopt(zmq.RCVMORE):
            size += len(self.router.recv())
            frames += 1
        return self.handlers.error(0, ErrorCode.BAD_REQUEST,
                                   f"a request must be one frame; got {frames} frames "
                                   f"({size} bytes)")

    def _send_all(self, out: list[tuple[bytes, bytes]]) -> None:
        send = self.router.send
        try:
            for ident, reply in out:
                send(ident, _SNDMORE)
                send(reply)
        except zmq.ZMQError as exc:   # never expected with ROUTER_MANDATORY off; not fatal
            self.stats.dropped += 1
            log.warning("epoch %d: a reply could not be sent: %s", self.epoch, exc)

    def _on_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        self._wake_pending = False      # cleared before reading durable_txid: no lost wake-up
        self._after_durable()

    def _after_durable(self) -> None:
        durable = self.engine.journal.durable_txid
        if self.handlers.parked:
            self._send_all(self.handlers.release(durable, time.monotonic()))
        if durable > self.stream.published_txid:
            self._publish(durable)

    def _publish(self, durable: int) -> None:
        """Publish the durable records up to the last drain end at or below `durable`
        (stream.py decides the batches)."""
        bodies = self.stream.publish(durable)
        if bodies is None:
            return
        if not self._cut:
            pub = self.pub
            for body in bodies:
                pub.send(TOPIC_LOG, _SNDMORE)
                pub.send(body)
        self._last_publish = time.monotonic()

    def _heartbeat(self) -> None:
        body = self.stream.heartbeat(int(time.time() * 1000))
        if not self._cut:
            self.pub.send(TOPIC_HEARTBEAT, _SNDMORE)
            self.pub.send(body)
        self._last_publish = time.monotonic()

    def _tick(self, now: float) -> None:
        if self._pub_unbound:
            try:
                self.pub.bind(self.pub_endpoint)
                self._pub_unbound = False
            except zmq.ZMQError as exc:      # the port is not released yet: next tick
                log.info("epoch %d: the log stream is not bound again yet: %s", self.epoch,
                         exc)
        if self._reload_requested:
            self._reload_requested = False
            try:
                self.reload_principals()
            except errors.ConfigError:
                pass                    # logged; the principals in force stay
        if self.audit is not None:
            self.audit.flush()
        if self._cut_file is not None:
            cut = self._cut = os.path.exists(self._cut_file)
            self.handlers.cut_off(CUT_OPS if cut else frozenset())
        if now - self._last_publish >= self.config.heartbeat_interval_s:
            self._heartbeat()
        if self.handlers.parked and self.engine.journal.failure is not None:
            self._send_all(self.handlers.fail_parked())
        if self.handlers.parked_replicated:
            self._send_all(self.handlers.expire_replicated(now, REPLICATED_TIMEOUT_S))
        # watches whose wait is over; leases past their deadline revoked; workers silent past
        # worker_timeout_s lost
        replies, revoked = self.handlers.coord.tick(now)
        self._send_all(replies)
        if self.handlers.jobs.expire(now) or revoked:
            self.engine.journal.wake()
        if now >= self._next_rate:
            self._next_rate = now + 1.0
            self.uploads.expire()
            self.stats.sample_rate(now)
            horizon = now - PEER_WINDOW_S
            peers = self.peers
            if len(peers) > 10_000 or any(t < horizon for t in peers.values()):
                self.peers = {p: t for p, t in peers.items() if t >= horizon}
            if self.metrics is not None:
                self.stats.publish(self.status(), self.fsync_io)

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return master_status(self)

    # --- stop --------------------------------------------------------------------------------

    def _shutdown(self) -> int:
        """Stop taking requests, make everything durable, answer and publish what that
        covers, close. Returns 0, or 1 when the journal could not save everything."""
        code = 0
        handlers = self.handlers
        if handlers is not None and self.router is not None:
            handlers.stop_taking_requests()
            try:
                self._drain()           # requests already queued get `shutting_down`
            except zmq.ZMQError:
                pass
        if self.uploads is not None:
            self.uploads.close()        # an install in progress finishes first
            if self.router is not None:
                try:
                    self._send_all(self.uploads.finished())
                except zmq.ZMQError:
                    pass
        if self.engine is not None:
            try:
                self.engine.close()
            except errors.MwclusterError as exc:
                log.error("epoch %d: the journal could not save everything at stop: %s",
                          self.epoch, exc)
                code = 1
            if handlers is not None and self.router is not None:
                try:
                    self._after_durable()
                    # replicated replies the standby did not confirm: not left waiting
                    self._send_all(handlers.expire_replicated(float("inf"), 0.0))
                    if code:       # what the journal could not save is lost: say so
                        self._send_all(handlers.fail_parked(
                            "the master stopped before the journal could save it"))
                    self._heartbeat()
                except zmq.ZMQError:
                    pass
        log.info("epoch %d: stopped at txid %d (durable %d)", self.epoch,
                 self.engine.state.txid if self.engine else 0,
                 self.engine.journal.durable_txid if self.engine else 0)
        self.close(linger_ms=self.config.shutdown_linger_ms)
        return code

    def close(self, linger_ms: int = 0) -> None:
        """Release everything (idempotent). Closing the engine drains and fsyncs the journal;
        _shutdown does that first so that it can still answer and publish what it saved."""
        if self._closed:
            return
        self._closed = True
        if self.uploads is not None:
            self.uploads.close()
        if self.engine is not None and not self.engine.journal.closed:
            try:
                self.engine.close()
            except errors.MwclusterError as exc:
                log.error("epoch %d: %s", self.epoch, exc)
        for sock in (self.router, self.pub):
            if sock is not None:
                sock.setsockopt(zmq.LINGER, linger_ms)
                sock.close()
        for part, end in ((self.security, "stop"), (self.audit, "close"), (self._ctx, "term"),
                          (self.metrics, "close")):
            if part is not None:
                getattr(part, end)()
        if self.config.ready_file and self.client_endpoint:
            Path(self.config.ready_file).unlink(missing_ok=True)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self._lock_fd is not None:
            os.close(self._lock_fd)     # releases the flock
            self._lock_fd = None
