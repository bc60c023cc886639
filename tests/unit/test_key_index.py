"""The namespace's key index on its own: pending keys, merges, chunk splits and joins."""

from __future__ import annotations

import pytest

from mwcluster.core import key_index
from mwcluster.core.key_index import KeyIndex


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(key_index, "LOAD", 8)          # chunks split past 16 keys
    monkeypatch.setattr(key_index, "PENDING_MAX", 1000)


def key(i: int) -> str:
    return f"k{i:04d}"


def chunk_sizes(index: KeyIndex) -> list[int]:
    return [len(chunk) for chunk in index._chunks]


def test_new_keys_wait_unordered_until_an_ordered_read(small_chunks):
    index = KeyIndex(key(i) for i in range(0, 100, 10))
    for i in (55, 5, 95, 56):
        index.add(key(i))
    assert list(index.pending) == [key(55), key(5), key(95), key(56)]   # as they came
    assert list(index.iter_from(key(50))) == [key(i) for i in (50, 55, 56, 60, 70, 80, 90, 95)]
    assert not index.pending
    assert index.problems(key(i) for i in (*range(0, 100, 10), 5, 55, 56, 95)) == []


def test_the_pending_bound_forces_a_merge(small_chunks, monkeypatch):
    monkeypatch.setattr(key_index, "PENDING_MAX", 3)
    index = KeyIndex()
    for i in range(4):
        index.add(key(i))
    assert not index.pending and chunk_sizes(index) == [4]


def test_a_chunk_grown_past_twice_the_load_splits(small_chunks):
    index = KeyIndex(key(i) for i in range(0, 160, 10))       # two chunks of 8
    for i in range(1, 10):
        index.add(key(i))                                     # all inside the first chunk
    index.flush()
    assert chunk_sizes(index) == [8, 8, 1, 8]
    assert index.problems([*(key(i) for i in range(0, 160, 10)),
                           *(key(i) for i in range(1, 10))]) == []


def test_a_small_chunk_joins_a_neighbour_only_if_both_fit(small_chunks):
    keys = [key(i) for i in range(0, 180, 10)]                # chunks of 8, 8, 2
    index = KeyIndex(keys)
    extra = [key(i) for i in range(81, 89)]                    # into the middle chunk: 16
    for k in extra:
        index.add(k)
    index.flush()
    assert chunk_sizes(index) == [8, 16, 2]
    index.discard(key(170))                  # the last chunk falls to 1: 16 + 1 do not fit
    assert chunk_sizes(index) == [8, 16, 1]
    for i in range(0, 70, 10):
        index.discard(key(i))                # the first chunk falls to 1 (70): 1 + 16 do not
    assert chunk_sizes(index) == [1, 16, 1]  # fit either, so it stays
    index.discard(key(70))                   # empty: gone
    assert chunk_sizes(index) == [16, 1]
    index.discard(key(81))
    index.add(key(165))
    index.flush()
    assert chunk_sizes(index) == [15, 2]
    index.discard(key(165))                  # 15 + 1 fit: the last chunk joins the previous
    assert chunk_sizes(index) == [16]
    gone = {key(i) for i in range(0, 80, 10)} | {key(81), key(170)}
    remaining = [k for k in keys + extra if k not in gone]
    assert index.problems(remaining) == []
    assert list(index) == sorted(remaining)


def test_count_spans_chunks(small_chunks):
    index = KeyIndex(key(i) for i in range(100))
    assert index.count(key(3), key(97)) == 94
    assert index.count(key(3), "z") == 97
    assert index.count("a", key(0)) == 0
    assert index.count(key(50), key(40)) == 0
    assert index.count(key(7), key(8)) == 1


def test_discarding_a_pending_key_leaves_the_chunks_alone(small_chunks):
    index = KeyIndex([key(1)])
    index.add(key(2))
    index.discard(key(2))
    assert not index.pending and list(index) == [key(1)]
    with pytest.raises(KeyError):
        index.discard(key(0))
