"""The start of a master that has a standby peer (docs/failover.md): ask the peer first.

Before it raises its epoch, a master configured with `peer_master_endpoint` (the standby's
promote endpoint) and/or `peer_status_endpoint` (the standby's status endpoint) asks them for
their STATUS and lets core/failover.start_decision decide:

    peer serves as master under a higher epoch  -> this node was replaced: it starts fenced
                                                   (the fence file), or with
                                                   --rejoin-as-standby follows the new master
    peer is a standby, or a lower/equal master  -> serve
    peer unreachable                            -> wait and ask again (--force: serve anyway)

Rejoining (`prepare_rejoin`): the node's own journal and snapshots, whose tail may hold writes
the new master never had, are moved into `DATA_DIR/diverged-epoch-E-MS/` (kept, never read
again); the fence file stays, so this directory never serves as master again; the process
then runs a checkpoint node (the new master's standby) on the same data directory, which
loads the new master's snapshot and log.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from mwcluster import errors
from mwcluster.config import CheckpointConfig, MasterConfig, load_checkpoint_config
from mwcluster.core.failover import PeerView, StartAs, start_decision
from mwcluster.storage import epoch as epochs
from mwcluster.storage import fenced as fence_file

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 1.0
WAIT_LOG_S = 5.0


def _credentials(config: MasterConfig):
    """What this master presents to its peer with CURVE: its own key, and the server key
    (by default its own: the master and its standby share the cluster's server key)."""
    if not config.key_file:
        return None
    from mwcluster.security.curve import Credentials
    from mwcluster.security.keys import read_public, read_secret

    keypair = read_secret(config.key_file)
    server = read_public(config.server_key) if config.server_key else keypair.public
    return Credentials(keypair, server)


def _status(endpoint: str, timeout_s: float, credentials=None) -> dict | None:
    """The STATUS map at `endpoint`, or None when nothing answers in time."""
    from mwcluster.client import Client

    try:
        with Client(endpoint, timeout_s=timeout_s, retries=0,
                    credentials=credentials) as client:
            status = client.status()
    except (errors.AuthenticationFailed, errors.Unauthorized) as exc:
        log.error("start: the peer at %s refused this master: %s", endpoint, exc)
        return None
    except (errors.MwclusterError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def ask_peer(config: MasterConfig, timeout_s: float = ASK_TIMEOUT_S) -> tuple[PeerView, dict]:
    """What the peer is: a serving master (and its status), a standby, or unreachable."""
    creds = _credentials(config)
    if config.peer_master_endpoint:
        status = _status(config.peer_master_endpoint, timeout_s, creds)
        if status is not None and status.get("role") == "master":
            return PeerView("master", int(status.get("epoch", 0))), status
    if config.peer_status_endpoint:
        status = _status(config.peer_status_endpoint, timeout_s, creds)
        if status is not None:
            return PeerView("standby", int(status.get("epoch_seen") or 0)), status
    return PeerView(None), {}


def decide_start(config: MasterConfig, *, force: bool = False,
                 stop_requested=lambda: False) -> tuple[StartAs, dict]:
    """Ask the peer until the decision is not WAIT; (decision, the peer's status)."""
    own = epochs.read_epoch(config.data_dir)
    last_log = 0.0
    while True:
        peer, status = ask_peer(config)
        decision, why = start_decision(own, peer, force=force)
        now = time.monotonic()
        if decision is not StartAs.WAIT or stop_requested():
            quiet = decision is StartAs.MASTER and peer.role is not None
            log.log(logging.INFO if quiet else logging.WARNING, "start: %s", why)
            return decision, status
        if now - last_log >= WAIT_LOG_S:
            log.warning("start: %s", why)
            last_log = now
        time.sleep(ASK_TIMEOUT_S / 2)   # the peer was just asked with a timeout: pace it


def start_fenced(config: MasterConfig, peer_epoch: int) -> None:
    """Persist the fence before serving: the peer replaced this node."""
    data_dir = Path(config.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    fence_file.write_fenced(data_dir, epochs.read_epoch(data_dir), peer_epoch)


def prepare_rejoin(config: MasterConfig, peer_epoch: int) -> Path:
    """Move the own journal and snapshots aside (kept); keep the node fenced. Returns the
    directory they went to."""
    data_dir = Path(config.data_dir)
    start_fenced(config, peer_epoch)
    aside = data_dir / f"diverged-epoch-{epochs.read_epoch(data_dir)}-{int(time.time() * 1000)}"
    aside.mkdir(parents=True)
    for name in ("journal", "snapshots"):
        if (data_dir / name).exists():
            os.replace(data_dir / name, aside / name)
    log.warning("rejoining as standby: this node's journal and snapshots were moved to %s "
                "(kept for inspection; their tail may hold writes the new master never had)",
                aside)
    return aside


def standby_config(config: MasterConfig, peer: dict, promote: dict | None = None
                   ) -> CheckpointConfig:
    """The checkpoint node a rejoining master runs: following the new master, on the same
    data directory, answering its status on this master's own client endpoint; with
    `promote` (promote_client_endpoint, promote_pub_endpoint), promotable in turn, keeping
    this master's durability."""
    return load_checkpoint_config(None, flags={
        "data_dir": config.data_dir, "master": peer["client_endpoint"],
        "subscribe": peer["pub_endpoint"], "status_endpoint": config.client_endpoint,
        "ready_file": config.ready_file or None, "promote_durability": config.durability,
        "recent_requests": config.recent_requests,
        # the same keys and principals: it serves (and may serve as master again) with them
        "key_file": config.key_file or None, "server_key": config.server_key or None,
        "principals_dir": config.principals_dir or None, "insecure": config.insecure or None,
        **(promote or {})})
