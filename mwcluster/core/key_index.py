"""The ordered index of the namespace's keys, cheap to create keys in.

Ordered reads (`children`, prefix listings, the snapshot image) need the keys in order, but
most writes never read in order, and inserting each new key into a sorted structure one at
a time cost about 1 us per key (a third of a put). So a new key only goes into `pending`, an
unsorted dict; the ordered part is brought up to date in bulk (`flush`: sort the pending keys
once, then merge each run of them into the chunk it falls in) the next time an ordered read
needs it, or as soon as more than PENDING_MAX keys wait, which bounds the work a read can
find waiting (see docs/benchmarks.md, "core engine").

The ordered part is a list of sorted chunks of about LOAD keys each (no chunk empty) with
`maxes[i]`, the last key of chunk i, to bisect on: every key of chunk i sorts above
`maxes[i - 1]` and at or below `maxes[i]`. A deleted key is removed from its chunk at once
(two bisections and a `del` on a list of at most 2 * LOAD pointers), or from `pending` if it
had not been merged yet. Invariant: `pending` and the chunks hold disjoint keys, and
together exactly the namespace's keys. Pure: no clock, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from typing import Iterable, Iterator

LOAD = 1000                 # keys per chunk when chunks are cut; a chunk splits past 2 * LOAD
PENDING_MAX = 1 << 15       # created keys allowed to wait unordered before a merge
_INSORT_BELOW = 32          # fewer new keys than this go into a chunk one by one


class KeyIndex:
    __slots__ = ("pending", "_chunks", "_maxes")

    def __init__(self, keys: Iterable[str] = ()) -> None:
        # The namespace adds new keys to this very dict on its hot path: never rebind it. A
        # dict (values None) rather than a set: it keeps the order keys came in, and keys
        # created in ascending order, the common case, then sort in linear time.
        self.pending: dict[str, None] = {}
        self._chunks: list[list[str]] = []
        self._maxes: list[str] = []
        self.reset(keys)

    def reset(self, keys: Iterable[str]) -> None:
        """Hold exactly `keys` (distinct), all ordered (snapshot load)."""
        self.pending.clear()
        ordered = sorted(keys)     # linear when they come in order, as from a snapshot
        self._chunks = [ordered[i:i + LOAD] for i in range(0, len(ordered), LOAD)]
        self._maxes = [chunk[-1] for chunk in self._chunks]

    def __len__(self) -> int:
        return sum(map(len, self._chunks)) + len(self.pending)

    # --- changes -------------------------------------------------------------------------

    def add(self, key: str) -> None:
        """Add a key that is not in the index (the namespace inlines this on its hot path)."""
        pending = self.pending
        pending[key] = None
        if len(pending) > PENDING_MAX:
            self.flush()

    def discard(self, key: str) -> None:
        """Remove a key that is in the index."""
        pending = self.pending
        if key in pending:
            del pending[key]
            return
        maxes = self._maxes
        i = bisect_left(maxes, key)
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        if chunk[j] != key:
            raise KeyError(key)
        del chunk[j]
        if not chunk:
            del self._chunks[i]
            del maxes[i]
            return
        if j == len(chunk):
            maxes[i] = chunk[-1]
        if len(chunk) < LOAD // 4:
            self._join_small(i)

    def _join_small(self, i: int) -> None:
        """Join chunk i, grown small by deletes, with a neighbour if the two fit in one."""
        chunks, maxes = self._chunks, self._maxes
        if i + 1 < len(chunks) and len(chunks[i]) + len(chunks[i + 1]) <= 2 * LOAD:
            first = i
        elif i > 0 and len(chunks[i - 1]) + len(chunks[i]) <= 2 * LOAD:
            first = i - 1
        else:
            return
        chunks[first].extend(chunks[first + 1])
        del chunks[first + 1]
        del maxes[first]

    def flush(self) -> None:
        """Merge the pending keys into the ordered chunks."""
        pending = self.pending
        if not pending:
            return
        chunks, maxes = self._chunks, self._maxes
        if len(pending) < _INSORT_BELOW and chunks:
            # A few keys (a delete or a read right after some creates): straight into their
            # chunks, without the runs below.
            for key in pending:
                i = min(bisect_left(maxes, key), len(maxes) - 1)   # above all: the last
                chunk = chunks[i]
                insort(chunk, key)
                maxes[i] = chunk[-1]
                if len(chunk) > 2 * LOAD:
                    self._split(i)
            pending.clear()
            return
        new = sorted(pending)
        pending.clear()
        if not chunks:
            self._chunks = [new[i:i + LOAD] for i in range(0, len(new), LOAD)]
            self._maxes = [chunk[-1] for chunk in self._chunks]
            return
        # Cut the sorted new keys into runs, one per chunk they fall in (keys above the last
        # key go to the last chunk); merge them from the last run back, so that splitting a
        # chunk does not move the chunks still to be merged into.
        last = len(maxes) - 1
        runs = []
        pos, end = 0, len(new)
        while pos < end:
            i = bisect_left(maxes, new[pos])
            if i >= last:
                runs.append((last, pos, end))
                break
            stop = bisect_left(new, maxes[i], pos)   # never equal: the sets are disjoint
            runs.append((i, pos, stop))
            pos = stop
        for i, start, stop in reversed(runs):
            chunk = chunks[i]
            if stop - start < _INSORT_BELOW:
                for key in new[start:stop]:
                    insort(chunk, key)
            else:
                chunk.extend(new[start:stop])
                chunk.sort()       # two sorted runs: merged in linear time
            maxes[i] = chunk[-1]
            if len(chunk) > 2 * LOAD:
                self._split(i)

    def _split(self, i: int) -> None:
        """Cut chunk i, grown past 2 * LOAD keys, into chunks of LOAD keys (and the rest)."""
        chunk = self._chunks[i]
        pieces = [chunk[s:s + LOAD] for s in range(0, len(chunk), LOAD)]
        self._chunks[i:i + 1] = pieces
        self._maxes[i:i + 1] = [piece[-1] for piece in pieces]

    # --- ordered reads (each merges the pending keys first) --------------------------------

    def iter_from(self, key: str, inclusive: bool = True) -> Iterator[str]:
        """Keys above `key` (and `key` itself if present and `inclusive`), in order. The
        index must not change while the iterator is in use."""
        if self.pending:
            self.flush()
        side = bisect_left if inclusive else bisect_right
        maxes, chunks = self._maxes, self._chunks
        i = side(maxes, key)
        if i == len(maxes):
            return
        chunk = chunks[i]
        j = side(chunk, key)
        yield from chunk[j:] if j else chunk
        for i in range(i + 1, len(chunks)):
            yield from chunks[i]

    def count(self, lo: str, hi: str) -> int:
        """How many keys lie in [lo, hi)."""
        if self.pending:
            self.flush()
        maxes, chunks = self._maxes, self._chunks
        n = len(maxes)
        i = bisect_left(maxes, lo)
        if i == n or lo >= hi:
            return 0
        p = bisect_left(chunks[i], lo)
        j = bisect_left(maxes, hi, i)
        if j == i:
            return bisect_left(chunks[i], hi) - p
        inside = sum(map(len, chunks[i + 1:j]))
        tail = 0 if j == n else bisect_left(chunks[j], hi)
        return len(chunks[i]) - p + inside + tail

    def __iter__(self) -> Iterator[str]:
        """Every key in order. The index must not change while the iterator is in use."""
        if self.pending:
            self.flush()
        for chunk in self._chunks:
            yield from chunk

    # --- invariants ----------------------------------------------------------------------

    def problems(self, keys: Iterable[str]) -> list[str]:
        """What is wrong with the index if it should hold exactly `keys` (does not merge)."""
        out = []
        chunks, maxes = self._chunks, self._maxes
        if len(chunks) != len(maxes):
            out.append("the key index has a different number of chunks and maxima")
        previous = None
        for chunk, top in zip(chunks, maxes):
            if not chunk or chunk[-1] != top:
                out.append("a chunk of the key index is empty or its maximum is wrong")
                break
            if len(chunk) > 2 * LOAD:
                out.append(f"a chunk of the key index holds {len(chunk)} keys, more than "
                           f"2 * LOAD ({2 * LOAD})")
                break
            if previous is not None and not previous < chunk[0]:
                out.append("the chunks of the key index are out of order")
                break
            if any(a >= b for a, b in zip(chunk, chunk[1:])):
                out.append("a chunk of the key index is not strictly sorted")
                break
            previous = chunk[-1]
        ordered = {key for chunk in chunks for key in chunk}
        if not ordered.isdisjoint(self.pending):
            out.append("a key is both pending and ordered in the key index")
        if ordered | self.pending.keys() != set(keys):
            out.append("the key index and the entries disagree")
        return out
