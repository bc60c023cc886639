"""Property test of the namespace's ordered reads against a plain model.

Random creates, updates, deletes (plain and recursive, some refused), multis rolled back, and
ordered reads (children with limits, prefix listings with limits and cursors, subtree counts,
the full key order of the snapshot image) are interleaved; every read is compared with the
same read computed the obvious way from a dict of the keys, sorted on every read. The key
index is run with tiny chunks and pending bounds (and with the real ones), so that merging,
splitting and joining chunks happen within a few steps; `validate()` runs after every step.
"""

from __future__ import annotations

from contextlib import ExitStack
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mwcluster.core import key_index, namespace
from mwcluster.core.keys import subtree_bounds
from mwcluster.core.namespace import Namespace
from mwcluster.core.values import encode
from mwcluster.errors import ApplyError, NoNode, NotEmpty

# '-' sorts below '/' and '0' above it: names like "a-" and "a0" sit on either side of the
# subtree of "a", where listing by bisection is easiest to get wrong.
COMPONENTS = ["a", "b", "a-", "a0", "ab", "c"]
VALUE = encode(b"v")

components = st.sampled_from(COMPONENTS)
keys = st.lists(components, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
paths = st.one_of(st.just(""), keys)
prefixes = st.one_of(keys, keys.map(lambda k: k + "/"), keys.map(lambda k: k[:-1]),
                     st.sampled_from(["", "/", "/a", "/a/", "/b/a"]))
limits = st.one_of(st.none(), st.integers(0, 12))

steps = st.lists(st.one_of(
    st.tuples(st.just("put"), keys),
    st.tuples(st.just("put"), keys),
    st.tuples(st.just("puts"), st.lists(keys, max_size=40)),
    st.tuples(st.just("delete"), keys, st.booleans()),
    st.tuples(st.just("delete"), keys, st.booleans()),
    st.tuples(st.just("rolled_back"), st.lists(st.tuples(keys, st.booleans()), max_size=4)),
    st.tuples(st.just("children"), paths, limits),
    st.tuples(st.just("list"), prefixes, st.integers(0, 12), st.one_of(st.none(), prefixes)),
    st.tuples(st.just("count"), paths),
    st.tuples(st.just("items")),
), min_size=10, max_size=150)

# (keys per chunk, pending bound, runs shorter than this are inserted key by key)
GEOMETRIES = st.sampled_from([
    (4, 0, 2), (4, 3, 0), (8, 5, 32), (5, 50, 3), (12, 7, 4), (3, 20, 64),
    (key_index.LOAD, key_index.PENDING_MAX, key_index._INSORT_BELOW)])


def model_children(model: dict, path: str, limit: int | None) -> list[str]:
    lo = subtree_bounds(path)[0]
    names = [key[len(lo):].split("/")[0] for key in sorted(model) if key.startswith(lo)]
    names = list(dict.fromkeys(names))        # in the order of the first key below each
    return names if limit is None else names[:limit]


def model_list(model: dict, prefix: str, limit: int, start_after: str | None) -> list[str]:
    return [key for key in sorted(model)
            if key.startswith(prefix) and (start_after is None or key > start_after)][:limit]


def model_count(model: dict, path: str) -> int:
    return sum(1 for key in model if key.startswith(path + "/"))


def model_delete(model: dict, key: str, recursive: bool) -> type | None:
    """Apply a delete to the model; return the error it must raise, or None."""
    below = [k for k in model if k.startswith(key + "/")]
    if below and not recursive:
        return NotEmpty
    if key not in model and not below:
        return NoNode
    for k in below:
        del model[k]
    model.pop(key, None)
    return None


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(GEOMETRIES, steps)
def test_ordered_reads_match_a_sorted_model(geometry, script):
    load, pending_max, insort_below = geometry
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(key_index, "LOAD", load))
        stack.enter_context(mock.patch.object(key_index, "PENDING_MAX", pending_max))
        stack.enter_context(mock.patch.object(namespace, "PENDING_MAX", pending_max))
        stack.enter_context(mock.patch.object(key_index, "_INSORT_BELOW", insort_below))
        run_script(script)


def run_script(script: list) -> None:
    ns = Namespace()
    model: dict[str, int] = {}
    txid = 0
    for step in script:
        kind = step[0]
        txid += 1
        if kind == "put":
            ns.put(txid, step[1], VALUE, None)
            model[step[1]] = txid
        elif kind == "puts":
            for key in step[1]:
                ns.put(txid, key, VALUE, None)
                model[key] = txid
        elif kind == "delete":
            error = model_delete(model, step[1], step[2])
            try:
                ns.delete(step[1], step[2], None)
            except ApplyError as exc:
                assert type(exc) is error, (step, exc)
            else:
                assert error is None, step
        elif kind == "rolled_back":
            before = (sorted(model), ns.digest)
            undo: list = []
            for key, is_delete in step[1]:
                try:
                    if is_delete:
                        ns.delete(key, True, None, undo)
                    else:
                        ns.put(txid, key, VALUE, None, undo)
                except ApplyError:
                    pass
            ns.rollback(undo)
            assert (list(key for key, _ in ns.items()), ns.digest) == before
        elif kind == "children":
            assert ns.children(step[1], step[2]) == model_children(model, step[1], step[2])
        elif kind == "list":
            _, prefix, limit, start_after = step
            assert (ns.list_prefix(prefix, limit, start_after)
                    == model_list(model, prefix, limit, start_after)), step
        elif kind == "count":
            assert ns.count_below(step[1]) == model_count(model, step[1])
        else:
            assert [key for key, _ in ns.items()] == sorted(model)
        assert ns.validate(txid) == [], step
    # A snapshot load of the final namespace holds the same keys, in order, and digest.
    pairs = [x for item in ns.items() for x in item]
    loaded = Namespace()
    loaded.load_sorted(pairs)
    loaded.finish_load()
    assert list(loaded.items()) == list(ns.items()) and loaded.digest == ns.digest
    assert loaded.validate(txid) == []
    assert loaded.children("") == model_children(model, "", None)
