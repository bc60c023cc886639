"""Values: the canonical encoding of what a key holds, and the merge of maps.

Values are anything msgpack carries (maps, lists, strings, bytes, numbers, booleans, nil). The
state keeps each value as its msgpack encoding (strings as str, bytes as bin), so that a value
costs its encoded size in memory, hashes without re-encoding and is served without re-encoding.
Decoding uses `strict_map_key=False` so maps may have any scalar key, as msgpack allows.
"""

from __future__ import annotations

from typing import Any

import msgpack

from mwcluster.errors import InvalidRecord, NotAMap

_packer_opts = {"use_bin_type": True}


def encode(value: Any) -> bytes:
    """Encode a value canonically; raise InvalidRecord for what msgpack cannot carry."""
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRecord(f"value cannot be encoded: {exc}") from None


def decode(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def check_encoded(data: object, max_bytes: int) -> bytes:
    """Check that `data` is exactly one well-formed msgpack object within the size limit."""
    if type(data) is not bytes:
        raise InvalidRecord(f"an encoded value must be bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise InvalidRecord(
            f"value is {len(data)} bytes encoded; the limit is {max_bytes} "
            "(store large data elsewhere and keep a reference in the value)")
    try:
        msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise InvalidRecord(f"value is not a single well-formed msgpack object: {exc}") from None
    return data


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply `patch` to `target` as a JSON merge patch (RFC 7386), without mutating either.

    Maps merge recursively; a nil in the patch removes that field; anything else replaces.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, sub in patch.items():
        if sub is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), sub)
    return result


def merge_encoded(current: bytes | memoryview | None, patch: bytes, key: str) -> bytes:
    """Merge an encoded map patch into an encoded map value (None: the key does not exist)."""
    patch_value = decode(patch)
    if not isinstance(patch_value, dict):
        raise InvalidRecord(f"merge into {key}: the patch must be a map")
    if current is None:
        return encode(merge_patch({}, patch_value))
    value = decode(current)
    if not isinstance(value, dict):
        raise NotAMap(f"merge into {key}: the current value is a {type(value).__name__}, "
                      "not a map; use put to replace it")
    return encode(merge_patch(value, patch_value))
