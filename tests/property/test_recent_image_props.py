"""Property tests of the table of recent requests in the state image: any table round-trips
(origins, txids, and results as the wire carries them), a loader with a smaller limit keeps
the newest entries, and an image of format 1 (no table) loads as the same state with an
empty table."""

from __future__ import annotations

import io

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from mwcluster.core import records as r
from mwcluster.core.recent import RecentRequests
from mwcluster.core.state import State
from mwcluster.core.values import encode

SETTINGS = settings(max_examples=150, deadline=None)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                    st.text(max_size=20))
# what State.apply returns: a scalar, or a list of them (Multi), or of (str, int) pairs
results = st.one_of(scalars, st.lists(scalars, max_size=5),
                    st.lists(st.tuples(st.text(max_size=8), st.integers(0, 100)), max_size=4))
origins = st.tuples(st.binary(min_size=1, max_size=64), st.integers(0, 2**64 - 1))
entries = st.lists(st.tuples(origins, results), max_size=300)


def state_at(txid: int) -> State:
    state = State()
    for n in range(1, txid + 1):
        state.apply(n, r.Put(f"/k{n % 4}", encode(n)))
    return state


def table_of(entries_, limit: int, top_txid: int) -> RecentRequests:
    table = RecentRequests(limit)
    for n, (origin, result) in enumerate(entries_):
        table.remember(origin, min(top_txid, n + 1), result)
    return table


def wire(table: RecentRequests) -> list:
    return [(origin, txid, msgpack.packb(result)) for origin, (txid, result) in table.items()]


@SETTINGS
@given(entries_=entries, limit=st.integers(1, 400))
def test_any_table_round_trips_through_the_image(entries_, limit):
    state = state_at(5)
    table = table_of(entries_, limit, state.txid)
    loaded = RecentRequests(limit)
    again = State.from_image(state.image_chunks(table), recent=loaded)
    assert again.digest == state.digest
    assert wire(loaded) == wire(table)


@SETTINGS
@given(entries_=entries, limit=st.integers(2, 400), smaller=st.integers(1, 400))
def test_a_loader_with_a_smaller_limit_keeps_the_newest(entries_, limit, smaller):
    state = state_at(3)
    table = table_of(entries_, limit, state.txid)
    loaded = RecentRequests(min(limit, smaller))
    State.from_image(state.image_chunks(table), recent=loaded)
    # an origin can sit in both generations (old and young); get() answers the young one:
    # what the loader answers for each origin it kept is what the writer's table answered
    def answer(t: RecentRequests, origin) -> tuple:
        txid, result = t.get(origin)
        return txid, msgpack.packb(result)

    kept = {origin for origin, _ in loaded.items()}
    assert kept <= {origin for origin, _ in table.items()}
    for origin in kept:
        assert answer(loaded, origin) == answer(table, origin)
    # the newest half of the loader's limit is always kept
    newest = [origin for origin, _ in table.items()][-max(1, min(limit, smaller) // 2):]
    assert all(loaded.get(origin) is not None for origin in newest)


def as_format_1(image: bytes) -> list[bytes]:
    """The same image as a writer of format 1 made it: no recent items, no count."""
    out = []
    for item in msgpack.Unpacker(io.BytesIO(image), raw=False, strict_map_key=False):
        if item[0] == "recent":
            continue
        if item[0] == "meta":
            item[1]["format"] = 1
            del item[1]["recent"]
        out.append(msgpack.packb(item, use_bin_type=True))
    return out


@SETTINGS
@given(count=st.integers(0, 40), entries_=entries)
def test_an_image_of_format_1_loads_as_the_same_state_with_no_table(count, entries_):
    state = state_at(count)
    table = table_of(entries_, 100, max(count, 1)) if count else None
    loaded = RecentRequests()
    old = State.from_image(as_format_1(b"".join(state.image_chunks(table))), recent=loaded)
    assert (old.txid, old.digest, len(loaded)) == (state.txid, state.digest, 0)
    assert old.image_bytes() == state.image_bytes()
