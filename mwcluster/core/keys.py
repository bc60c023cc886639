"""Keys of the namespace: what a valid key is, and how keys relate as paths.

A key is an absolute, slash-separated path: `/datasets/logs/2026-11-26/part-00017`. Parents
are implicit (like etcd, unlike ZooKeeper): `/a/b` may exist without `/a`. Components are
non-empty, are not `.` or `..`, and hold no control characters. The root `/` itself is not a
key, but it can be listed.
"""

from __future__ import annotations

import re

from mwcluster.errors import InvalidRecord

# C0 and C1 control characters are refused, and so are lone surrogates, which no UTF-8
# encoder (msgpack, the digest) accepts.
_KEY_RE = re.compile(r"(?:/(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f-\x9f\ud800-\udfff]+)+")

# The character right after "/" in code-point order: every key under "P/" sorts below "P0".
_AFTER_SLASH = chr(ord("/") + 1)


# Keys that passed the pattern recently: most writes touch keys seen before, and a dict
# lookup costs a tenth of the regular expression. Bounded; cleared whole when full.
_VALID_CACHE: dict[str, None] = {}
_VALID_CACHE_MAX = 1 << 16


def check_key(key: object, max_chars: int = 1024) -> str:
    """Return `key` if it is a valid key, else raise InvalidRecord saying what is wrong."""
    if type(key) is str and key in _VALID_CACHE and len(key) <= max_chars:
        return key
    if type(key) is not str:
        raise InvalidRecord(f"a key must be a string, not {type(key).__name__}")
    if len(key) > max_chars:
        raise InvalidRecord(f"key is {len(key)} characters long; the limit is {max_chars}")
    if _KEY_RE.fullmatch(key) is None:
        raise InvalidRecord(
            f"invalid key {key[:80]!r}: a key is an absolute path like /jobs/etl/part-1, with "
            "non-empty components, no '.' or '..' components, no trailing '/' and no control "
            "characters")
    if len(_VALID_CACHE) >= _VALID_CACHE_MAX:
        _VALID_CACHE.clear()
    _VALID_CACHE[key] = None
    return key


def check_prefix(path: object) -> str:
    """A path to list under: a valid key or the root '/'. Returns it without a trailing '/'."""
    if path == "/" or path == "":
        return ""
    if type(path) is str and path.endswith("/") and len(path) > 1:
        path = path[:-1]
    return check_key(path)


def subtree_bounds(path: str) -> tuple[str, str]:
    """Keys strictly below `path` (a key or '' for the root) lie in [lo, hi)."""
    return path + "/", path + _AFTER_SLASH
