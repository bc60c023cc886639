"""The table of recent requests: (client_id, request_id) -> (txid, result) of the mutations
the newest records made, so that a retried request is answered instead of applied twice.

Two generations of plain dicts: when the young one holds half the limit it becomes the old
one, so between half and all of the last `limit` requests are remembered, at one dict store
per record. The master's Engine keeps one; a checkpoint node keeps one from the records it
applies. A snapshot carries the table as of its txid (the "recent" items of the state image,
core/state.py, docs/formats.md), so whoever loads a snapshot (a master at recovery, a
checkpoint node, the master a promotion opens) remembers the requests behind the records the
snapshot covers, then the records replayed or applied after it add theirs.

In the image the table is flat lists `[client_id, request_id, txid, result, ...]`, oldest
first: loading them in order through `remember` keeps the newest, whatever the limits of the
writer and the loader. A result is what `State.apply` returned (an int, a str, a bool, None, or
a list of those for a Multi or a WorkerLeave), so it packs as msgpack; a tuple comes back as
a list, which the wire does not tell apart.
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

    def flat_rows(self, per_item: int) -> Iterator[list]:
        """The table as flat lists of at most `per_item` entries each, oldest first (the
        "recent" items of a state image)."""
        flat: list = []
        limit = 4 * per_item
        for (client_id, request_id), (txid, result) in self.items():
            flat += (client_id, request_id, txid, result)
            if len(flat) >= limit:
                yield flat
                flat = []
        if flat:
            yield flat


def load_flat_rows(table: RecentRequests | None, flat: list, max_txid: int) -> int:
    """Check one flat list of `flat_rows` and remember its entries in `table` (only checked
    when None); returns how many. ValueError when an entry is malformed or names a txid
    above `max_txid` (the image's txid: a table never holds a later record)."""
    if type(flat) is not list or len(flat) % 4:
        raise ValueError("a recent-requests item is not a list of 4-element entries")
    remember = table.remember if table is not None else None
    it = iter(flat)
    for i, (client_id, request_id, txid, result) in enumerate(zip(it, it, it, it)):
        if type(client_id) is not bytes or type(request_id) is not int or request_id < 0:
            raise ValueError(f"recent request {i}: bad origin {client_id!r:.40}, "
                             f"{request_id!r:.40}")
        if type(txid) is not int or not 0 < txid <= max_txid:
            raise ValueError(f"recent request {i}: txid {txid!r:.40} is not within "
                             f"1..{max_txid}")
        if remember is not None:
            remember((client_id, request_id), txid, result)
    return len(flat) // 4
