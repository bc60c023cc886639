"""Keys (what a valid key is, prefixes, subtree bounds) and values (encoding, merge patches)."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mwcluster.core import keys, values
from mwcluster.errors import ApplyError, InvalidRecord, NotAMap

# --- keys ----------------------------------------------------------------------------------

VALID_KEYS = [
    "/a",
    "/a/b/c",
    "/datasets/logs/2026-11-26/part-00017",
    "/...",             # only '.' and '..' are special, not every dotted name
    "/.hidden",
    "/a..b/c.",
    "/a b/with space",
    "/ünïcødé/キー",
    "/emoji/\U0001f600",
    "/" + "x" * 1023,   # exactly the 1024-character limit
]

INVALID_KEYS = [
    ("", "empty"),
    ("/", "the root is not a key"),
    ("a", "relative"),
    ("a/b", "relative"),
    ("/a/", "trailing slash"),
    ("/a//b", "empty component"),
    ("//a", "empty component"),
    ("/.", "'.' component"),
    ("/./a", "'.' component"),
    ("/a/.", "'.' component"),
    ("/..", "'..' component"),
    ("/a/../b", "'..' component"),
    ("/a/..", "'..' component"),
    ("/a\x00b", "NUL"),
    ("/a\nb", "newline"),
    ("/a\n", "newline at the end (where a regex '$' would match)"),
    ("/a\tb", "tab"),
    ("/a\x1f", "C0 control"),
    ("/a\x7f", "DEL"),
    ("/a\x85", "C1 control (NEL)"),
    ("/a\x9f", "C1 control"),
    ("/a\ud800", "lone surrogate: cannot be UTF-8 encoded"),
    ("/" + "x" * 1024, "too long"),
]


@pytest.mark.parametrize("key", VALID_KEYS)
def test_valid_keys_are_returned_unchanged(key):
    assert keys.check_key(key) == key


@pytest.mark.parametrize("key,why", INVALID_KEYS, ids=[why for _, why in INVALID_KEYS])
def test_invalid_keys_are_refused(key, why):
    with pytest.raises(InvalidRecord):
        keys.check_key(key)


@pytest.mark.parametrize("key", [None, b"/a", 1, ["/a"], ("/a",)])
def test_a_key_must_be_a_str(key):
    with pytest.raises(InvalidRecord, match="must be a string"):
        keys.check_key(key)


def test_a_str_subclass_is_not_a_key():
    class Path(str):
        pass

    with pytest.raises(InvalidRecord, match="must be a string"):
        keys.check_key(Path("/a"))


def test_key_length_limit_is_in_characters_and_named_in_the_message():
    assert keys.check_key("/abc", max_chars=4) == "/abc"
    with pytest.raises(InvalidRecord, match="limit is 3"):
        keys.check_key("/abc", max_chars=3)
    assert keys.check_key("/" + "é" * 9, max_chars=10)   # 19 UTF-8 bytes, 10 characters


def test_invalid_key_error_is_an_apply_error_that_says_what_a_key_is():
    with pytest.raises(ApplyError, match="absolute path"):
        keys.check_key("relative/key")


@pytest.mark.parametrize("path,expected", [
    ("/", ""), ("", ""), ("/a", "/a"), ("/a/", "/a"), ("/a/b/", "/a/b"), ("/a/b", "/a/b"),
])
def test_check_prefix_accepts_the_root_and_keys(path, expected):
    assert keys.check_prefix(path) == expected


@pytest.mark.parametrize("path", ["//", "/a//", "a", "a/", "/./", "/a/../", None, 1, b"/"])
def test_check_prefix_refuses_what_is_not_a_key(path):
    with pytest.raises(InvalidRecord):
        keys.check_prefix(path)


def test_subtree_bounds_hold_the_subtree_and_nothing_else():
    lo, hi = keys.subtree_bounds("/a/b")
    inside = ["/a/b/c", "/a/b/c/d", "/a/b/\U0010ffff"]
    outside = ["/a/b", "/a/bc", "/a/b!", "/a/b.x", "/a/b-1", "/a/b0", "/a/c", "/a"]
    assert all(lo <= k < hi for k in inside)
    assert not any(lo <= k < hi for k in outside)
    root_lo, root_hi = keys.subtree_bounds("")
    assert all(root_lo <= k < root_hi for k in inside + outside)


# --- values: encoding ----------------------------------------------------------------------

SAMPLE_VALUES = [
    None, True, False, 0, -1, 2**64 - 1, -(2**63), 1.5, -0.0, "", "text", "ünï", b"",
    b"\x00bytes", [], [1, [2, [3]]], {}, {"a": {"b": [1, "x", None]}}, {1: "int key"},
]


@pytest.mark.parametrize("value", SAMPLE_VALUES, ids=repr)
def test_encode_decode_round_trip(value):
    data = values.encode(value)
    assert type(data) is bytes
    assert values.decode(data) == value
    assert type(values.decode(data)) is type(value)
    assert values.decode(memoryview(data)) == value


def test_strings_and_bytes_stay_apart():
    assert values.decode(values.encode("ab")) == "ab"
    assert values.decode(values.encode(b"ab")) == b"ab"
    assert values.encode("ab") != values.encode(b"ab")


def test_nan_round_trips():
    assert math.isnan(values.decode(values.encode(float("nan"))))


_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=12)


@settings(max_examples=80, deadline=None)
@given(_values)
def test_encode_decode_round_trip_property(value):
    data = values.encode(value)
    assert values.decode(data) == value
    assert values.check_encoded(data, 1 << 20) is data
    assert values.encode(values.decode(data)) == data


@pytest.mark.parametrize("value", [object(), 2**64, -(2**63) - 1, {"a": {1, 2}}],
                         ids=["object", "too big", "too small", "set"])
def test_encode_refuses_what_msgpack_cannot_carry(value):
    with pytest.raises(InvalidRecord, match="cannot be encoded"):
        values.encode(value)


def test_check_encoded_accepts_one_object_within_the_limit():
    data = values.encode({"a": [1, 2, 3]})
    assert values.check_encoded(data, len(data)) is data


@pytest.mark.parametrize("data", [
    b"",                                  # nothing at all
    b"\xc1",                              # the one byte msgpack never uses
    b"\x81",                              # a map header with no entries following
    b"\xa5abc",                           # a str shorter than its header says
    values.encode(1) + b"\x00",           # trailing garbage
    values.encode("x") + values.encode("y"),  # two objects
], ids=["empty", "never-used", "truncated map", "truncated str", "trailing", "two objects"])
def test_check_encoded_refuses_what_is_not_exactly_one_msgpack_object(data):
    with pytest.raises(InvalidRecord, match="well-formed"):
        values.check_encoded(data, 1 << 20)


@pytest.mark.parametrize("data", ["text", bytearray(b"\x01"), memoryview(b"\x01"), None, 1])
def test_check_encoded_wants_bytes(data):
    with pytest.raises(InvalidRecord, match="must be bytes"):
        values.check_encoded(data, 1 << 20)


def test_check_encoded_refuses_oversize_values_and_names_the_limit():
    data = values.encode("x" * 100)
    with pytest.raises(InvalidRecord, match=f"{len(data)} bytes encoded; the limit is 50"):
        values.check_encoded(data, 50)
    # The size check comes first: an oversize value is refused without being decoded.
    with pytest.raises(InvalidRecord, match="limit"):
        values.check_encoded(b"\xc1" * 100, 50)


# --- values: merge patches (RFC 7386) -----------------------------------------------------

# The test cases of RFC 7386, appendix A, plus a few of our own.
RFC_7386_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    # ours: deep merge keeps siblings at every level; removing a missing field is a no-op
    ({"a": {"b": {"c": 1, "d": 2}, "e": 3}}, {"a": {"b": {"c": 9}}},
     {"a": {"b": {"c": 9, "d": 2}, "e": 3}}),
    ({"a": 1}, {"zz": None}, {"a": 1}),
    ({"a": {"b": 1}}, {"a": 5}, {"a": 5}),
    ({"a": 5}, {"a": {"b": 1, "c": None}}, {"a": {"b": 1}}),
    ({1: "x", 2: "y"}, {1: None}, {2: "y"}),
]


@pytest.mark.parametrize("target,patch,expected", RFC_7386_CASES)
def test_merge_patch_follows_rfc_7386(target, patch, expected):
    assert values.merge_patch(target, patch) == expected


def test_merge_patch_mutates_neither_input():
    target = {"a": {"b": 1, "c": 2}, "d": [1]}
    patch = {"a": {"b": None, "x": {"y": 1}}, "d": None}
    target_copy = msgpack.unpackb(msgpack.packb(target))
    patch_copy = msgpack.unpackb(msgpack.packb(patch))
    assert values.merge_patch(target, patch) == {"a": {"c": 2, "x": {"y": 1}}}
    assert target == target_copy
    assert patch == patch_copy


def test_merge_encoded_into_nothing_creates_the_map_without_nils():
    merged = values.merge_encoded(None, values.encode({"a": 1, "b": None, "c": {"d": None}}),
                                  "/k")
    assert values.decode(merged) == {"a": 1, "c": {}}


def test_merge_encoded_merges_maps():
    current = values.encode({"a": 1, "b": {"c": 2}})
    merged = values.merge_encoded(memoryview(current), values.encode({"b": {"d": 3}, "a": None}),
                                  "/k")
    assert values.decode(merged) == {"b": {"c": 2, "d": 3}}


@pytest.mark.parametrize("current", [[1], 5, "s", None, b"b"], ids=repr)
def test_merge_encoded_into_a_non_map_raises_not_a_map(current):
    with pytest.raises(NotAMap, match="merge into /k") as info:
        values.merge_encoded(values.encode(current), values.encode({"a": 1}), "/k")
    assert isinstance(info.value, ApplyError)


@pytest.mark.parametrize("patch", [[1], 5, "s", None], ids=repr)
def test_merge_encoded_wants_a_map_patch(patch):
    with pytest.raises(InvalidRecord, match="patch must be a map"):
        values.merge_encoded(values.encode({"a": 1}), values.encode(patch), "/k")
