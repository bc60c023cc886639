"""The master's recent digests: (txid -> state digest at txid) for the last `capacity` txids
it published a digest for (at the end of each log batch, and in idle heartbeats), so that an
uploaded snapshot's digest at T can be checked for any T it published in that range.

Two parallel arrays of unsigned 64-bit ints (16 bytes a point), txids strictly increasing
within an epoch; lookups by bisection. Appending is amortised O(1): the arrays are cut in
half when they reach twice the capacity. Pure: no clock, no I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

DEFAULT_CAPACITY = 1 << 17       # 2 MiB at most; 131,072 published batches


class DigestRing:
    __slots__ = ("capacity", "_txids", "_digests")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = max(1, capacity)
        self._txids = array("Q")
        self._digests = array("Q")

    def record(self, txid: int, digest: int) -> None:
        txids = self._txids
        if txids and txid <= txids[-1]:
            return                    # already known (or out of order: keep the first word)
        txids.append(txid)
        self._digests.append(digest)
        if len(txids) >= 2 * self.capacity:
            del txids[:-self.capacity]
            del self._digests[:-self.capacity]

    def get(self, txid: int) -> int | None:
        txids = self._txids
        i = bisect_left(txids, txid)
        if i < len(txids) and txids[i] == txid:
            return self._digests[i]
        return None

    def __contains__(self, txid: int) -> bool:
        return self.get(txid) is not None

    def __len__(self) -> int:
        return len(self._txids)

    def span(self) -> tuple[int, int] | None:
        """The oldest and newest txid held, or None when empty."""
        return (self._txids[0], self._txids[-1]) if self._txids else None
