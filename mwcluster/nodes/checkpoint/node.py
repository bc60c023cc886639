"""The checkpoint node: a live replica of the master from its log stream, and snapshots of it
written off the master's hot path.

    open():  lock DATA_DIR -> remove temporary files left by a crash -> SUB to the master's
             PUB (b"L", b"H"; no high-water mark: ZeroMQ queues, the loop drains) -> DEALER
             to its ROUTER (nodes/checkpoint/link.py) -> status ROUTER -> load the newest local
             snapshot that verifies -> Start the decision machine -> ready file
    run():   poll [SUB, status ROUTER, wake pipe, checkpoint child's pidfd], at most TICK_S
               SUB readable: decode up to MAX_DRAIN messages, feed each to the machine
               status ROUTER readable: answer STATUS / PING
               child exited: CheckpointDone / CheckpointFailed, prune, then the upload seam
               every TICK_S: Tick (silence, retries, checkpoint period)
               every HELLO_S: CHECKPOINT_HELLO to the master (fire and forget), so that the
                 master's STATUS names this node's status endpoint
             until request_stop(); then kill a running checkpoint child (its temporary file
             is removed), close the sockets, release the lock.

All decisions are in core/follower.py (`Follower`): this module only turns socket messages
into its events (executor.stream_event) and hands them to the socket-free executor of its
instructions (executor.ReplicaExecutor, which owns the replica: every instruction of one event
before the next event; records applied through `State.apply`, the same path as the master's).
This module is that executor's two ports: the link to the master (link.py) and the
checkpoints, written by a forked child (writer.py) while this loop keeps applying.

Upload: after a local checkpoint succeeds, and at start for the newest local snapshot (it
may not have reached the master before a crash), `_upload(header)` hands the file to the
uploader (nodes/checkpoint/upload.py), a small thread with its own DEALER that sends it to the
master (BEGIN, chunks with credit, END; retried from BEGIN with backoff). With `--once` the node
waits for the upload before it exits (a few attempts only).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import zmq

from mwcluster import errors
from mwcluster.config import CheckpointConfig
from mwcluster.core import failover as fo
from mwcluster.core import follower as fm
from mwcluster.core.recent import RecentRequests
from mwcluster.core.state import State
from mwcluster.nodes.checkpoint.executor import ReplicaExecutor, load_local, stream_event
from mwcluster.nodes.checkpoint.link import MasterLink
from mwcluster.nodes.checkpoint.reads import StandbyReads
from mwcluster.nodes.master.audit import AuditLog
from mwcluster.nodes.status_endpoint import StatusEndpoint
from mwcluster.security.curve import ServerSecurity, protect, security_status
from mwcluster.nodes.checkpoint.upload import Uploader
from mwcluster.nodes.checkpoint.writer import ForkedCheckpoint, Outcome, set_aside_snapshots
from mwcluster.storage import snapshot as snapshots
from mwcluster.storage.fsutil import lock_data_dir, write_file_atomic
from mwcluster.wire.protocol import TOPIC_HEARTBEAT, TOPIC_LOG, Op

log = logging.getLogger(__name__)


TICK_S = 0.1
HELLO_S = 2.0
MAX_DRAIN = 1024          # stream messages read before the other sockets are looked at


class CheckpointNode:
    def __init__(self, config: CheckpointConfig, *, once: bool = False) -> None:
        self.config = config
        self.once = once
        self.data_dir = Path(config.data_dir)
        self.snapshot_dir = self.data_dir / "snapshots"
        self.incoming_dir = self.data_dir / "incoming"
        machine = fm.Follower(fm.FollowerConfig(
            heartbeat_interval_s=config.heartbeat_interval_s, period_s=config.period_s,
            txns=config.txns, max_buffer_bytes=config.max_buffer_bytes))
        # the replica and the executor of the machine's instructions; its ports are the link
        # (connected at open) and this node's checkpoint methods
        self.replica = ReplicaExecutor(
            machine, self, incoming_dir=self.incoming_dir,
            recent_requests=config.recent_requests, fetch_max_bytes=config.fetch_max_bytes,
            snapshot_chunk_bytes=config.snapshot_chunk_bytes,
            snapshot_credit=config.snapshot_credit, clock=time.monotonic)
        self.status_endpoint = ""
        self.exit_code = 0
        self.started = time.monotonic()
        self.child: ForkedCheckpoint | None = None
        self.last_checkpoint: dict[str, Any] | None = None
        self.checkpoint_failures = 0
        self.last_checkpoint_failure: str | None = None
        self.stream_messages = 0
        self.bad_messages = 0
        self.local_start: dict[str, Any] | None = None
        self._ctx: zmq.Context | None = None
        self.sub: zmq.Socket | None = None
        self.status_server: StatusEndpoint | None = None
        self.link: MasterLink | None = None
        self.uploader: Uploader | None = None
        self._lock_fd: int | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop_requested = False
        self._closed = False
        self.metrics = None                  # MetricsServer, with metrics_port
        self._collector = None
        self._next_metrics = 0.0
        self._next_hello = 0.0
        # failover (core/failover.py, nodes/checkpoint/promote.py): this node is the standby
        self.standby = fo.StandbyMachine(
            fo.FailoverConfig(fo.Mode(config.failover), config.failover_timeout_s,
                              config.failover_timeout_s), time.monotonic())
        self.promoted_master = None          # the Master it serves as, once promoted
        self._acked_txid = 0                 # the replica txid last reported (REPLICA_ACK)
        self.promotion: dict[str, Any] | None = None
        self.reads = StandbyReads()          # STANDBY_READ, served from the replica
        self.security: ServerSecurity | None = None   # CURVE (security/curve.py)
        self.insecure_warning: str | None = None

    # --- start ---------------------------------------------------------------------------

    def open(self) -> CheckpointNode:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        cfg = self.config
        self._lock_data_dir()
        from mwcluster.nodes.checkpoint.promote import highest_epoch_on_disk
        self.standby.saw_epoch(highest_epoch_on_disk(cfg))
        for leftover in snapshots.clean_temp(self.snapshot_dir):
            log.warning("removed %s, left by a crash during a checkpoint", leftover)
        if self.incoming_dir.is_dir():
            for leftover in self.incoming_dir.glob("*.part"):
                leftover.unlink(missing_ok=True)
        self.security = ServerSecurity.from_config(cfg.key_file, cfg.principals_dir,
                                                   cfg.server_key)
        # its promote endpoints too: checked now, not once a promotion has fenced the master
        self.insecure_warning = protect(
            [cfg.status_endpoint, cfg.promote_client_endpoint, cfg.promote_pub_endpoint],
            self.security is not None, cfg.insecure, "checkpoint node")
        if self.insecure_warning:
            log.warning(self.insecure_warning)
        creds = self.security.credentials() if self.security else None
        self._ctx = ctx = zmq.Context()
        sub = self.sub = ctx.socket(zmq.SUB)       # subscribe first (the Clone pattern)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        if creds is not None:
            creds.apply(sub)
        sub.setsockopt(zmq.SUBSCRIBE, TOPIC_LOG)
        sub.setsockopt(zmq.SUBSCRIBE, TOPIC_HEARTBEAT)
        self._connect(sub, cfg.subscribe, "subscribe")
        self.link = self.replica.link = MasterLink(ctx, cfg.master, cfg.request_timeout_s,
                                                   creds)
        self.uploader = Uploader(ctx, cfg.master, cfg.request_timeout_s,
                                 bytes_per_s=cfg.upload_bytes_per_s, credentials=creds,
                                 **({"attempts": 4, "backoff_max_s": 2.0} if self.once else {}))
        if cfg.status_endpoint:
            self.status_server = StatusEndpoint(
                ctx, cfg.status_endpoint, security=self.security,
                audit=AuditLog(cfg.audit_log) if cfg.audit_log else None)
            self.status_endpoint = self.status_server.endpoint
            self.uploader.status_endpoint = self.status_endpoint
        if cfg.metrics_port:
            from mwcluster.nodes.checkpoint.metrics import CheckpointCollector
            from mwcluster.nodes.metrics import MetricsServer

            self._collector = CheckpointCollector()
            self.metrics = MetricsServer(self._collector, cfg.metrics_host, cfg.metrics_port)
        base = self._load_local()
        if base is not None and not self.once:
            # it may never have reached the master (the node died before or during its
            # upload); the master answers "have" when it already keeps it
            self._upload(snapshots.read_header(Path(self.local_start["path"])))
        if self.once:
            self.replica.feed(fm.CheckpointRequested(time.monotonic()))
        self.replica.feed(fm.Start(time.monotonic(), base))
        if cfg.ready_file:
            write_file_atomic(cfg.ready_file, json.dumps(
                {"status": self.status_endpoint, "pid": os.getpid(),
                 "data_dir": str(self.data_dir),
                 "metrics_port": self.metrics.port if self.metrics else None}).encode(),
                durable=False)
        log.info("following %s (log stream %s) %s; checkpoints every %g s or %d records in "
                 "%s", cfg.master, cfg.subscribe, "with no local snapshot" if base is None
                 else f"from the local snapshot at txid {base}", cfg.period_s, cfg.txns,
                 self.snapshot_dir)

    def _connect(self, sock: zmq.Socket, endpoint: str, what: str) -> None:
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise errors.MwclusterError(f"cannot connect the {what} socket to {endpoint}: "
                                        f"{exc}") from None

    def _lock_data_dir(self) -> None:
        self._lock_fd = lock_data_dir(self.data_dir, "process")

    def _load_local(self) -> int | None:
        """Load the newest local snapshot that verifies (with its recent requests); its
        txid, or None."""
        started = time.monotonic()
        found = load_local(self.snapshot_dir, self.config.recent_requests)
        if found is None:
            return None
        state, recent, path = found
        self.replica.replace(state, recent)
        self.local_start = {"path": str(path), "txid": state.txid,
                            "seconds": round(time.monotonic() - started, 6)}
        gc.freeze()
        return state.txid

    # --- the loop ------------------------------------------------------------------------

    def reload_principals(self) -> None:
        """SIGHUP: read the principals directory again (a bad one keeps those in force)."""
        if self.security is None:
            return
        try:
            log.info("principals reloaded: %d allowed", self.security.reload())
        except errors.ConfigError as exc:
            log.error("the principals were not reloaded (those in force stay): %s", exc)

    def request_stop(self) -> None:
        """Ask the loop to stop (thread-safe, and safe in a signal handler)."""
        self._stop_requested = True
        if not self._closed:
            try:
                os.write(self._wake_w, b"\x01")
            except OSError:
                pass

    def run(self) -> int:
        """Follow and checkpoint until request_stop() (or, with once, the first checkpoint).
        Returns the process exit code."""
        sub = self.sub
        try:
            next_tick = time.monotonic()
            while not self._stop_requested:
                poller = zmq.Poller()
                poller.register(sub, zmq.POLLIN)
                poller.register(self._wake_r, zmq.POLLIN)
                status_sock = self.status_server.sock if self.status_server else None
                if status_sock is not None:
                    poller.register(status_sock, zmq.POLLIN)
                child = self.child
                if child is not None and child.pidfd is not None:
                    poller.register(child.pidfd, zmq.POLLIN)
                now = time.monotonic()
                ready = dict(poller.poll(max(0.0, (next_tick - now) * 1000)))
                if sub in ready:
                    self._drain_stream()
                if self.state.txid != self._acked_txid:
                    self._ack_replica()
                    self._answer_reads(time.monotonic())
                if status_sock is not None and status_sock in ready:
                    self.status_server.answer(self.status, self.machine.epoch or 0,
                                              {Op.PROMOTE: self._on_promote,
                                               Op.VOTE: self._on_vote},
                                              {Op.STANDBY_READ: self._on_read})
                    if self.promoted_master is not None:
                        break               # promoted: the master's loop takes over now
                if self._wake_r in ready:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                if self.child is not None:
                    self._reap()
                now = time.monotonic()
                if now >= next_tick:
                    self._failover_tick(now)
                    if self.promoted_master is not None:
                        break
                    self.replica.feed(fm.Tick(now))
                    self._answer_reads(now)
                    next_tick = now + TICK_S
                    if now >= self._next_hello:
                        self._hello()
                        self._next_hello = now + HELLO_S
                    if self._collector is not None and now >= self._next_metrics:
                        self._collector.status = self.status()
                        self._next_metrics = now + 1.0
        except Exception:
            log.exception("epoch %s: the checkpoint loop failed at txid %d; stopping",
                          self.machine.epoch, self.state.txid)
            self.exit_code = 1
        self.close()
        return self.exit_code

    def _on_read(self, ident: bytes, req) -> bytes | None:
        return self.reads.handle(ident, req, self.state, self.machine.epoch or 0,
                                 time.monotonic())

    def _answer_reads(self, now: float) -> None:
        """Send the standby reads the replica now covers, or whose wait is over."""
        if self.reads and self.status_server is not None:
            for ident, reply in self.reads.due(self.state, self.machine.epoch or 0, now):
                self.status_server.send(ident, reply)

    def _ack_replica(self) -> None:
        """Tell the master how far the replica is (it releases `replicated` replies up to
        there): one message per loop iteration that applied something, not waited for."""
        self._acked_txid = self.state.txid
        self.link.notify(Op.REPLICA_ACK, [self.state.txid])

    def _hello(self) -> None:
        # the highest epoch this node has seen travels with it: a master below it is fenced
        self.link.epoch_seen = self.standby.highest_epoch
        last = self.last_checkpoint
        self.link.notify(Op.CHECKPOINT_HELLO, [self.status_endpoint or None, self.state.txid,
                                               last["txid"] if last else None])

    def _drain_stream(self) -> None:
        sub = self.sub
        for _ in range(MAX_DRAIN):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.monotonic()
            self.stream_messages += 1
            try:
                event = stream_event(frames, now)
                if self.standby.silent_for(now) > HELLO_S:
                    # the master is back (restarted, or the network healed): say hello now,
                    # so that it knows at once that a standby follows it and how far
                    self._next_hello = 0.0
                self.standby.saw_master(now, event.epoch)
            except (errors.MwclusterError, ValueError, TypeError) as exc:
                self.bad_messages += 1
                log.warning("a log-stream message could not be read (%s); the gap it leaves "
                            "is fetched", exc)
                continue
            self.replica.feed(event)

    # --- the replica ------------------------------------------------------------------------

    @property
    def machine(self) -> fm.Follower:
        return self.replica.machine

    @property
    def state(self) -> State:
        return self.replica.state

    @property
    def recent(self) -> RecentRequests:
        return self.replica.recent
    # --- checkpoints -----------------------------------------------------------------------

    def set_aside(self, ins: fm.SetAsideSnapshots) -> fm.Event | None:
        """Rename local snapshots above the last verified txid to `.diverged` (kept for
        inspection, never loaded), and abandon a checkpoint of the diverged replica."""
        set_aside_snapshots(self.snapshot_dir, ins.after_txid, ins.reason)
        child = self.child
        if child is not None and child.txid > ins.after_txid:
            self.child = None
            child.kill()
            self.checkpoint_failures += 1
            self.last_checkpoint_failure = f"abandoned: {ins.reason}"
            return fm.CheckpointFailed(time.monotonic(), f"abandoned: {ins.reason}")
        return None

    def start_checkpoint(self, ins: fm.Checkpoint) -> fm.Event | None:
        if self.state.txid != ins.txid:
            return fm.CheckpointFailed(time.monotonic(), f"internal: the replica is at "
                                       f"{self.state.txid}, not {ins.txid}")
        try:
            self.child = ForkedCheckpoint(self.state, self.recent, self.snapshot_dir, ins.epoch,
                                          int(time.time() * 1000))
        except OSError as exc:
            return fm.CheckpointFailed(time.monotonic(), f"cannot start the checkpoint "
                                                         f"process: {exc}")
        log.info("epoch %d: checkpoint of txid %d started (pid %d)", ins.epoch, ins.txid,
                 self.child.pid)
        return None

    def _reap(self) -> None:
        outcome = self.child.poll()
        if outcome is None:
            return
        self.child = None
        self._checkpoint_finished(outcome)

    def _checkpoint_finished(self, outcome: Outcome) -> None:
        now = time.monotonic()
        if not outcome.ok:
            self.checkpoint_failures += 1
            self.last_checkpoint_failure = outcome.reason
            snapshots.clean_temp(self.snapshot_dir)
            self.replica.feed(fm.CheckpointFailed(now, outcome.reason))
            if self.once:
                log.error("checkpoint at txid %d failed: %s", outcome.txid, outcome.reason)
                self.exit_code = 1
                self._stop_requested = True
            return
        header = outcome.header
        self.last_checkpoint = {
            "txid": header.txid, "epoch": header.epoch, "digest": header.digest,
            "path": str(header.path), "size_bytes": outcome.size_bytes,
            "duration_s": round(outcome.duration_s, 6),
            "time": header.created_ms / 1000}
        log.info("epoch %d: checkpoint of txid %d written: %d bytes in %.3f s", header.epoch,
                 header.txid, outcome.size_bytes, outcome.duration_s)
        try:
            for path in snapshots.prune(self.snapshot_dir, self.config.keep_snapshots):
                log.info("removed the old snapshot %s", path)
        except OSError as exc:
            log.warning("could not remove old snapshots in %s: %s", self.snapshot_dir, exc)
        self.replica.feed(fm.CheckpointDone(header.txid, now))
        self._upload(header)
        if self.once:
            self._stop_requested = True

    def _upload(self, header: snapshots.SnapshotHeader) -> None:
        """Send a local checkpoint to the master (on the uploader's thread)."""
        if self.uploader is not None:
            self.uploader.submit(header)

    # --- promotion (nodes/checkpoint/promote.py) ------------------------------------------------

    def _unpromotable(self) -> str | None:
        """Why this node cannot be promoted now, or None. Every epoch it has heard of counts
        first (the stream, FETCH replies): the new epoch must be above the master's."""
        standby = self.standby
        standby.saw_epoch(self.machine.epoch or 0)
        standby.saw_epoch(self.link.epoch or 0)
        cfg = self.config
        if not (cfg.promote_client_endpoint and cfg.promote_pub_endpoint):
            return ("this node cannot be promoted: set promote_client_endpoint and "
                    "promote_pub_endpoint in its configuration (conf/checkpoint.toml) and "
                    "restart it")
        if standby.highest_epoch == 0:
            return ("this node has never heard from a master (no epoch seen), so it cannot "
                    "take an epoch known to be above the master's; let it join the master "
                    "first")
        return None

    def _on_promote(self, _req) -> dict[str, Any]:
        """The operator's PROMOTE: become the master (any failover mode)."""
        why = self._unpromotable()
        if why is not None and self.promotion is None:
            raise errors.BadState(why)
        return self._promote(self.standby.promote(time.monotonic()))

    def _on_vote(self, req) -> dict[str, Any]:
        """A client or worker that cannot reach the master asks this node to serve: it
        promotes itself only as core/failover.py decides (auto mode, master silent)."""
        why = self._unpromotable()
        if why is not None and self.promotion is None:
            self.standby.saw_epoch(req.epoch_seen)
            return {"promoted": False, "reason": why}
        decision = self.standby.vote(time.monotonic(), req.epoch_seen)
        if isinstance(decision, fo.Refuse):
            return {"promoted": False, "reason": decision.reason}
        return self._promote(decision)

    def _failover_tick(self, now: float) -> None:
        if self.standby.config.mode is not fo.Mode.AUTO or self._unpromotable() is not None:
            return
        decision = self.standby.tick(now)
        if decision is None or self.promotion is not None:
            return
        try:
            self._promote(decision)
        except errors.MwclusterError as exc:
            log.error("automatic promotion failed: %s", exc)

    def _promote(self, decision: fo.Promote) -> dict[str, Any]:
        from mwcluster.nodes.checkpoint.promote import promote_node

        return promote_node(self, decision)

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        machine = self.machine
        info = machine.status(now)
        last = self.last_checkpoint
        child = self.child
        info.update({
            "role": "checkpoint", "pid": os.getpid(), "data_dir": str(self.data_dir),
            "uptime_s": round(now - self.started, 3),
            "replica_txid": self.state.txid, "replica_digest": self.state.digest,
            "keys": len(self.state.ns), "jobs": len(self.state.jobs.jobs),
            "last_checkpoint_txid": last["txid"] if last else None,
            "last_checkpoint_time": last["time"] if last else None,
            "last_checkpoint_age_s": (round(max(0.0, time.time() - last["time"]), 3)
                                      if last else None),
            "last_checkpoint_size_bytes": last["size_bytes"] if last else None,
            "last_checkpoint_duration_s": last["duration_s"] if last else None,
            "last_checkpoint": last,
            "checkpoints_total": machine.counters.checkpoints,
            "checkpoint_failures": self.checkpoint_failures,
            "last_checkpoint_failure": self.last_checkpoint_failure,
            "checkpoint_running": None if child is None else {
                "txid": child.txid, "pid": child.pid,
                "running_s": round(now - child.started, 3)},
            "local_snapshots": [t for t, _ in snapshots.list_snapshots(self.snapshot_dir)],
            "started_from": self.local_start,
            "upload": (self.uploader.status() if self.uploader else
                       {"implemented": False, "pending_txid": None}),
            "stream_messages": self.stream_messages, "bad_stream_messages": self.bad_messages,
            "period_s": self.config.period_s, "txns": self.config.txns,
            "failover": self.config.failover, "standby": self.standby.state.value,
            "highest_epoch_seen": self.standby.highest_epoch,
            "master_silent_s": round(self.standby.silent_for(now), 3),
            "votes": self.standby.votes,
            "standby_reads": {"served": self.reads.served, "waited": self.reads.waited,
                              "behind": self.reads.behind, "waiting": len(self.reads)},
            "security": security_status(self.security, self.insecure_warning,
                                        self.status_server.unauthorized
                                        if self.status_server else 0),
        })
        return info

    # --- stop --------------------------------------------------------------------------------

    def close(self) -> None:
        """Release everything (idempotent): a running checkpoint is stopped and its
        temporary file removed; the completed snapshots stay."""
        if self._closed:
            return
        self._closed = True
        if self.child is not None:
            log.info("stopping the checkpoint of txid %d in progress", self.child.txid)
            self.child.kill()
            self.child = None
        if self.uploader is not None:
            if self.once and self.exit_code == 0:
                self.uploader.wait()      # --once: the checkpoint goes to the master first
            self.uploader.close()
        if self.link is not None:
            self.link.close()
        if self.status_server is not None:
            # the PROMOTE reply was just queued: give it a moment to leave
            self.status_server.close(linger_ms=1000 if self.promoted_master else 0)
        if self.sub is not None:
            self.sub.close(linger=0)
        if self.security is not None:
            self.security.stop()
        if self._ctx is not None:
            self._ctx.term()
        if self.metrics is not None:
            self.metrics.close()
        if self.config.ready_file and self.promoted_master is None:
            Path(self.config.ready_file).unlink(missing_ok=True)   # (the master's, once promoted)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("stopped at txid %d", self.state.txid)
