"""The recent changes of the state, in txid order, for watches (docs/coordination.md).

An event is a tuple `(txid, key, what)`:

- a namespace key's new entry (`what` is the entry bytes: version header and value, as the
  namespace keeps it), or its deletion (`what` is None);
- a job's or a worker's record (`key` is JOB_PREFIX + job id or WORKER_PREFIX + worker id,
  `what` a dict saying what happened: `event` and the record's fields).

The namespace appends its events to `events` as it applies them (a failed multi takes its
own back), the state appends the job and worker events; every event of one record has the
record's txid. The log holds every event of every txid from `oldest_txid` on: `settle()`
(called by the owner between records, never inside one) drops whole txids from the front
once the log holds more than `max_events` events or `max_bytes` of entries. It also keeps
the epoch each record was written under (`note_epoch`), so that a watcher resuming after a
failover learns when the txids it saw belong to another history.

Pure: no clock, no I/O. A watch's request is answered by `since()`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from operator import itemgetter

JOB_PREFIX = "@job/"
WORKER_PREFIX = "@worker/"
DEFAULT_MAX_EVENTS = 200_000
DEFAULT_MAX_BYTES = 64 << 20
# The most events one answer looks at: a watch of a quiet prefix behind a busy one costs the
# loop this much per request, and resumes from where the scan stopped.
SCAN_BUDGET = 50_000
_txid_of = itemgetter(0)


class Compacted(Exception):
    """The events a watch asks for are no longer (or not) held here: re-read, then watch
    from the txid the read was served at + 1."""

    def __init__(self, from_txid: int, oldest_txid: int, current_txid: int, why: str) -> None:
        super().__init__(why)
        self.from_txid, self.oldest_txid, self.current_txid = from_txid, oldest_txid, current_txid


class ChangeLog:
    __slots__ = ("events", "oldest_txid", "max_events", "max_bytes", "_counted", "_bytes",
                 "_epoch_txids", "_epochs", "dropped")

    def __init__(self, start_txid: int, max_events: int = DEFAULT_MAX_EVENTS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("a change log holds at least one event and one byte")
        self.events: list[tuple] = []
        self.oldest_txid = start_txid + 1     # every event of txids >= this is held
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._counted = 0           # events whose bytes are in _bytes
        self._bytes = 0
        self._epoch_txids: list[int] = []     # the first txid written under each epoch
        self._epochs: list[int] = []
        self.dropped = 0            # events dropped from the front since the start

    def __len__(self) -> int:
        return len(self.events)

    @property
    def bytes(self) -> int:
        return self._bytes

    def note_epoch(self, txid: int, epoch: int) -> None:
        """Records from `txid` on are written under `epoch` (until the next note)."""
        if self._epochs and self._epochs[-1] == epoch:
            return
        if self._epoch_txids and txid <= self._epoch_txids[-1]:
            # a history replaced from txid on (a replica reloaded): forget what it replaced
            cut = bisect_left(self._epoch_txids, txid)
            del self._epoch_txids[cut:], self._epochs[cut:]
        self._epoch_txids.append(txid)
        self._epochs.append(epoch)

    def epoch_of(self, txid: int) -> int | None:
        """The epoch the record at `txid` was written under, None when not known here."""
        if txid < self.oldest_txid - 1:
            return None
        i = bisect_right(self._epoch_txids, txid) - 1
        return self._epochs[i] if i >= 0 else None

    def settle(self) -> None:
        """Count the new events' bytes; drop the oldest txids past either bound."""
        events = self.events
        n = len(events)
        if n > self._counted:
            total = self._bytes
            for i in range(self._counted, n):
                what = events[i][2]
                if what.__class__ is bytes:
                    total += len(what)
            self._bytes = total
            self._counted = n
        if n > self.max_events or self._bytes > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        """Down to three quarters of each bound, cut at a txid's end."""
        events = self.events
        n = len(events)
        keep_events, keep_bytes = self.max_events * 3 // 4, self.max_bytes * 3 // 4
        total = self._bytes
        cut = 0
        while cut < n and (n - cut > keep_events or total > keep_bytes):
            total -= _size(events[cut])
            cut += 1
        last = events[cut - 1][0]
        while cut < n and events[cut][0] == last:
            total -= _size(events[cut])
            cut += 1
        del events[:cut]
        self._counted -= cut
        self._bytes = total
        self.dropped += cut
        self.oldest_txid = last + 1
        first = bisect_right(self._epoch_txids, last) - 1
        if first > 0:
            del self._epoch_txids[:first], self._epochs[:first]

    def since(self, from_txid: int, prefix: str, limit: int, upto: int, current_txid: int,
              after_epoch: int | None = None) -> tuple[list[tuple], int]:
        """The events of txids from `from_txid` up to `upto` whose key starts with `prefix`,
        at least `limit` of them when there are (a record's events are never split), and
        the txid to ask from next. Raises Compacted when from_txid is older than the oldest
        txid held, ahead of `current_txid` + 1, or when `after_epoch` (the epoch the watcher
        was told for from_txid - 1) is not the epoch of that record here."""
        if from_txid < self.oldest_txid:
            raise Compacted(from_txid, self.oldest_txid, current_txid,
                            f"events from txid {from_txid} are no longer held (the oldest is "
                            f"{self.oldest_txid}; the master is at {current_txid})")
        if from_txid > current_txid + 1:
            raise Compacted(from_txid, self.oldest_txid, current_txid,
                            f"txid {from_txid - 1} is beyond this master's history (it is at "
                            f"{current_txid}): the events seen up to it were lost (a failover "
                            "or a crash in async mode)")
        if after_epoch is not None and from_txid > 1:
            epoch = self.epoch_of(from_txid - 1)
            if epoch is not None and epoch != after_epoch:
                raise Compacted(from_txid, self.oldest_txid, current_txid,
                                f"txid {from_txid - 1} was written under epoch {epoch} here, "
                                f"not under epoch {after_epoch} as the watch saw it: another "
                                "history replaced it (a failover)")
        events = self.events
        i = bisect_left(events, from_txid, key=_txid_of)
        out: list[tuple] = []
        n = len(events)
        stop = min(n, i + SCAN_BUDGET)
        while i < n:
            event = events[i]
            txid = event[0]
            if txid > upto:
                return out, upto + 1
            if (len(out) >= limit or i >= stop) and txid != events[i - 1][0]:
                return out, txid
            if event[1].startswith(prefix):
                out.append(event)
            i += 1
        return out, upto + 1

    def epoch_after(self, next_txid: int) -> int | None:
        """The epoch a watcher is told for next_txid - 1 (None: unknown, not checked)."""
        return self.epoch_of(next_txid - 1) if next_txid > 1 else None


def _size(event: tuple) -> int:
    what = event[2]
    return len(what) if what.__class__ is bytes else 0
