"""Replies that wait for their record: sync replies until the fsync that covers it,
`replicated` replies until the standby reports having it. No sockets, no clock: times come in
as arguments.

A parked reply is (txid, ident, reply, parked_at, request_id), kept in the order parked (txid
order, except a retry of an older request, which waits no longer than the newer ones before
it). The handlers park and fail replies; the master's loop releases them once the durable txid
or the standby's ack passes their txid.
"""

from __future__ import annotations

from collections import deque

from mwcluster.nodes.master.stats import Histogram

Parked = tuple[int, bytes, bytes, float, int]


class ParkedReplies:
    __slots__ = ("_queue", "_waits", "_highest")

    def __init__(self, waits: Histogram) -> None:
        self._queue: deque[Parked] = deque()
        self._waits = waits             # how long each released reply waited
        self._highest = 0               # the highest txid ever parked

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return bool(self._queue)

    def txids(self) -> list[int]:
        return [p[0] for p in self._queue]

    def park(self, txid: int, ident: bytes, reply: bytes, now: float, request_id: int) -> None:
        self._queue.append((txid, ident, reply, now, request_id))
        if txid > self._highest:
            self._highest = txid

    def waiting_for(self) -> int:
        """The highest txid a parked reply waits for (0: none parked). Every reply up to it
        that is covered is released at once, so it is exact unless the reply holding it was
        failed or timed out meanwhile (then it only overstates)."""
        return self._highest if self._queue else 0

    def due(self, upto: int) -> bool:
        """Whether the oldest parked reply is covered by `upto` (the loop asks this after
        every drain)."""
        queue = self._queue
        return bool(queue) and queue[0][0] <= upto

    def release(self, upto: int, now: float) -> list[tuple[bytes, bytes]]:
        """The replies for txids up to `upto`, as (ident, reply), oldest first."""
        queue = self._queue
        out = []
        add = self._waits.add
        while queue and queue[0][0] <= upto:
            _txid, ident, reply, parked_at, _rid = queue.popleft()
            out.append((ident, reply))
            add(now - parked_at)
        return out

    def older_than(self, now: float, timeout_s: float) -> list[Parked]:
        """Take the replies parked longer than `timeout_s` (from the oldest)."""
        queue = self._queue
        out = []
        while queue and now - queue[0][3] > timeout_s:
            out.append(queue.popleft())
        return out

    def take_all(self) -> list[Parked]:
        out = list(self._queue)
        self._queue.clear()
        return out
