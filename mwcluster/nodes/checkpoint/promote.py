"""Promotion: the checkpoint node (the standby) becomes the master, from its replica.

Run on the node's loop when core/failover.py's StandbyMachine says Promote (the operator's
PROMOTE, or an automatic promotion after a vote). In order:

 1. persist the new epoch in the promoted master's data directory (`promote_data_dir`,
    default DATA_DIR/master): from here on this node holds it, a crash included;
 2. fence the old master: a PING carrying the new epoch (if it is reachable, it stops taking
    requests at once, and its fence is persisted);
 3. take every record the old master has: FETCH from the replica's txid until the replica
    reaches the old master's applied txid (read from its STATUS once fenced), within a
    deadline; if the old master is unreachable, the replica keeps what it has, and the
    records it lacks are counted against the last durable txid the old master announced;
 4. write a snapshot of the replica at its txid T, with its table of recent requests, into
    that directory (an existing journal and snapshots there, from an earlier role, are moved
    aside, not deleted);
 5. open the existing Master (nodes/master/node.py) on it, under the new epoch, bound to
    `promote_client_endpoint` and `promote_pub_endpoint`: it recovers from that snapshot
    like after any restart (so it, and any later restart of it, answers a retry of a
    request the replica's records carry); the node's process then runs that Master's loop
    (in-process, after the node closes its own sockets; cli/checkpoint.py).

The returned report is the PROMOTE reply: the epoch, T, whether the old master was fenced,
and `records_missing`, the records the old master had (applied, or announced durable when
it could not be asked) that this node did not receive.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from mwcluster import errors
from mwcluster.config import CheckpointConfig, load_master_config
from mwcluster.core.failover import Promote, promoted_durability
from mwcluster.core.recent import RecentRequests
from mwcluster.core.records import decode_payload
from mwcluster.core.state import State
from mwcluster.nodes.checkpoint.link import MasterLink
from mwcluster.storage import epoch as epochs
from mwcluster.storage import snapshot as snapshots
from mwcluster.wire.protocol import Op

log = logging.getLogger(__name__)

QUICK_PING_S = 0.5     # how long a silent old master is given to answer the fencing PING


def master_dir(config: CheckpointConfig) -> Path:
    return Path(config.promote_data_dir or Path(config.data_dir) / "master")


def highest_epoch_on_disk(config: CheckpointConfig) -> int:
    """The epoch this node may already have taken (a promotion that crashed half-way)."""
    return epochs.read_epoch(master_dir(config))


def fence_and_catch_up(link: MasterLink, state: State, new_epoch: int, announced: int,
                       deadline_s: float, recent: RecentRequests | None = None
                       ) -> dict[str, Any]:
    """Steps 2 and 3. Applies the records fetched to `state`; returns what was learnt."""
    link.epoch_seen = new_epoch
    out: dict[str, Any] = {"old_master_fenced": False, "old_master_txid": None,
                           "old_master_durability": None, "fetched_records": 0}
    deadline = time.monotonic() + deadline_s
    try:
        link.call(Op.PING, [])           # carries the new epoch: the old master is fenced
        status = link.call(Op.STATUS, [])
        out["old_master_fenced"] = bool(status.get("fenced"))
        out["old_master_durability"] = status.get("durability")
        target = int(status.get("txid", 0))
        out["old_master_txid"] = target
        while state.txid < target and time.monotonic() < deadline:
            durable, records = link.fetch(state.txid + 1, 4 << 20)
            for txid, _epoch, payload in records:
                if txid != state.txid + 1:
                    continue
                rec, origin = decode_payload(payload)
                result = state.apply(txid, rec)
                if recent is not None and origin is not None:
                    recent.remember(origin, txid, result)
                out["fetched_records"] += 1
            if not records:
                # applied but not yet durable there: its flusher is still writing them
                if durable >= target:
                    break
                target = int(link.call(Op.STATUS, []).get("txid", target))
    except errors.MwclusterError as exc:
        out["old_master_error"] = str(exc)
        log.warning("epoch %d: the old master could not be fenced or asked for its last "
                    "records (%s); the replica keeps what it has", new_epoch, exc)
    known = out["old_master_txid"] if out["old_master_txid"] is not None else announced
    out["records_missing"] = max(0, (known or 0) - state.txid)
    return out


def write_master_dir(config: CheckpointConfig, state: State, recent: RecentRequests,
                     new_epoch: int) -> Path:
    """Step 4: a master data directory holding a snapshot of the replica at its txid, with
    the replica's recent requests."""
    directory = master_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = f"before-epoch-{new_epoch}"
    for name in ("journal", "snapshots"):
        old = directory / name
        if old.exists():
            aside = directory / f"{name}.{stamp}"
            os.replace(old, aside)
            log.warning("moved %s aside to %s (an earlier role's files, kept)", old, aside)
    if state.txid:
        snapshots.write_snapshot(directory / "snapshots", state.txid, new_epoch, state.digest,
                                 state.image_chunks(recent), int(time.time() * 1000))
    return directory


def master_config(config: CheckpointConfig, directory: Path, durability: str):
    """The promoted Master's configuration: MWCLUSTER_* variables and defaults, with this
    node's promote endpoints and data directory and the durability decided."""
    return load_master_config(None, flags={
        "data_dir": str(directory), "client_endpoint": config.promote_client_endpoint,
        "pub_endpoint": config.promote_pub_endpoint, "durability": durability,
        "ready_file": config.ready_file or None,
        # it serves with the node's keys and principals (the cluster's server key)
        "key_file": config.key_file or None, "server_key": config.server_key or None,
        "principals_dir": config.principals_dir or None,
        "insecure": config.insecure or None,
        "audit_log": config.audit_log or None})


PEER_FENCE_S = 1.0


def start_peer_fencer(endpoint: str, epoch: int, credentials=None) -> threading.Thread:
    """A daemon thread of the promoted process that sends the old master a PING carrying the
    new epoch every PEER_FENCE_S, without waiting for answers: an old master cut off at the
    promotion is fenced as soon as the network lets one through, even if no client ever
    reaches it. It lives as long as the process."""
    import zmq

    from mwcluster.wire.protocol import encode_request

    def run() -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1)      # a PING waiting is enough: the next replaces it
        if credentials is not None:         # security.curve.Credentials: the node's own
            credentials.apply(sock)
        sock.connect(endpoint)
        client_id = os.urandom(16)
        pause = threading.Event()
        while True:
            try:
                while sock.poll(0):
                    sock.recv(zmq.NOBLOCK)  # answers are not needed
                sock.send(encode_request(client_id, 0, Op.PING, [], 0, epoch), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass                         # queue full (the old master is away): next time
            pause.wait(PEER_FENCE_S)

    thread = threading.Thread(target=run, name="peer-fencer", daemon=True)
    thread.start()
    return thread


def promote_node(node, decision: Promote) -> dict[str, Any]:
    """Steps 1 to 5 on a CheckpointNode (nodes/checkpoint/node.py), on its loop; the report.
    The node's loop stops after this; its process then runs `node.promoted_master`."""
    from mwcluster.nodes.master.node import Master

    if node.promotion is not None:
        return node.promotion
    cfg = node.config
    started = time.monotonic()
    epoch = decision.epoch
    directory = master_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    epochs.write_epoch(directory, epoch)        # from here on this node holds the epoch
    log.warning("epoch %d: PROMOTING this node to master (%s) from its replica at txid %d",
                epoch, decision.reason, node.state.txid)
    if node.child is not None:                  # a checkpoint in progress: not needed now
        node.child.kill()
        node.child = None
    announced = node.machine.durable
    if node.standby.silent_for(time.monotonic()) >= cfg.failover_timeout_s:
        # silent for the failover timeout already: one short try, not a full request timeout
        node.link.timeout_s = min(node.link.timeout_s, QUICK_PING_S)
    report = fence_and_catch_up(node.link, node.state, epoch, announced,
                                max(5.0, 2 * cfg.request_timeout_s), node.recent)
    write_master_dir(cfg, node.state, node.recent, epoch)
    durability = promoted_durability(cfg.promote_durability, report["old_master_durability"])
    master = Master(master_config(cfg, directory, durability), epoch=epoch)
    master.open()
    # watchers resume on the new master from the txids they saw: the replica's changes
    report["watch_changes_adopted"] = master.engine.adopt_changes(node.replica.changes,
                                                                  node.state.txid)
    # retries of requests the old master applied are answered, not applied again: the
    # master recovered the replica's table from the snapshot just written
    report["recent_requests_adopted"] = len(master.engine.recent_requests)
    start_peer_fencer(cfg.master, epoch,
                      node.security.credentials() if node.security else None)
    node.promoted_master = master
    node.request_stop()
    report.update({
        "promoted": True, "epoch": epoch, "durability": durability,
        "txid": master.engine.state.txid,
        "digest": master.engine.state.digest, "old_master_durable_announced": announced,
        "client": master.client_endpoint, "pub": master.pub_endpoint,
        "data_dir": str(directory), "reason": decision.reason,
        "seconds": round(time.monotonic() - started, 3)})
    node.promotion = report
    log.warning("epoch %d: serving as master on %s (log stream %s) from txid %d; records the "
                "old master had that this node did not receive: %d", epoch,
                master.client_endpoint, master.pub_endpoint, report["txid"],
                report["records_missing"])
    return report
