"""The master's STATUS map, built from the running Master's parts (nodes/master/node.py); kept
apart so the event loop module stays small. Called on the loop thread."""

from __future__ import annotations

import os
import time
from typing import Any

from mwcluster import errors
from mwcluster.nodes.master.stats import PEER_WINDOW_S
from mwcluster.storage import snapshot as snapshots
from mwcluster.security.curve import security_status
from mwcluster.storage.segments import list_segments
from mwcluster.wire.protocol import ErrorCode


def master_status(master) -> dict[str, Any]:
    """The STATUS map of a running Master (docs/protocol.md, "Status")."""
    engine = master.engine
    js = engine.journal.stats()
    now = time.monotonic()
    snap_txid, snap_age = 0, None
    for _txid, path in snapshots.list_snapshots(engine.snapshot_dir):
        try:
            header = snapshots.read_header(path)
        except errors.MwclusterError:
            continue
        snap_txid = header.txid
        snap_age = round(max(0.0, time.time() - header.created_ms / 1000), 3)
        break
    p50, p99 = master.fsync_io.percentiles_ms()
    losses = sorted(js.loss_window_samples)
    since_records, since_bytes, truncation = _since_snapshot(master, snap_txid, snap_age)
    state = engine.state
    horizon = now - PEER_WINDOW_S
    recovery = engine.recovery
    fence = master.handlers.fence
    return {
        "role": "fenced" if fence.fenced else "master", "fenced": fence.fenced,
        "fenced_by": fence.fenced_by, "client_endpoint": master.client_endpoint,
        "pub_endpoint": master.pub_endpoint,
        "epoch": master.epoch, "txid": state.txid, "durable_txid": js.durable_txid,
        "digest": state.digest, "published_txid": master.stream.published_txid,
        "loss_window_s": round(js.oldest_unflushed_age_s, 6),
        "loss_window_p99_s": (round(losses[min(len(losses) - 1, int(len(losses) * 0.99))], 6)
                              if losses else None),
        "buffered_bytes": js.buffered_bytes, "journal_bytes": js.journal_bytes,
        "journal_segments": js.segments, "first_txid": engine.journal.first_txid,
        "last_snapshot_txid": snap_txid, "last_snapshot_age_s": snap_age,
        "records_since_snapshot": since_records,
        "journal_bytes_since_snapshot": since_bytes, "journal_truncation": truncation,
        "requests_per_s": master.stats.requests_per_s(),
        "requests_total": master.stats.requests_total,
        "messages_total": master.drained,
        "batch_messages_total": master.handlers.batches if master.handlers else 0,
        "messages_per_drain": round(master.drained / master.drains, 2) if master.drains else 0.0,
        "errors_total": sum(master.stats.errors_by_code.values()),
        "dropped_messages": master.stats.dropped, "retried_requests": master.stats.retries,
        "parked_sync_replies": len(master.handlers.parked) if master.handlers else 0,
        "parked_replicated_replies": len(master.handlers.parked_replicated),
        "replica_txid": master.handlers.replica_txid,
        "replica_acks": master.handlers.replica_acks,
        # whether `replicated` requests are taken (a checkpoint node heard lately), and how
        # far behind it is
        "standby_follows": master.handlers.standby_follows(now),
        "standby_heard_age_s": (round(now - master.handlers.standby_heard_at, 3)
                                if master.handlers.standby_heard_at > float("-inf") else None),
        "standby_lag_txids": max(0, state.txid - master.handlers.replica_txid),
        "uptime_s": round(now - master.serving_since, 3),
        "recovery_s": round(recovery.seconds, 6) if recovery else None,
        "recovery": recovery.to_dict() if recovery else None,
        "peers": sum(1 for t in list(master.peers.values()) if t >= horizon),
        "durability": master.config.durability,
        "fsyncs": js.fsyncs, "fsync_p50_ms": p50, "fsync_p99_ms": p99,
        "slow_fsyncs": master.fsync_io.slow,
        "flush_interval_ms": master.config.flush_interval_ms,
        "coordination": master.handlers.coord.status(),
        "keys": len(state.ns), "jobs": len(state.jobs.jobs),
        "workers": len(state.jobs.workers), **master.handlers.jobs.status(),
        "journal_failed": js.failed, "last_error": js.last_error,
        "pid": os.getpid(), "cpu_s": round(time.process_time(), 3),
        **(master.uploads.status() if master.uploads else {}),
        "security": security_status(master.security, master.insecure_warning,
                                    master.stats.errors_by_code.get(ErrorCode.UNAUTHORIZED, 0),
                                    master.audit.path if master.audit else None,
                                    master.audit.lost if master.audit else 0),
    }


def _since_snapshot(master, snap_txid: int, snap_age: float | None) -> tuple[int, int, str]:
    """Records and journal bytes after the newest snapshot, and why the journal is (not)
    being truncated, for operators watching it grow."""
    journal = master.engine.journal
    records = max(0, journal.last_txid - snap_txid)
    size = 0
    for first, path in list_segments(journal.directory):
        if first > snap_txid:
            try:
                size += path.stat().st_size
            except OSError:
                pass
    if not snap_txid:
        why = ("no snapshot yet: nothing truncates the journal until a checkpoint node "
               "uploads one (run `mwcluster checkpoint`, or `mwcluster checkpoint --once` "
               "from cron)")
    else:
        why = (f"segments covered by the oldest kept snapshot are deleted at each upload; "
               f"the newest snapshot (txid {snap_txid}) is {snap_age:.0f} s old and "
               f"{records} records wait for the next checkpoint")
    return records, size, why

