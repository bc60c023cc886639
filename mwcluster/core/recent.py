"""The table of recent requests: (client_id, request_id) -> (txid, result) of the mutations
the newest records made, so that a retried request is answered instead of applied twice.

Two generations of plain dicts: when the young one holds half the limit it becomes the old
one, so between half and all of the last `limit` requests are remembered, at one dict store
per record. The master's Engine keeps one (rebuilt from its journal at recovery); a
checkpoint node keeps one from the records it applies, and hands it to the master it becomes
at a promotion, so that a retry of a request the old master applied is recognised there too.
"""

from __future__ import annotations

from typing import Any, Iterator

from mwcluster.core.records import Origin


class RecentRequests:
    __slots__ = ("young", "old", "half")

    def __init__(self, limit: int = 100_000) -> None:
        self.young: dict[Origin, tuple[int, Any]] = {}
        self.old: dict[Origin, tuple[int, Any]] = {}
        self.half = max(1, limit // 2)

    def remember(self, origin: Origin, txid: int, result: Any) -> None:
        young = self.young
        young[origin] = (txid, result)
        if len(young) >= self.half:
            self.old = young
            self.young = {}

    def get(self, origin: Origin) -> tuple[int, Any] | None:
        found = self.young.get(origin)
        return found if found is not None else self.old.get(origin)

    def items(self) -> Iterator[tuple[Origin, tuple[int, Any]]]:
        """Oldest generation first, so that replaying them into another table keeps the
        newest."""
        yield from self.old.items()
        yield from self.young.items()

    def clear(self) -> None:
        self.young, self.old = {}, {}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)
