"""The master's ring of published digests (core/digest_ring.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mwcluster.core.digest_ring import DigestRing


def test_lookups_and_the_bound():
    ring = DigestRing(capacity=4)
    assert ring.get(1) is None and ring.span() is None and len(ring) == 0
    for txid in (3, 5, 9):
        ring.record(txid, txid * 10)
    ring.record(5, 999)                  # known already: the first word stays
    ring.record(4, 999)                  # below the newest: ignored
    assert [ring.get(t) for t in (3, 4, 5, 9, 10)] == [30, None, 50, 90, None]
    assert 9 in ring and 4 not in ring and ring.span() == (3, 9)
    for txid in range(10, 20):
        ring.record(txid, txid)
    assert 4 <= len(ring) < 8 and ring.span()[1] == 19
    assert ring.get(19) == 19 and ring.get(3) is None


@given(st.lists(st.integers(1, 2**64 - 1), max_size=300), st.integers(1, 50))
def test_the_newest_capacity_points_are_always_kept(digests, capacity):
    ring = DigestRing(capacity=capacity)
    for i, digest in enumerate(digests):
        ring.record(i + 1, digest)
    for i, digest in enumerate(digests[-capacity:], len(digests) - min(capacity, len(digests))):
        assert ring.get(i + 1) == digest
    assert len(ring) < 2 * capacity
