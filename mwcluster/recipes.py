"""Locks, leader election and barriers on a master's leases and watches
(docs/coordination.md), for any Client: nothing here runs in the master.

Each participant holds a lease, kept alive from a background thread (Client.keepalive), and
puts one key of its own under the recipe's directory with it: `/locks/<name>/<uuid>`,
`/elections/<name>/<uuid>`, `/barriers/<name>/<uuid>`. A key's create txid orders the
participants (the first created is first in line), and when a participant dies its lease
expires within its TTL, the master deletes its key, and the next in line sees the deletion
through a watch of the one key just ahead of it (no herd: each waiter watches one key).

**Fencing.** The holder's token is its key's create txid: it only grows from holder to
holder (a later key has a later txid, across restarts and failovers too) so a store that
remembers the highest token it has seen can refuse a stale holder. Inside the master itself,
`Lock.multi(ops)` applies `ops` only while the lock is held (a CHECK that its key exists,
in the same MULTI): a holder that was paused past its TTL and lost the lock is refused.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Iterator, NamedTuple

from mwcluster import errors
from mwcluster.client.calls import Entry, op_check

__all__ = ["Barrier", "Election", "Leader", "Lock", "LockLost"]

log = logging.getLogger(__name__)
PAGE = 1000
_POLL_S = 2.0          # the longest one WATCH waits before the recipe looks at its deadline


class LockLost(errors.MwclusterError):
    """The participant's key is gone: its lease expired or was revoked (a pause longer than
    the TTL, or the master could not be reached for that long). Start again."""


class Leader(NamedTuple):
    """The leader of an election: the value it campaigned with and its token."""
    value: Any
    token: int
    key: str


def _members(client, directory: str) -> tuple[int, list[tuple[Entry, int]]]:
    """Every key under `directory`, each with the txid its page was read at, in create
    order; and the txid of the first page (watch from it + 1 to miss nothing after it)."""
    out: list[tuple[Entry, int]] = []
    start_after = None
    first = None
    while True:
        page = client.range(directory, PAGE, start_after)
        first = page.txid if first is None else first
        out.extend((entry, page.txid) for entry in page.entries)
        if len(page.entries) < PAGE:
            break
        start_after = page.entries[-1].key
    out.sort(key=lambda pair: pair[0].stat.create_txid)
    return first, out


def _directory(prefix: str, name: str) -> str:
    """The recipe's directory; a "/" in `name` would put one recipe's keys inside another's
    (RANGE reads by string prefix), so it is refused."""
    if not name or "/" in name:
        raise ValueError(f"a recipe's name is a non-empty string without '/', not {name!r}")
    return f"{prefix}{name}"


def _poll(watch, deadline: float | None):
    """One WATCH of at most _POLL_S (less near `deadline`): a list of events or a Resync;
    None once the deadline has passed."""
    wait = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
    if wait <= 0:
        return None
    watch.wait_ms = max(1, int(1000 * wait))
    return watch.poll(deadline)


class _Participant:
    """One leased key of this process under `directory` (the part the recipes share)."""

    def __init__(self, client, directory: str, ttl_s: float) -> None:
        directory += "/"
        self.client = client
        self.directory = directory
        self.ttl_s = ttl_s
        self.key: str | None = None
        self.token: int | None = None         # the create txid of the key
        self.lease = None
        self._keeper = None

    def join(self, value: Any) -> int:
        """Put this participant's key (a new lease and its keepalive); its create txid."""
        # fsynced (sync), so that a token is never handed out twice across a master's crash
        self.lease = self.client.grant_lease(self.ttl_s, durability="sync")
        self._keeper = self.client.keepalive(self.lease)
        key = self.directory + uuid.uuid4().hex
        try:
            self.token = self.client.put(key, value, expected_version=0, lease=self.lease,
                                         durability="sync")
        except BaseException:
            self.leave()
            raise
        self.key = key
        return self.token

    @property
    def lost(self) -> bool:
        """True once the keepalive learned that the lease is gone (so is the key)."""
        return self._keeper is not None and self._keeper.lost.is_set()

    def wait_until(self, prefix: str, from_txid: int, deadline: float | None,
                   done) -> bool:
        """Watch `prefix` from `from_txid` until `done(batch)` (a list of events, or a
        Resync); False at the deadline. LockLost when this participant's lease ends."""
        watch = self.client.watch(prefix, from_txid=from_txid)
        while True:
            if self.lost:
                raise LockLost(f"{self.key}: the lease ended while waiting "
                               f"({self._keeper.error})")
            batch = _poll(watch, deadline)
            if batch is None:
                return False
            if done(batch):
                return True

    def wait_gone(self, key: str, from_txid: int, deadline: float | None) -> bool:
        """Wait until `key` is deleted (a Resync without it counts); False at the deadline."""
        return self.wait_until(key, from_txid, deadline, lambda batch: (
            any(e.key == key and e.type == "delete" for e in batch)
            if isinstance(batch, list) else key not in batch.entries))

    def leave(self) -> None:
        """Revoke the lease (the master deletes the key) and stop its keepalive. A principal
        limited to prefixes may not revoke: its key is deleted and the lease left to
        expire."""
        keeper, lease, key = self._keeper, self.lease, self.key
        self._keeper = self.lease = None
        self.key = self.token = None
        if keeper is not None:
            keeper.stop()
        if lease is None:
            return
        try:
            self.client.revoke_lease(lease)
        except errors.NotFound:
            pass                        # expired already: the key is gone
        except errors.RequestTimeout:
            # no master answers: with no keepalives the lease (and the key) expires within
            # its TTL of a master serving again
            log.info("%s: the master did not answer the revoke; the lease will expire", key)
        except errors.Unauthorized:
            if key is not None:
                try:
                    self.client.delete(key)
                except errors.NoNode:
                    pass


class Lock:
    """A fair mutual-exclusion lock: waiters are served in the order their keys were created
    (txid), and a holder that dies releases it when its lease expires (within `ttl_s`).

        with Lock(client, "compaction") as lock:
            store.write(data, fencing_token=lock.token)
    """

    def __init__(self, client, name: str, *, ttl_s: float = 10.0, prefix: str = "/locks/",
                 value: Any = None) -> None:
        self._me = _Participant(client, _directory(prefix, name), ttl_s)
        self.value = value
        self._held = False

    @property
    def token(self) -> int | None:
        """The fencing token while held: the create txid of this holder's key."""
        return self._me.token if self._held else None

    @property
    def key(self) -> str | None:
        return self._me.key

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait to hold the lock (at most `timeout` seconds; None: no limit); True when held,
        False at the timeout (this waiter's key is removed). LockLost: the lease ended."""
        if self._held:
            raise RuntimeError("this Lock is held already; release() it first")
        deadline = None if timeout is None else time.monotonic() + timeout
        me = self._me
        mine = me.join(self.value)
        try:
            while True:
                _txid, members = _members(me.client, me.directory)
                if not any(entry.key == me.key for entry, _ in members):
                    raise LockLost(f"{me.key}: deleted while waiting (the lease expired)")
                ahead = [(entry, at) for entry, at in members if entry.stat.create_txid < mine]
                if not ahead:
                    self._held = True
                    return True
                before, at = ahead[-1]          # wait for the one just ahead only
                if not me.wait_gone(before.key, at + 1, deadline):
                    me.leave()
                    return False
        except BaseException:
            if not self._held:
                me.leave()
            raise

    def release(self) -> None:
        """Give the lock up (the next waiter holds it once it sees the deletion)."""
        self._held = False
        self._me.leave()

    def is_held(self) -> bool:
        """Held and the lease not known lost (the master still has the key: see multi)."""
        return self._held and not self._me.lost

    def multi(self, ops: list, durability: str | int | None = None):
        """Apply `ops` (op_put...) in one MULTI only while this lock is held: the master
        refuses it (RemoteMultiFailed, its first failure BadVersion) once the holder's key
        is gone. Returns (txid, results of `ops`)."""
        if not self._held:
            raise LockLost("this Lock is not held: acquire() it first")
        txid, results = self._me.client.multi([op_check(self._me.key, 1), *ops], durability)
        return txid, results[1:]

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Election:
    """Leader election: campaign() waits to lead (in the order candidates joined, like a
    Lock), leader() says who leads, observe() yields each new leader. A leader that dies
    is replaced within `ttl_s`."""

    def __init__(self, client, name: str, *, ttl_s: float = 10.0,
                 prefix: str = "/elections/") -> None:
        self.client = client
        self.directory = _directory(prefix, name) + "/"
        self.ttl_s = ttl_s
        self._lock: Lock | None = None
        self._prefix, self._name = prefix, name

    def campaign(self, value: Any, timeout: float | None = None) -> bool:
        """Stand with `value` and wait to lead; True when leading, False at the timeout."""
        if self._lock is not None:
            raise RuntimeError("this Election leads already; resign() first")
        lock = Lock(self.client, self._name, ttl_s=self.ttl_s, prefix=self._prefix,
                    value=value)
        if not lock.acquire(timeout):
            return False
        self._lock = lock
        return True

    @property
    def token(self) -> int | None:
        """While leading: the create txid of this leader's key (a fencing token)."""
        return None if self._lock is None else self._lock.token

    def is_leader(self) -> bool:
        return self._lock is not None and self._lock.is_held()

    def resign(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def leader(self) -> Leader | None:
        """The current leader (the candidate first in line), or None."""
        _txid, members = _members(self.client, self.directory)
        if not members:
            return None
        entry = members[0][0]
        return Leader(entry.value, entry.stat.create_txid, entry.key)

    def observe(self, timeout: float | None = None) -> Iterator[Leader | None]:
        """The leader now, then each change of leader (None: no candidate), until
        `timeout` seconds have passed (None: for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        txid, members = _members(self.client, self.directory)
        candidates = {entry.key: (entry.stat.create_txid, entry.value) for entry, _ in members}
        shown = _first(candidates)
        yield shown
        watch = self.client.watch(self.directory, from_txid=txid + 1)
        while True:
            batch = _poll(watch, deadline)
            if batch is None:
                return
            if isinstance(batch, list):
                for e in batch:
                    if e.type == "delete":
                        candidates.pop(e.key, None)
                    elif e.type == "put":
                        candidates[e.key] = (e.create_txid, e.value)
            else:
                candidates = {key: (entry.stat.create_txid, entry.value)
                              for key, entry in batch.entries.items()}
            now = _first(candidates)
            if now != shown:
                shown = now
                yield shown


def _first(candidates: dict[str, tuple[int, Any]]) -> Leader | None:
    if not candidates:
        return None
    key, (token, value) = min(candidates.items(), key=lambda kv: kv[1][0])
    return Leader(value, token, key)


class Barrier:
    """`parties` participants wait() until all of them have arrived (one use per name).
    A participant that dies before all arrived leaves (its lease expires), so the others
    wait for one more; the one that completes the count writes `<dir>/ready`, which lets
    everyone through even if some leave right after."""

    def __init__(self, client, name: str, parties: int, *, ttl_s: float = 10.0,
                 prefix: str = "/barriers/") -> None:
        if parties < 1:
            raise ValueError(f"a barrier needs at least 1 party, not {parties}")
        self._me = _Participant(client, _directory(prefix, name), ttl_s)
        self.parties = parties
        self.ready_key = self._me.directory + "ready"

    def wait(self, timeout: float | None = None) -> int:
        """Arrive and wait for the others; this participant's arrival index (0 first).
        TimeoutError at the timeout (this participant leaves)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me, client = self._me, self._me.client
        mine = me.join(True)
        try:
            while True:
                txid, members = _members(client, me.directory)
                arrived = [e for e, _ in members if e.key != self.ready_key]
                index = sum(e.stat.create_txid < mine for e in arrived)
                if any(e.key == self.ready_key for e, _ in members):
                    return index
                if len(arrived) >= self.parties:
                    try:
                        client.put(self.ready_key, len(arrived), expected_version=0)
                    except errors.NodeExists:
                        pass            # another one wrote it first
                    return index
                if not me.wait_until(me.directory, txid + 1, deadline, bool):
                    raise TimeoutError(f"{me.directory}: {len(arrived)} of {self.parties} "
                                       f"arrived within {timeout} s")
        except BaseException:
            me.leave()
            raise

    def leave(self) -> None:
        """Remove this participant's key (after passing; not before others may need it)."""
        self._me.leave()
