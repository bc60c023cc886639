"""The namespace: hierarchical keys mapping to versioned, structured values.

Each key maps to one immutable `bytes` entry: a 32-byte header (version, create txid, modify
txid, entry hash; four little-endian u64) followed by the value's msgpack encoding. The entry
hash is this entry's share of the state digest, kept so that replacing or deleting an entry
does not hash the old one again. One object per key
keeps memory near the encoded size and lets `get` serve the value bytes as they are. A
KeyIndex (key_index.py) of the keys serves `children` and prefix listings without scanning
everything; a new key only joins the index's unordered pending keys, merged in bulk when an
ordered read needs them or more than PENDING_MAX wait.

Every mutation may be given an undo list; on failure inside a multi the caller rolls the
namespace back with `rollback(undo)`, so a multi applies all of its operations or none.

With `changes` set (a ChangeLog's event list, core/changes.py), every new entry and every
deletion is appended to it as (txid, key, entry or None), for watches; a rollback takes
the failed record's events back.

Leases (ephemeral keys, docs/coordination.md): `leases` maps a lease id (the txid of its
grant) to its TTL in ms, `lease_keys` a lease to the keys attached to it, `lease_of` a key
to its lease. A key is attached by `attach` (a put that names a lease) and detached when it
is deleted or attached to another lease; a put that names no lease leaves it attached, as
ZooKeeper's setData leaves an ephemeral node ephemeral. Each lease and each attachment is a
digest entry (tags b"l" and b"a").
"""

from __future__ import annotations

import struct
from hashlib import blake2b as _blake2b
from typing import Any, NamedTuple

from mwcluster.core import values
from mwcluster.core.digest import MASK, entry_hash
from mwcluster.core.key_index import PENDING_MAX, KeyIndex
from mwcluster.core.keys import subtree_bounds
from mwcluster.errors import BadVersion, InvalidRecord, NodeExists, NoNode, NotEmpty

_from_bytes = int.from_bytes
_META = struct.Struct("<QQQQ")      # version, create txid, modify txid, entry hash
_HEAD = struct.Struct("<QQQ")       # the part of the header the hash covers
_pack_head = _HEAD.pack
_join = b"".join
META_BYTES = _META.size


class Stat(NamedTuple):
    version: int
    create_txid: int
    modify_txid: int
    value_bytes: int


def make_entry(key: str, version: int, created: int, modified: int, value: bytes
               ) -> tuple[bytes, int]:
    """The entry bytes and its hash: BLAKE2b-64 of b"k" + key + NUL + head + value (this is
    entry_hash(b"k", ...) of digest.py, inlined because it runs on every put)."""
    head = _pack_head(version, created, modified)
    # The digest's 8 bytes, read little-endian, are the hash: they go into the entry as they are.
    h = _blake2b(_join((b"k", key.encode(), b"\0", head, value)), digest_size=8).digest()
    return head + h + value, _from_bytes(h, "little")


def recompute_entry_hash(key: str, entry: bytes) -> int:
    version, created, modified, _ = _META.unpack_from(entry)
    return make_entry(key, version, created, modified, entry[META_BYTES:])[1]


class Namespace:
    __slots__ = ("_entries", "_keys", "_pending", "digest", "max_merged_value_bytes",
                 "changes", "leases", "lease_keys", "lease_of")

    def __init__(self) -> None:
        self._entries: dict[str, bytes] = {}
        self._keys = KeyIndex()
        self._pending = self._keys.pending    # put adds new keys here directly
        self.digest = 0
        # Set by the live path (Engine) to its max_value_bytes: a merge whose result would be
        # larger is refused. None on replay and in replicas: what was accepted must replay.
        self.max_merged_value_bytes: int | None = None
        self.changes: list | None = None
        self.leases: dict[int, int] = {}
        self.lease_keys: dict[int, set[str]] = {}
        self.lease_of: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    # --- reads ---------------------------------------------------------------------------

    def entry(self, key: str) -> bytes | None:
        return self._entries.get(key)

    def get(self, key: str) -> Any:
        """The decoded value, or None when the key does not exist (use stat to tell nil)."""
        entry = self._entries.get(key)
        return None if entry is None else values.decode(memoryview(entry)[META_BYTES:])

    def get_encoded(self, key: str) -> tuple[bytes, Stat] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        return entry[META_BYTES:], Stat(*_META.unpack_from(entry)[:3], len(entry) - META_BYTES)

    def stat(self, key: str) -> Stat | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        return Stat(*_META.unpack_from(entry)[:3], len(entry) - META_BYTES)

    def children(self, path: str, limit: int | None = None) -> list[str]:
        """Names directly below `path` ('' for the root), whether keys or implicit parents,
        in the order of the first key below each."""
        lo, hi = subtree_bounds(path)
        iter_from = self._keys.iter_from
        entries = self._entries
        start = len(lo)
        names: list[str] = []
        it = iter_from(lo)
        key = next(it, None)
        while key is not None and key < hi and (limit is None or len(names) < limit):
            rest = key[start:]
            slash = rest.find("/")
            if slash < 0:
                names.append(rest)
                key = next(it, None)
            else:
                name = rest[:slash]
                # A name that is also a key itself sorts before its subtree and was listed.
                if lo + name not in entries:
                    names.append(name)
                it = iter_from(subtree_bounds(lo + name)[1])     # skip the subtree
                key = next(it, None)
        return names

    def list_prefix(self, prefix: str, limit: int = 1000, start_after: str | None = None
                    ) -> list[str]:
        """Keys that start with the string `prefix`, in order, after `start_after`."""
        out: list[str] = []
        if start_after is not None and start_after >= prefix:
            it = self._keys.iter_from(start_after, inclusive=False)
        else:
            it = self._keys.iter_from(prefix)
        for key in it:
            if not key.startswith(prefix) or len(out) >= limit:
                break
            out.append(key)
        return out

    def count_below(self, path: str) -> int:
        lo, hi = subtree_bounds(path)
        return self._keys.count(lo, hi)

    def items(self):
        """(key, entry) pairs in key order."""
        entries = self._entries
        for key in self._keys:
            yield key, entries[key]

    # --- mutations -----------------------------------------------------------------------

    def _check(self, key: str, entry: bytes | None, expected: int | None) -> None:
        if expected is None:
            return
        if expected == 0:
            if entry is not None:
                raise NodeExists(f"{key} exists (version {_META.unpack_from(entry)[0]}) "
                                 "and the operation required that it did not")
            return
        if entry is None:
            raise NoNode(f"{key} does not exist (expected version {expected})")
        version = _META.unpack_from(entry)[0]
        if version != expected:
            raise BadVersion(f"{key} is at version {version}, not the expected {expected}")

    def _store(self, key: str, old: bytes | None, new: bytes | None, undo: list | None,
               txid: int = 0) -> None:
        """Replace `key`'s entry `old` by `new` (None: delete it); `txid` > 0 logs the change
        (0: a rollback, whose events the caller takes back)."""
        digest = self.digest
        if old is not None:
            digest -= _META.unpack_from(old)[3]
        if new is not None:
            digest += _META.unpack_from(new)[3]
            if old is None:
                self._keys.add(key)
            self._entries[key] = new
        else:
            del self._entries[key]
            self._keys.discard(key)
        self.digest = digest & MASK
        if undo is not None:
            undo.append((key, old, new))
        if new is None and txid:
            if key in self.lease_of:
                self._attach(key, None, undo)
            if self.changes is not None:
                self.changes.append((txid, key, None))

    def put(self, txid: int, key: str, value: bytes, expected: int | None,
            undo: list | None = None) -> int:
        entries = self._entries
        old = entries.get(key)
        if expected is not None:
            self._check(key, old, expected)
        if old is None:   # the hot path, written out: this runs for every put
            version, created, old_hash = 1, txid, 0
        else:
            version, created, _, old_hash = _META.unpack_from(old)
            version += 1
        new, new_hash = make_entry(key, version, created, txid, value)
        entries[key] = new
        if old is None:
            pending = self._pending     # KeyIndex.add, inlined
            pending[key] = None
            if len(pending) > PENDING_MAX:
                self._keys.flush()
        self.digest = (self.digest - old_hash + new_hash) & MASK
        if undo is not None:
            undo.append((key, old, new))
        changes = self.changes
        if changes is not None:
            changes.append((txid, key, new))
        return version

    def merge(self, txid: int, key: str, patch: bytes, expected: int | None,
              undo: list | None = None) -> int:
        old = self._entries.get(key)
        self._check(key, old, expected)
        current = None if old is None else memoryview(old)[META_BYTES:]
        merged = values.merge_encoded(current, patch, key)
        limit = self.max_merged_value_bytes
        if limit is not None and len(merged) > limit:
            raise InvalidRecord(f"merging into {key} would make its value {len(merged)} bytes; "
                                f"the limit is {limit} (max_value_bytes): split the value "
                                "over several keys")
        return self.put(txid, key, merged, None, undo)

    def delete(self, key: str, recursive: bool, expected: int | None,
               undo: list | None = None, txid: int = 0) -> int:
        """Delete `key` (and with `recursive` everything below it); return how many keys went."""
        old = self._entries.get(key)
        self._check(key, old, expected)
        below = self.count_below(key)
        if below and not recursive:
            raise NotEmpty(f"{key} has {below} keys below it; delete them first or delete "
                           "recursively")
        if old is None and not below:
            raise NoNode(f"{key} does not exist")
        removed = 0
        if below:
            lo, hi = subtree_bounds(key)
            subtree = []
            for sub in self._keys.iter_from(lo):
                if sub >= hi:
                    break
                subtree.append(sub)
            for sub in subtree:
                self._store(sub, self._entries[sub], None, undo, txid)
                removed += 1
        if old is not None:
            self._store(key, old, None, undo, txid)
            removed += 1
        return removed

    # --- leases --------------------------------------------------------------------------

    def grant(self, lease_id: int, ttl_ms: int) -> None:
        self.leases[lease_id] = ttl_ms
        self.lease_keys[lease_id] = set()
        self.digest = (self.digest + _lease_hash(lease_id, ttl_ms)) & MASK

    def revoke(self, txid: int, lease_id: int) -> list[str]:
        """End a lease: delete its keys (in key order) and forget it; the keys deleted."""
        ttl_ms = self.leases.pop(lease_id)
        keys = sorted(self.lease_keys[lease_id])
        for key in keys:
            self._store(key, self._entries[key], None, None, txid)   # detaches it
        del self.lease_keys[lease_id]
        self.digest = (self.digest - _lease_hash(lease_id, ttl_ms)) & MASK
        return keys

    def attach(self, key: str, lease_id: int, undo: list | None = None) -> None:
        """Attach the existing `key` to the existing lease `lease_id` (from another one)."""
        if self.lease_of.get(key) != lease_id:
            self._attach(key, lease_id, undo)

    def _attach(self, key: str, lease_id: int | None, undo: list | None) -> None:
        previous = self.lease_of.pop(key, None)
        digest = self.digest
        if previous is not None:
            self.lease_keys[previous].discard(key)
            digest -= _attachment_hash(key, previous)
        if lease_id is not None:
            self.lease_of[key] = lease_id
            self.lease_keys[lease_id].add(key)
            digest += _attachment_hash(key, lease_id)
        self.digest = digest & MASK
        if undo is not None:
            undo.append((None, key, previous))

    def check(self, key: str, expected: int) -> None:
        self._check(key, self._entries.get(key), expected)

    def rollback(self, undo: list, changes_mark: int = -1) -> None:
        """Undo a failed multi's changes; `changes_mark`: the length `changes` had before."""
        for key, old, new in reversed(undo):
            if key is None:         # an attachment changed: `old` is the key, `new` its lease
                self._attach(old, new, None)
            else:
                self._store(key, new, old, None)
        if self.changes is not None and changes_mark >= 0:
            del self.changes[changes_mark:]

    # --- snapshots -----------------------------------------------------------------------

    def load_sorted(self, pairs: list) -> None:
        """Add [key, entry, key, entry, ...] in ascending key order (snapshot load)."""
        entries = self._entries
        digest = self.digest
        for key, entry in zip(pairs[0::2], pairs[1::2]):
            h = recompute_entry_hash(key, entry)
            if h != _META.unpack_from(entry)[3]:
                raise ValueError(f"entry of {key!r} does not match its recorded hash")
            entries[key] = entry
            digest += h
        self.digest = digest & MASK

    def finish_load(self) -> None:
        """Build the key index once every chunk has been loaded."""
        self._keys.reset(self._entries)

    def recompute_digest(self) -> int:
        total = 0
        for key, entry in self._entries.items():
            total += recompute_entry_hash(key, entry)
        for lease_id, ttl_ms in self.leases.items():
            total += _lease_hash(lease_id, ttl_ms)
        for key, lease_id in self.lease_of.items():
            total += _attachment_hash(key, lease_id)
        return total & MASK

    def lease_rows(self) -> list:
        """[[lease_id, ttl_ms, [key, ...]], ...] for the state image."""
        return [[lease_id, ttl_ms, sorted(self.lease_keys[lease_id])]
                for lease_id, ttl_ms in self.leases.items()]

    def load_leases(self, rows: list) -> None:
        for lease_id, ttl_ms, keys in rows:
            self.grant(lease_id, ttl_ms)
            for key in keys:
                if key not in self._entries:
                    raise ValueError(f"lease {lease_id} holds {key!r}, which does not exist")
                self._attach(key, lease_id, None)

    def validate(self, last_txid: int) -> list[str]:
        problems = []
        problems.extend(self._keys.problems(self._entries))
        for key, entry in self._entries.items():
            version, created, modified, h = _META.unpack_from(entry)
            if h != recompute_entry_hash(key, entry):
                problems.append(f"{key}: the entry hash does not match the entry")
            if version < 1 or not 0 < created <= modified <= last_txid:
                problems.append(f"{key}: bad metadata version={version} created={created} "
                                f"modified={modified} last_txid={last_txid}")
        if self.recompute_digest() != self.digest:
            problems.append("namespace digest does not match its entries")
        for key, lease_id in self.lease_of.items():
            if key not in self._entries or key not in self.lease_keys.get(lease_id, ()):
                problems.append(f"{key}: attached to lease {lease_id} inconsistently")
        if sum(map(len, self.lease_keys.values())) != len(self.lease_of) or \
                self.lease_keys.keys() != self.leases.keys():
            problems.append("the lease index does not match the attachments")
        return problems


def _lease_hash(lease_id: int, ttl_ms: int) -> int:
    return entry_hash(b"l", _LEASE.pack(lease_id, ttl_ms))


def _attachment_hash(key: str, lease_id: int) -> int:
    return entry_hash(b"a", key.encode() + b"\0" + _LEASE.pack(lease_id, 0))


_LEASE = struct.Struct("<QQ")
