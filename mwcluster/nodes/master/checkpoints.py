"""The checkpoint nodes a master has heard from, for `mwcluster status` to find them.

A checkpoint node sends CHECKPOINT_HELLO [status_endpoint, replica_txid, checkpoint_txid]
every few seconds (fire and forget), and names its status endpoint again in each
SNAPSHOT_UPLOAD_BEGIN; the master's STATUS lists what it heard as `checkpoint_nodes`:

    {"endpoint": str|nil, "last_seen_age_s": float, "replica_txid": int,
     "checkpoint_txid": int|nil, "last_upload_txid": int|nil, "last_upload_age_s": float|nil}

A node is known by its status endpoint (or, without one, by the connection that said hello).
Nodes not heard from for FORGET_S are dropped; at most MAX_NODES are kept (the least recently
seen goes first). Owned by the master's loop thread; time comes in as an argument.
"""

from __future__ import annotations

from typing import Any

FORGET_S = 3600.0
MAX_NODES = 64
MAX_ENDPOINT_CHARS = 256


class BadHello(ValueError):
    pass


def check_endpoint(value: Any) -> str | None:
    """A status endpoint from the network: nil, or a tcp/ipc endpoint string."""
    if value is None:
        return None
    if type(value) is not str or not 0 < len(value) <= MAX_ENDPOINT_CHARS \
            or "://" not in value:
        raise BadHello(f"status_endpoint must be nil or an endpoint string of at most "
                       f"{MAX_ENDPOINT_CHARS} characters, not {value!r:.80}")
    return value


class CheckpointNodes:
    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, Any]] = {}

    def hello(self, client_id: bytes, args: list, now: float) -> None:
        if len(args) != 3:
            raise BadHello("CHECKPOINT_HELLO takes [status_endpoint, replica_txid, "
                           "checkpoint_txid]")
        endpoint = check_endpoint(args[0])
        replica, checkpoint = args[1], args[2]
        if type(replica) is not int or replica < 0 or not (
                checkpoint is None or (type(checkpoint) is int and checkpoint >= 0)):
            raise BadHello("replica_txid must be an unsigned integer and checkpoint_txid an "
                           "unsigned integer or nil")
        node = self._node(endpoint, client_id, now)
        node["replica_txid"] = replica
        node["checkpoint_txid"] = checkpoint

    def uploaded(self, endpoint: str | None, client_id: bytes, txid: int, now: float) -> None:
        """A snapshot from this node was installed (or was already here)."""
        node = self._node(endpoint, client_id, now)
        node["last_upload_txid"] = txid
        node["last_upload_at"] = now

    def _node(self, endpoint: str | None, client_id: bytes, now: float) -> dict[str, Any]:
        key = endpoint if endpoint is not None else "id:" + client_id.hex()
        node = self._nodes.get(key)
        if node is None:
            if len(self._nodes) >= MAX_NODES:
                oldest = min(self._nodes, key=lambda k: self._nodes[k]["seen"])
                del self._nodes[oldest]
            node = self._nodes[key] = {"endpoint": endpoint, "seen": now, "replica_txid": 0,
                                       "checkpoint_txid": None, "last_upload_txid": None,
                                       "last_upload_at": None}
        node["seen"] = now
        return node

    def status(self, now: float) -> list[dict[str, Any]]:
        for key in [k for k, n in self._nodes.items() if now - n["seen"] > FORGET_S]:
            del self._nodes[key]
        out = []
        for node in sorted(self._nodes.values(), key=lambda n: n["seen"], reverse=True):
            at = node["last_upload_at"]
            out.append({"endpoint": node["endpoint"],
                        "last_seen_age_s": round(max(0.0, now - node["seen"]), 3),
                        "replica_txid": node["replica_txid"],
                        "checkpoint_txid": node["checkpoint_txid"],
                        "last_upload_txid": node["last_upload_txid"],
                        "last_upload_age_s": None if at is None else round(max(0.0, now - at),
                                                                           3)})
        return out
