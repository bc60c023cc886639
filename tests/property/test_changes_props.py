"""Property tests of the change log (core/changes.py) and of leases in the state machine.

Random histories of puts, merges, deletes (recursive ones too), multis (failing ones too),
leases granted, keys attached to them (inside multis), and leases revoked. The master drops a
refused record, as here. Then:

1. replaying the change log's events over a dict gives exactly the namespace after every
   accepted record (a failed multi leaves no event, a recursive delete one per key, a revoke
   one deletion per leased key), every record's events carry its txid, and no other;
2. `validate()` holds (the lease index matches the attachments, the digest covers them);
3. the state image carries the leases: loading it gives the same digest, the same leases
   and attachments;
4. `since()` from any txid, under any prefix, with any limit, returns the events of that
   prefix in order, never splits a txid, and resuming from its next txid gives the rest.
"""

from __future__ import annotations

import msgpack
from helpers import KEYS, deletes, merges, multis, puts
from hypothesis import given, settings
from hypothesis import strategies as st

from mwcluster.core import records as r
from mwcluster.core.changes import ChangeLog
from mwcluster.core.state import State
from mwcluster.core.values import encode
from mwcluster.errors import ApplyError

leases = st.sampled_from([None, "new"])


def attached_puts():
    """A MULTI of a put and an attach to one of the leases granted so far (an index)."""
    return st.builds(lambda k, v, i, e: ("attach", k, v, i, e), st.sampled_from(KEYS),
                     st.integers(0, 5), st.integers(0, 3), st.sampled_from([None, 0]))


steps = st.lists(st.one_of(
    puts, merges, deletes, multis,
    st.just(("grant",)), attached_puts(),
    st.builds(lambda i: ("revoke", i), st.integers(0, 3))), max_size=40)


def run(history):
    state = State()
    log = ChangeLog(0)
    state.ns.changes = log.events
    granted: list[int] = []
    accepted = 0
    for step in history:
        if isinstance(step, tuple) and step and step[0] == "grant":
            rec = r.LeaseGrant(5_000)
        elif isinstance(step, tuple) and step and step[0] == "attach":
            _, key, value, index, expected = step
            lease = granted[index % len(granted)] if granted else 999
            rec = r.Multi((r.Put(key, encode(value), expected), r.Attach(key, lease)))
        elif isinstance(step, tuple) and step and step[0] == "revoke":
            lease = granted[step[1] % len(granted)] if granted else 999
            rec = r.LeaseRevoke(lease, "expired")
        else:
            rec = step
        before = len(log.events)
        try:
            state.apply(state.txid + 1, rec)
        except ApplyError:
            assert len(log.events) == before, "a refused record left events"
            continue
        accepted += 1
        if type(rec) is r.LeaseGrant:
            granted.append(state.txid)
        assert all(e[0] == state.txid for e in log.events[before:])
        yield state, log


def replayed(events) -> dict:
    keys: dict[str, bytes] = {}
    for _txid, key, entry in events:
        if entry is None:
            keys.pop(key, None)
        else:
            keys[key] = entry
    return keys


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_events_replay_to_the_namespace_and_leases_hold(history):
    state = None
    for state, log in run(history):
        assert replayed(log.events) == dict(state.ns.items())
        assert state.validate() == []
    if state is None:
        return
    loaded = State.from_image(iter([state.image_bytes()]))
    assert loaded.digest == state.digest
    assert loaded.ns.leases == state.ns.leases and loaded.ns.lease_of == state.ns.lease_of


@settings(max_examples=200, deadline=None)
@given(steps, st.sampled_from(["", "/a", "/a/", "/b", "/zzz"]), st.integers(1, 4),
       st.integers(1, 6))
def test_since_gives_the_prefix_events_in_order_without_splitting_a_txid(history, prefix,
                                                                         limit, start):
    last = None
    for last in run(history):
        pass
    if last is None:
        return
    state, log = last
    upto = state.txid
    start = min(start, upto + 1)
    expected = [e for e in log.events if e[0] >= start and e[1].startswith(prefix)]
    got = []
    at = start
    while at <= upto:
        events, at_next = log.since(at, prefix, limit, upto, upto)
        assert at_next > at or events, "since() made no progress"
        if events:
            txids = [e[0] for e in events]
            assert txids == sorted(txids) and txids[0] >= at and txids[-1] < at_next
            # a record's events all come together: none of the last txid is left behind
            assert not [e for e in log.events if e[0] == txids[-1] and
                        e[1].startswith(prefix) and e not in events]
        got.extend(events)
        at = at_next
    assert got == expected


def test_settle_drops_whole_txids_and_since_then_says_compacted():
    state = State()
    log = ChangeLog(0, max_events=8)
    state.ns.changes = log.events
    for i in range(1, 6):      # five multis of three puts each
        state.apply(i, r.Multi(tuple(r.Put(f"/k/{i}/{j}", msgpack.packb(j)) for j in range(3))))
        log.settle()
    assert len(log) <= 8 and log.oldest_txid == log.events[0][0]
    assert len(log) % 3 == 0, "a txid was split"
    from mwcluster.core.changes import Compacted
    try:
        log.since(1, "/", 10, 5, 5)
    except Compacted as exc:
        assert exc.oldest_txid == log.oldest_txid and exc.current_txid == 5
    else:
        raise AssertionError("since() below the oldest txid did not say compacted")


def test_an_epoch_mismatch_says_another_history_replaced_the_txids():
    from mwcluster.core.changes import Compacted
    log = ChangeLog(0)
    log.note_epoch(1, 3)
    log.events.extend([(1, "/a", None), (2, "/a", None)])
    log.note_epoch(3, 4)
    log.events.append((3, "/b", None))
    assert log.epoch_of(2) == 3 and log.epoch_of(3) == 4
    assert log.since(3, "/", 10, 3, 3, after_epoch=3)[0] == [(3, "/b", None)]
    try:
        log.since(3, "/", 10, 3, 3, after_epoch=4)
    except Compacted as exc:
        assert "epoch 3" in str(exc) and "epoch 4" in str(exc)
    else:
        raise AssertionError("a txid seen under another epoch was not refused")
    try:
        log.since(5, "/", 10, 3, 3)
    except Compacted as exc:
        assert "beyond" in str(exc)
    else:
        raise AssertionError("a txid beyond the history was not refused")
