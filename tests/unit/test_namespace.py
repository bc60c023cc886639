"""The namespace through State.apply: versions, CAS, merge, delete, listing, multis, digest."""

from __future__ import annotations

import msgpack
import pytest

from mwcluster.core import state as state_module
from mwcluster.core.records import Check, Delete, JobSubmit, Merge, Multi, Noop, Put
from mwcluster.core.state import State
from mwcluster.core.values import encode
from mwcluster.errors import (BadVersion, CorruptionError, InvalidRecord, MultiFailed, NoNode,
                              NodeExists, NotAMap, NotEmpty)


def put(key, value, expected=None):
    return Put(key, encode(value), expected)


def merge(key, patch, expected=None):
    return Merge(key, encode(patch), expected)


def keys_of(state):
    return [key for key, _ in state.ns.items()]


# --- put and versions ----------------------------------------------------------------------

def test_put_creates_version_1(state, checked_apply):
    checked_apply(state, Noop())
    assert checked_apply(state, put("/a", {"x": 1})) == 1
    stat = state.ns.stat("/a")
    assert (stat.version, stat.create_txid, stat.modify_txid) == (1, 2, 2)
    assert stat.value_bytes == len(encode({"x": 1}))
    assert state.ns.get("/a") == {"x": 1}
    value, stat2 = state.ns.get_encoded("/a")
    assert value == encode({"x": 1}) and stat2 == stat


def test_put_again_bumps_the_version_and_keeps_the_create_txid(state, checked_apply):
    checked_apply(state, put("/a", 1))
    checked_apply(state, Noop())
    assert checked_apply(state, put("/a", 2)) == 2
    assert checked_apply(state, put("/a", 3)) == 3
    stat = state.ns.stat("/a")
    assert (stat.version, stat.create_txid, stat.modify_txid) == (3, 1, 4)
    assert state.ns.get("/a") == 3


def test_missing_keys_and_nil_values_are_told_apart_by_stat(state, checked_apply):
    checked_apply(state, put("/nil", None))
    assert state.ns.get("/nil") is None and state.ns.stat("/nil").version == 1
    assert state.ns.get("/missing") is None and state.ns.stat("/missing") is None
    assert state.ns.get_encoded("/missing") is None


def test_a_recreated_key_starts_over_at_version_1(state, checked_apply):
    checked_apply(state, put("/a", 1))
    checked_apply(state, put("/a", 2))
    checked_apply(state, Delete("/a"))
    checked_apply(state, put("/a", 3))
    stat = state.ns.stat("/a")
    assert (stat.version, stat.create_txid, stat.modify_txid) == (1, 4, 4)


def test_parents_are_implicit(state, checked_apply):
    checked_apply(state, put("/a/b/c", 1))
    assert state.ns.stat("/a") is None and state.ns.stat("/a/b") is None
    assert len(state.ns) == 1


# --- compare and set -----------------------------------------------------------------------

def test_cas_expected_0_means_must_not_exist(state, checked_apply, assert_refused):
    assert checked_apply(state, put("/a", 1, expected=0)) == 1
    exc = assert_refused(state, put("/a", 2, expected=0), NodeExists)
    assert str(exc) == "/a exists (version 1) and the operation required that it did not"


def test_cas_expected_n(state, checked_apply, assert_refused):
    checked_apply(state, put("/a", 1))
    assert checked_apply(state, put("/a", 2, expected=1)) == 2
    exc = assert_refused(state, put("/a", 3, expected=1), BadVersion)
    assert str(exc) == "/a is at version 2, not the expected 1"
    assert_refused(state, put("/a", 3, expected=3), BadVersion)
    exc = assert_refused(state, put("/missing", 1, expected=1), NoNode)
    assert str(exc) == "/missing does not exist (expected version 1)"
    assert state.ns.get("/a") == 2


# --- merge ---------------------------------------------------------------------------------

def test_merge_creates_a_missing_key(state, checked_apply):
    assert checked_apply(state, merge("/m", {"a": 1, "gone": None})) == 1
    assert state.ns.get("/m") == {"a": 1}


def test_merge_merges_maps_and_bumps_the_version(state, checked_apply):
    checked_apply(state, put("/m", {"a": 1, "b": {"c": 2, "d": 3}}))
    assert checked_apply(state, merge("/m", {"a": None, "b": {"c": 9}, "e": [1]})) == 2
    assert state.ns.get("/m") == {"b": {"c": 9, "d": 3}, "e": [1]}
    assert state.ns.stat("/m").create_txid == 1


@pytest.mark.parametrize("current", [[1, 2], "text", 5, None, b"raw"], ids=repr)
def test_merge_refuses_a_non_map(state, checked_apply, assert_refused, current):
    checked_apply(state, put("/m", current))
    exc = assert_refused(state, merge("/m", {"a": 1}), NotAMap)
    assert "/m" in str(exc) and "use put" in str(exc)


def test_merge_wants_a_map_patch(state, checked_apply, assert_refused):
    checked_apply(state, put("/m", {"a": 1}))
    assert_refused(state, merge("/m", [1]), InvalidRecord, match="patch must be a map")
    assert_refused(state, merge("/new", "x"), InvalidRecord, match="patch must be a map")


def test_merge_with_cas(state, checked_apply, assert_refused):
    assert checked_apply(state, merge("/m", {"a": 1}, expected=0)) == 1
    assert_refused(state, merge("/m", {"a": 2}, expected=0), NodeExists)
    assert_refused(state, merge("/m", {"a": 2}, expected=2), BadVersion)
    assert_refused(state, merge("/other", {"a": 2}, expected=1), NoNode)
    assert checked_apply(state, merge("/m", {"b": 2}, expected=1)) == 2
    assert state.ns.get("/m") == {"a": 1, "b": 2}


# --- delete --------------------------------------------------------------------------------

def test_delete_a_key(state, checked_apply, assert_refused):
    checked_apply(state, put("/a", 1))
    assert checked_apply(state, Delete("/a")) == 1
    assert state.ns.stat("/a") is None and len(state.ns) == 0
    exc = assert_refused(state, Delete("/a"), NoNode)
    assert str(exc) == "/a does not exist"


def test_delete_refuses_keys_with_keys_below(state, checked_apply, assert_refused):
    checked_apply(state, put("/a", 1))
    checked_apply(state, put("/a/b", 1))
    checked_apply(state, put("/a/b/c", 1))
    exc = assert_refused(state, Delete("/a"), NotEmpty)
    assert "/a has 2 keys below it" in str(exc)
    # an implicit parent with keys below is not empty either
    checked_apply(state, put("/q/r", 1))
    assert_refused(state, Delete("/q"), NotEmpty)
    checked_apply(state, Delete("/a/b/c"))
    checked_apply(state, Delete("/a/b"))
    checked_apply(state, Delete("/a"))


def test_recursive_delete_removes_the_subtree_and_only_it(state, checked_apply):
    inside = ["/a/b", "/a/b/c", "/a/b/c/d", "/a/b/z"]
    outside = ["/a", "/a/bc", "/a/b!", "/a/b.x", "/a/b-1", "/a/b0", "/a/c", "/b", "/a/bb/b"]
    for key in inside + outside:
        checked_apply(state, put(key, key))
    assert checked_apply(state, Delete("/a/b", recursive=True)) == len(inside)
    assert keys_of(state) == sorted(outside)


def test_recursive_delete_of_an_implicit_parent(state, checked_apply, assert_refused):
    checked_apply(state, put("/p/x", 1))
    checked_apply(state, put("/p/y/z", 1))
    checked_apply(state, put("/pq", 1))
    assert_refused(state, Delete("/p"), NotEmpty)
    assert checked_apply(state, Delete("/p", recursive=True)) == 2
    assert keys_of(state) == ["/pq"]
    assert_refused(state, Delete("/p", recursive=True), NoNode)


def test_recursive_delete_of_a_leaf(state, checked_apply):
    checked_apply(state, put("/leaf", 1))
    assert checked_apply(state, Delete("/leaf", recursive=True)) == 1
    assert len(state.ns) == 0


def test_delete_with_cas(state, checked_apply, assert_refused):
    checked_apply(state, put("/a", 1))
    checked_apply(state, put("/a", 2))
    checked_apply(state, put("/a/child", 1))
    assert_refused(state, Delete("/a", True, 1), BadVersion)
    assert_refused(state, Delete("/a", True, 0), NodeExists)
    assert_refused(state, Delete("/missing", False, 1), NoNode)
    assert checked_apply(state, Delete("/a", True, 2)) == 2
    assert len(state.ns) == 0


# --- listing -------------------------------------------------------------------------------

@pytest.fixture
def tree(state, apply_all):
    # /a is both a key and the implicit parent of /a/b...; /b exists only as a parent.
    apply_all(state, [put(k, k) for k in [
        "/a", "/a-1", "/a!", "/a/b", "/a/b/c", "/a/d", "/a/d/e/f", "/b/x", "/b/y/z", "/c"]])
    return state


def test_children_of_the_root(tree):
    names = tree.ns.children("")
    assert len(names) == len(set(names)), f"a name is listed twice: {names}"
    assert set(names) == {"a", "a-1", "a!", "b", "c"}


def test_children_of_a_key_and_of_implicit_parents(tree):
    assert tree.ns.children("/a") == ["b", "d"]
    assert tree.ns.children("/b") == ["x", "y"]     # /b is not a key
    assert tree.ns.children("/a/d") == ["e"]        # neither is /a/d/e
    assert tree.ns.children("/a/d/e") == ["f"]
    assert tree.ns.children("/c") == []
    assert tree.ns.children("/nothing") == []


def test_children_limit(tree):
    assert tree.ns.children("/a", limit=1) == ["b"]
    assert tree.ns.children("/b", limit=0) == []
    assert len(tree.ns.children("", limit=3)) == 3


def test_list_prefix(tree):
    ns = tree.ns
    assert ns.list_prefix("/a/") == ["/a/b", "/a/b/c", "/a/d", "/a/d/e/f"]
    assert ns.list_prefix("/a") == ["/a", "/a!", "/a-1", "/a/b", "/a/b/c", "/a/d", "/a/d/e/f"]
    assert ns.list_prefix("/a/", limit=2) == ["/a/b", "/a/b/c"]
    assert ns.list_prefix("/a/", limit=0) == []
    assert ns.list_prefix("/a/", start_after="/a/b") == ["/a/b/c", "/a/d", "/a/d/e/f"]
    assert ns.list_prefix("/a/", start_after="/a/b/c", limit=1) == ["/a/d"]
    assert ns.list_prefix("/a/", start_after="/a/c") == ["/a/d", "/a/d/e/f"]  # not a key
    assert ns.list_prefix("/a/", start_after="/") == ns.list_prefix("/a/")   # before prefix
    assert ns.list_prefix("/a/", start_after="/a/d/e/f") == []
    assert ns.list_prefix("/a/", start_after="/z") == []
    assert ns.list_prefix("/zz") == []
    assert ns.list_prefix("") == keys_of(tree)


def test_list_prefix_pages_through_everything(tree):
    pages, after = [], None
    while True:
        page = tree.ns.list_prefix("/", limit=3, start_after=after)
        if not page:
            break
        pages.extend(page)
        after = page[-1]
    assert pages == keys_of(tree)


def test_count_below(tree):
    assert tree.ns.count_below("/a") == 4
    assert tree.ns.count_below("/b") == 2
    assert tree.ns.count_below("/c") == 0
    assert tree.ns.count_below("") == len(tree.ns)


# --- failed applies change nothing ----------------------------------------------------------

def test_refused_records_leave_the_state_unchanged(tree, assert_refused):
    txid = tree.txid
    for rec, error in [
        (put("/a", 1, expected=0), NodeExists), (put("/a", 1, expected=9), BadVersion),
        (put("/new", 1, expected=1), NoNode), (merge("/a", {"x": 1}), NotAMap),
        (Delete("/a"), NotEmpty), (Delete("/missing"), NoNode),
        (Delete("/a", True, 7), BadVersion),
        (Multi((put("/new", 1), Delete("/a", True), Check("/c", 5))), MultiFailed),
    ]:
        assert_refused(tree, rec, error)
    assert tree.txid == txid


def test_apply_wants_the_next_txid_and_a_record(state, checked_apply):
    with pytest.raises(InvalidRecord, match="does not follow"):
        state.apply(2, put("/a", 1))
    with pytest.raises(InvalidRecord, match="does not follow"):
        state.apply(0, put("/a", 1))
    with pytest.raises(InvalidRecord, match="not a record"):
        state.apply(1, ("/a", b"\x01", None))
    assert state.txid == 0 and len(state.ns) == 0
    checked_apply(state, put("/a", 1))
    with pytest.raises(InvalidRecord):
        state.apply(1, put("/a", 2))


def test_noop_advances_the_txid_only(state, checked_apply):
    checked_apply(state, put("/a", 1))
    digest, image = state.digest, state.image_bytes()
    assert checked_apply(state, Noop("marker")) is None
    assert state.txid == 2 and state.digest == digest
    assert State.from_image(state.image_chunks()).ns.stat("/a").modify_txid == 1
    assert image != state.image_bytes()   # the txid in the image moved


# --- multi ---------------------------------------------------------------------------------

def test_multi_applies_everything_at_one_txid(state, checked_apply):
    checked_apply(state, put("/old", {"a": 1}))
    checked_apply(state, put("/gone/x", 1))
    results = checked_apply(state, Multi((
        put("/new", 1, expected=0), merge("/old", {"b": 2}, expected=1),
        Delete("/gone", recursive=True), Check("/old", 2))))
    assert results == [1, 2, 1, None]
    assert state.ns.get("/old") == {"a": 1, "b": 2}
    assert state.ns.stat("/new").create_txid == 3 and state.ns.stat("/old").modify_txid == 3
    assert keys_of(state) == ["/new", "/old"]


@pytest.mark.parametrize("failing,error", [
    (put("/a", 9, expected=0), NodeExists),
    (Check("/a", 5), BadVersion),
    (Check("/missing", 1), NoNode),
    (Delete("/dir"), NotEmpty),
    (merge("/a", {"x": 1}), NotAMap),
    (merge("/a", [1]), InvalidRecord),
    (JobSubmit("j", "n", "h", 0, 1, [["i", {}]], 0), InvalidRecord),
    (Noop(), InvalidRecord),
])
def test_a_failing_op_in_the_middle_leaves_nothing_applied(state, checked_apply,
                                                          assert_refused, failing, error):
    checked_apply(state, put("/a", "scalar"))
    checked_apply(state, put("/dir/x", 1))
    checked_apply(state, put("/dir/y", 1))
    multi = Multi((put("/a", "changed"), put("/fresh", 1), Delete("/dir/x"),
                   Delete("/dir", recursive=True), put("/dir/y", "again"),
                   failing, put("/after", 1)))
    exc = assert_refused(state, multi, MultiFailed)
    assert exc.index == 5
    assert isinstance(exc.cause, error)
    assert str(exc).startswith("operation 5 of the multi failed: ")
    assert keys_of(state) == ["/a", "/dir/x", "/dir/y"]
    assert state.ns.get("/a") == "scalar"


def test_a_failing_first_op(state, assert_refused):
    exc = assert_refused(state, Multi((Check("/a", 1), put("/b", 1))), MultiFailed)
    assert exc.index == 0 and isinstance(exc.cause, NoNode)


def test_multi_ops_see_the_effect_of_earlier_ops(state, checked_apply):
    assert checked_apply(state, Multi((put("/k", 1), Delete("/k")))) == [1, 1]
    assert len(state.ns) == 0
    assert checked_apply(state, Multi((put("/k", 1), put("/k", 2, expected=1),
                                       Check("/k", 2)))) == [1, 2, None]
    stat = state.ns.stat("/k")
    assert (stat.version, stat.create_txid, stat.modify_txid) == (2, 2, 2)
    assert checked_apply(state, Multi((Delete("/k"), put("/k", 3, expected=0)))) == [1, 1]
    assert state.ns.stat("/k").version == 1 and state.ns.get("/k") == 3


def test_a_multi_inside_a_multi_is_refused(state, assert_refused):
    exc = assert_refused(state, Multi((put("/a", 1), Multi((put("/b", 1),)))), MultiFailed)
    assert exc.index == 1 and isinstance(exc.cause, InvalidRecord)


# --- the digest ----------------------------------------------------------------------------

def test_states_fed_the_same_records_are_equal(apply_all):
    records = [put("/a", 1), put("/b/c", [1]), merge("/a/m", {"x": 1}), Delete("/b/c"),
               put("/a", 2)]
    one, two = apply_all(State(), records), apply_all(State(), records)
    assert one.digest == two.digest
    assert one.image_bytes() == two.image_bytes()


def test_equivalent_histories_give_equal_digests(apply_all):
    one = apply_all(State(), [Multi((put("/a", 1), put("/b", 2)))])
    two = apply_all(State(), [Multi((put("/b", 2), put("/a", 1)))])
    assert one.digest == two.digest and one.image_bytes() == two.image_bytes()
    three = apply_all(State(), [put("/x", 1), Delete("/x")])
    four = apply_all(State(), [Noop(), Noop()])
    assert three.digest == four.digest == State().digest == 0
    assert three.image_bytes() == four.image_bytes()


def test_different_states_have_different_digests(apply_all):
    base = [put("/a", 1)]
    variants = [[put("/a", 2)], [put("/b", 1)],
                [Noop(), put("/a", 1)],          # same value, other txids
                [put("/a", 1), put("/a", 1)],    # same value, other version
                [put("/a", "1")], [put("/a", 1.0)], [put("/a", True)]]
    digests = {apply_all(State(), base).digest}
    for records in variants:
        digests.add(apply_all(State(), records).digest)
    assert len(digests) == len(variants) + 1


def test_the_digest_changes_on_every_successful_mutation(state, checked_apply):
    for rec in [put("/a", 1), put("/a", 1), put("/a", {}), merge("/a", {}),
                merge("/a", {"k": 1}), put("/a/b", None), Delete("/a/b"),
                Multi((put("/x", 1), put("/y", 1))), Multi((Check("/x", 1), put("/x", 1))),
                Delete("/x"), Delete("/y"), Delete("/a")]:
        before = state.digest
        checked_apply(state, rec)
        assert state.digest != before, f"{rec!r} left the digest unchanged"
    assert state.digest == 0   # everything was deleted again


def test_deleting_what_was_added_restores_the_digest(state, checked_apply):
    checked_apply(state, put("/a", 1))
    digest = state.digest
    checked_apply(state, put("/a/b", None))
    checked_apply(state, Delete("/a/b"))
    assert state.digest == digest


# --- the state image -----------------------------------------------------------------------

def _sample_state(apply_all):
    return apply_all(State(), [put("/a", {"n": 1}), put("/a/b/c", "MARKER-VALUE-1234"),
                               merge("/m", {"x": [1, 2]}), put("/a", {"n": 2}), Noop(),
                               put("/z", None), put("/e", b"bytes")])


def test_image_round_trip_reproduces_txid_digest_and_contents(apply_all):
    original = _sample_state(apply_all)
    loaded = State.from_image(original.image_chunks())
    assert loaded.txid == original.txid == 7
    assert loaded.digest == original.digest
    assert list(loaded.ns.items()) == list(original.ns.items())
    assert loaded.ns.children("") == original.ns.children("")
    assert loaded.image_bytes() == original.image_bytes()
    assert loaded.validate() == []


def test_image_of_the_empty_state(state):
    loaded = State.from_image(state.image_chunks())
    assert (loaded.txid, loaded.digest, len(loaded.ns)) == (0, 0, 0)


def test_image_in_many_namespace_chunks_and_odd_feed_boundaries(apply_all, monkeypatch):
    monkeypatch.setattr(state_module, "NS_CHUNK_KEYS", 2)
    original = apply_all(State(), [put(f"/k/{i:03d}", i) for i in range(11)])
    chunks = list(original.image_chunks())
    assert sum(1 for c in chunks if b"\xa2ns" in c[:4]) == 6
    data = b"".join(chunks)
    by_byte = (data[i:i + 1] for i in range(len(data)))
    loaded = State.from_image(by_byte)
    assert loaded.image_bytes() == data and loaded.ns.list_prefix("/k/") == keys_of(original)


def test_a_loaded_state_goes_on_like_the_original(apply_all, checked_apply):
    original = _sample_state(apply_all)
    loaded = State.from_image(original.image_chunks())
    for rec in [put("/a/b/d", 1), Delete("/a", recursive=True), merge("/m", {"x": None})]:
        assert checked_apply(original, rec) == checked_apply(loaded, rec)
        assert loaded.image_bytes() == original.image_bytes()


def test_a_flipped_byte_inside_a_value_is_detected(apply_all):
    image = _sample_state(apply_all).image_bytes()
    at = image.index(b"MARKER-VALUE-1234") + 3
    damaged = image[:at] + bytes([image[at] ^ 0x01]) + image[at + 1:]
    with pytest.raises(CorruptionError, match="snap-1.mws"):
        State.from_image([damaged], source="snap-1.mws")


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_a_truncated_image_is_refused(apply_all, cut):
    image = _sample_state(apply_all).image_bytes()
    with pytest.raises(CorruptionError, match="snap-1.mws"):
        State.from_image([image[:-cut]], source="snap-1.mws")


def test_images_that_are_not_images_are_refused():
    pack = msgpack.packb
    for data in [b"", b"\xc1\xc1", pack(["end", 0]), pack(["meta", {"format": 1, "txid": 0,
                                                                     "digest": 0}]),
                 pack(["meta", {"format": 99, "txid": 0, "digest": 0}]) + pack(["end", 0]),
                 pack(["meta", {"format": 1, "txid": 0, "digest": 0}]) + pack(["what", 1])
                 + pack(["end", 0]),
                 pack(["meta", {"format": 1, "txid": 0, "digest": 1}]) + pack(["end", 1]),
                 pack(["meta", {"format": 1, "txid": 0, "digest": 0}]) + pack(["end", 1]),
                 pack(["meta", 5]) + pack(["end", 0]), pack([]) + pack(["end", 0]),
                 pack(["meta", {"format": 1, "txid": 0}]) + pack(["end", 0]),
                 pack(["meta", {"format": 1, "txid": 0, "digest": 0}]) + pack(["ns", [1, b"x"]])
                 + pack(["end", 0])]:
        with pytest.raises(CorruptionError):
            State.from_image([data])
