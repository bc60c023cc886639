"""The master's log stream, without the socket: which durable records go out in which batch,
and the heartbeats. The loop (node.py) sends what this returns on its PUB; the in-memory
cluster simulation hands it to its replicas. Owned by the loop thread.

A batch ends where a drain ended (`drain_ended`, after each drain that applied something),
and carries the state digest there, so a replica can check its digest at exactly that txid;
a batch inside one drain larger than `batch_bytes` carries none. Records after the last drain
end wait for the next publish: every drain records its end, so the durable txid reaches one.
The state as it is at a publish is a drain end too: records applied outside a drain (the
tick's WorkerLost) are published once durable, without waiting for a request. Every digest
published goes to `ring.record(txid, digest)` (the uploads' ring of published digests, which
checks a checkpoint node's upload against what it was sent).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Protocol

from mwcluster import errors
from mwcluster.engine import Engine
from mwcluster.wire.protocol import encode_heartbeat, encode_log_batch

log = logging.getLogger(__name__)


class DigestRing(Protocol):
    def record(self, txid: int, digest: int) -> None: ...


class LogStream:
    def __init__(self, engine: Engine, epoch: int, ring: DigestRing, batch_bytes: int) -> None:
        self.engine = engine
        self.epoch = epoch
        self.ring = ring
        self.batch_bytes = batch_bytes
        self.published_txid = engine.journal.durable_txid
        # (txid, digest) where each drain that applied something ended, not yet published
        self._points: deque[tuple[int, int]] = deque()

    def drain_ended(self) -> None:
        """A drain of the loop ended: the state there is a point a batch may end at."""
        state = self.engine.state
        points = self._points
        if not points or points[-1][0] < state.txid:
            points.append((state.txid, state.digest))

    def publish(self, durable: int) -> list[bytes] | None:
        """The log-batch bodies (topic TOPIC_LOG) of the durable records up to the last drain
        end at or below `durable`, in order, each at most batch_bytes of payload (at least one
        record); None when no drain end is durable yet (nothing was published)."""
        self.drain_ended()
        points = self._points
        if points[0][0] > durable:
            return None
        ends = []
        while points and points[0][0] <= durable:
            ends.append(points.popleft())
        engine = self.engine
        epoch = self.epoch
        limit = self.batch_bytes
        target = ends[-1][0]
        nxt = self.published_txid + 1
        out = []
        i = 0
        while nxt <= target:
            try:
                records = engine.records(nxt, limit)
            except errors.Truncated as exc:
                log.warning("epoch %d: records from txid %d are no longer kept, so they are not "
                            "published (subscribers fetch the snapshot): %s", epoch, nxt, exc)
                nxt = target + 1
                break
            if not records:
                break
            last = records[-1][0]
            while i < len(ends) and ends[i][0] <= last:
                i += 1
            digest = None
            if i and ends[i - 1][0] >= nxt:      # the last drain end inside this batch
                end, digest = ends[i - 1]
                if end < last:
                    records = records[:end - nxt + 1]
                    last = end
            out.append(encode_log_batch(epoch, records, digest))
            if digest is not None:
                self.ring.record(last, digest)
            nxt = last + 1
        self.published_txid = nxt - 1
        return out

    def heartbeat(self, now_ms: int) -> bytes:
        """A heartbeat body (topic TOPIC_HEARTBEAT): the durable txid, and the digest there
        when the state is exactly at it (the master is idle)."""
        engine = self.engine
        durable = engine.journal.durable_txid
        state = engine.state
        digest = state.digest if state.txid == durable else None
        if digest is not None:
            self.ring.record(durable, digest)
        return encode_heartbeat(self.epoch, durable, digest, now_ms)
