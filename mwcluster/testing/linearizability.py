"""A linearizability checker for client histories of the versioned key-value store.

`check(events)` says whether one sequential order of the requests explains a history: an order
that keeps real time (a request that returned before another was called comes first) in which
each result is what the store would have answered there. An `Event` is one request: client,
call and return times on one monotonic clock, operation, result. With no reply (`ret` None)
the outcome is unknown: the request took effect at some point after its call, or never.

The model mirrors core/namespace.py. A key is absent or holds (value, version, modify txid).
A put creates the key at version 1 or adds 1 to its version; a delete removes it (absent:
no_node). An `expected` version None is unconditional, 0 "must not exist" (else node_exists),
n > 0 "must exist (else no_node) at version n (else bad_version)". A multi applies its sub-ops
in order, all or none, at one txid; a check sub-op needs the key at exactly that version (0:
absent); "multi_failed" means some sub-op failed and nothing changed. Each success has its own
txid and txids grow along the order. An unknown write's txid is unknown: its key holds an
interval (above the key's previous txid, below the next known write's), which a get returning
the exact txid narrows. This is sound (a linearizable history is never rejected) but misses a
few violations that hinge on unknown txids. Two global checks come first: no txid given twice,
and a request called after another returned gets a txid above any that one wrote or read.

The search is that of Wing & Gong (1993, "Testing and verifying concurrent objects") with the
memoisation of Lowe (2017, "Testing for linearizability"): calls and returns in one doubly
linked list in time order; a request may come next if its call precedes the first return left;
placing it lifts it out of the list, backtracking puts it back; a configuration explored (the
requests placed, as a bitset, and the model state) is not explored again. It is iterative and
runs on each component alone (requests grouped by the keys they touch, a multi joining its
keys), as linearizability is local. Exact prunings, each keeping a linearization if there is
one: a request that fits without changing the state (a get, a refusal) is placed with no
alternative; a known write only when its txid is the next; a get whose write is overwritten
ends the branch; an unknown request only where it takes effect, only as the earliest called of
those that do the same, and only if it shares a key with the request after it or with the
known one ending its chain of unknown ones (else it could move later), two sharing no key in
index order; a configuration reached with more unknown requests applied than one that failed
fails; values no get reads count as one. Unknown requests come after the known ones, first
those whose txid a get seems to have read; chains of them are limited to CHAIN_LIMITS in turn,
a failure deciding only when none was cut. A search beyond `max_states` configurations in a
component gives up: the history is undecided, never ok.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

REFUSAL_CODES = frozenset({"bad_version", "no_node", "node_exists"})
MULTI_FAILED = "multi_failed"
REPORT_EVENTS = 8               # events listed at most in a failure message
CHAIN_LIMITS = (1, 3, None)     # unknown requests in a row the search allows, in turn

_GET, _PUT, _DELETE, _CHECK = "get", "put", "delete", "check"
_UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True)
class Event:
    client: int
    call: float            # invocation time (one monotonic clock)
    ret: float | None      # completion time; None: no answer, the outcome is unknown
    op: tuple              # ("get", key) | ("put", key, value, expected) |
                           # ("delete", key, expected) | ("multi", (sub-op, ...))
    result: tuple | None   # get: ("value", value, version, modify_txid) or ("none",);
                           # mutations: ("ok", txid) or ("error", code); None if unknown


class Verdict(NamedTuple):
    ok: bool
    message: str
    keys: tuple[str, ...]   # the failing component's keys; () when ok


class _Op(NamedTuple):
    event: Event
    known: bool           # an answer came back: the request must be placed before its ret
    subs: tuple           # ((kind, key or slot, value, expected), ...); a get is one _GET
    read: Any             # get: None (absent) or (value, version, modify_txid)
    txid: int | None      # mutation answered ok
    error: str | None     # mutation refused: its code


# A key's entry: (value, version, txid_lo, txid_hi): its modify txid is in [lo, hi] (hi None:
# no upper bound yet; lo == hi: exact); version 0 is absent (deleted at that txid, or never
# written). A state: (entries by slot, the largest txid known to exist so far).
_Entry = tuple[Any, int, int, "int | None"]
_State = tuple[tuple[_Entry, ...], int]


def check(events: Iterable[Event], *, max_states: int = 2_000_000) -> Verdict:
    """Whether the history is linearizable; `max_states` bounds the search per component."""
    ops = [op for op in map(_parse, events) if op is not None]
    problem = _txid_problem(ops)
    if problem is not None:
        return problem
    undecided = None
    components = _components(ops)
    for keys, members in components:
        verdict = _check_component(keys, members, max_states)
        if verdict is not None and not verdict.message.startswith(_UNDECIDED):
            return verdict
        undecided = undecided or verdict
    return undecided or Verdict(True, f"linearizable: {len(ops)} events in {len(components)} "
                                      "independent components", ())


# --- parsing -------------------------------------------------------------------------------

def _parse(event: Event) -> _Op | None:
    """The event checked and normalised; None for a get without an answer (it tells nothing)."""
    op, result = event.op, event.result
    if not isinstance(op, tuple) or len(op) < 2 or op[0] not in (_GET, _PUT, _DELETE, "multi"):
        raise ValueError(f"not an operation: {op!r} in {event}")
    if event.ret is not None and event.ret < event.call:
        raise ValueError(f"returned before it was called: {event}")
    known = event.ret is not None and result is not None
    if op[0] == _GET:
        if len(op) != 2 or not isinstance(op[1], str):
            raise ValueError(f"a get is ('get', key) with a str key: {event}")
        if not known:
            return None
        if result != ("none",) and not (
                isinstance(result, tuple) and len(result) == 4 and result[0] == "value"
                and _is_int(result[2], 1) and _is_int(result[3], 1)):
            raise ValueError("a get's result is ('value', value, version, modify_txid) or "
                             f"('none',): {event}")
        read = None if result == ("none",) else (_freeze(result[1]), result[2], result[3])
        return _Op(event, True, ((_GET, op[1], None, None),), read, None, None)
    subs = tuple(_parse_sub(sub, event) for sub in (op[1] if op[0] == "multi" else (op,)))
    if not subs or (op[0] == "multi" and len(op) != 2):
        raise ValueError(f"a multi is ('multi', (sub-op, ...)) with sub-ops: {event}")
    if not known:
        return _Op(event, False, subs, None, None, None)
    codes = {MULTI_FAILED} if op[0] == "multi" else REFUSAL_CODES
    if isinstance(result, tuple) and len(result) == 2:
        if result[0] == "ok" and _is_int(result[1], 1):
            return _Op(event, True, subs, None, result[1], None)
        if result[0] == "error" and result[1] in codes:
            return _Op(event, True, subs, None, None, result[1])
    raise ValueError(f"the result must be ('ok', txid >= 1) or ('error', one of "
                     f"{sorted(codes)}), or ret None when unknown: {event}")


def _parse_sub(sub: Sequence, event: Event) -> tuple:
    """(kind, key, value, expected) of a put, delete or check."""
    shapes = {_PUT: 4, _DELETE: 3, _CHECK: 3}
    if not isinstance(sub, tuple | list) or not sub or shapes.get(sub[0]) != len(sub) \
            or not isinstance(sub[1], str):
        raise ValueError(f"not ('put', key, value, expected), ('delete', key, expected) or "
                         f"('check', key, version) with a str key: {sub!r} in {event}")
    kind, key, value, expected = sub if sub[0] == _PUT else (sub[0], sub[1], None, sub[2])
    if (expected is not None or kind == _CHECK) and not _is_int(expected, 0):
        raise ValueError(f"an expected version is None or an int >= 0: {sub!r} in {event}")
    return (kind, key, _freeze(value), expected)


def _is_int(x: Any, least: int) -> bool:
    return type(x) is int and x >= least


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a value (lists and tuples alike, as msgpack makes them)."""
    if isinstance(value, list | tuple):
        return tuple(map(_freeze, value))
    if isinstance(value, dict):
        return frozenset((k, _freeze(v)) for k, v in value.items())
    hash(value)       # anything else must be hashable already
    return value


# --- global txid checks --------------------------------------------------------------------

def _txid_problem(ops: list[_Op]) -> Verdict | None:
    """A txid given twice, or a txid not above one that existed when its request was called."""
    owner: dict[int, _Op] = {}
    for op in ops:
        if op.txid is not None and owner.setdefault(op.txid, op) is not op:
            return _pair_failure(f"txid {op.txid} was given to two requests", owner[op.txid], op)
    # A request's witness (the txid it wrote or, for a get, the modify txid it read) exists by
    # its return, so a request called later gets a larger txid.
    witnesses = sorted((op for op in ops if op.txid is not None or op.read is not None),
                       key=lambda op: op.event.ret)
    best: _Op | None = None
    j = 0
    for op in sorted((op for op in ops if op.txid is not None), key=lambda op: op.event.call):
        while j < len(witnesses) and witnesses[j].event.ret < op.event.call:
            if best is None or _witness(witnesses[j]) > _witness(best):
                best = witnesses[j]
            j += 1
        if best is not None and _witness(best) >= op.txid:
            return _pair_failure(f"txid {op.txid} is not above txid {_witness(best)}, which "
                                 "existed before the request was called", best, op)
    return None


def _witness(op: _Op) -> int:
    return op.txid if op.txid is not None else op.read[2]


def _pair_failure(what: str, first: _Op, second: _Op) -> Verdict:
    keys = tuple(sorted({sub[1] for op in (first, second) for sub in op.subs}))
    return Verdict(False, f"not linearizable: {what}:\n  {_show(first.event)}\n  "
                          f"{_show(second.event)}", keys)


# --- components ----------------------------------------------------------------------------

class _Unread:
    def __repr__(self) -> str:
        return "<a value no get read>"


_UNREAD = _Unread()


def _components(ops: list[_Op]) -> list[tuple[tuple[str, ...], list[_Op]]]:
    """The requests grouped by connected keys, each group's keys mapped to slots 0..n-1, and
    each value that no get reads replaced by _UNREAD: states that differ only in values nobody
    saw are then one state (a get compares the value it read, which is not _UNREAD)."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = key = parent[parent[key]]
        return key

    for op in ops:
        for sub in op.subs[1:]:
            parent[root(sub[1])] = root(op.subs[0][1])
    groups: dict[str, list[_Op]] = {}
    for op in ops:
        groups.setdefault(root(op.subs[0][1]), []).append(op)
    out = []
    for members in groups.values():
        keys = tuple(sorted({sub[1] for op in members for sub in op.subs}))
        slot = {key: i for i, key in enumerate(keys)}
        read = {(op.subs[0][1], op.read[0]) for op in members if op.read is not None}
        out.append((keys, [op._replace(subs=tuple(
            (kind, slot[key], value if (key, value) in read else _UNREAD, expected)
            for kind, key, value, expected in op.subs)) for op in members]))
    return out


# --- the model -----------------------------------------------------------------------------

def _run(entries: list, subs: tuple, lo: int, hi: int | None) -> str | None:
    """Apply mutation sub-operations to `entries` in order; the first failure's code, if any
    (the entries are then partly changed: callers discard them)."""
    for kind, slot, value, expected in subs:
        version = entries[slot][1]
        if expected is not None:
            if expected == 0:
                if version:
                    return "node_exists"
            elif not version:
                return "no_node"
            elif version != expected:
                return "bad_version"
        if kind == _PUT:
            entries[slot] = (value, version + 1, lo, hi)
        elif kind == _DELETE:
            if not version:
                return "no_node"
            entries[slot] = (None, 0, lo, hi)
    return None


def _step(op: _Op, state: _State, taken: frozenset[int] | None) -> _State | None:
    """The state after `op` at this point, the same object if unchanged; None if `op` cannot
    come here (or, for an unknown request, would change nothing). `taken`: the known txids,
    None when nothing in the component has an unknown outcome."""
    entries, floor = state
    if op.subs[0][0] == _GET:
        slot = op.subs[0][1]
        cur = entries[slot]
        if op.read is None:
            return state if not cur[1] else None
        value, version, txid = op.read
        if cur[0] != value or cur[1] != version:
            return None
        if cur[2] == cur[3]:
            return state if txid == cur[2] else None
        if txid < cur[2] or (cur[3] is not None and txid > cur[3]) or txid in taken:
            return None                    # (a known request's txid is no unknown one's)
        resolved = list(entries)           # the unknown write's txid is now known
        resolved[slot] = (value, version, txid, txid)
        return (tuple(resolved), max(floor, txid))
    work = list(entries)
    if op.error is not None:
        code = _run(work, op.subs, 0, 0)
        if code is None or (code != op.error and op.error != MULTI_FAILED):
            return None
        return state
    if op.txid is None:
        # Unknown: it takes effect here, at a txid above its keys' txids; not tied to the
        # floor, so that it commutes with requests on other keys.
        lo = max(entries[slot][2] for slot in {sub[1] for sub in op.subs}) + 1
        if _run(work, op.subs, lo, None) is not None or tuple(work) == entries:
            return None                    # (a multi of checks only changes nothing either)
        return (tuple(work), floor)
    txid = op.txid
    if txid <= floor:
        return None
    if taken is not None:                  # unknown writes before this one had smaller txids
        for slot, cur in enumerate(work):
            if cur[3] is None:
                if cur[2] >= txid:
                    return None
                work[slot] = (cur[0], cur[1], cur[2], txid - 1)
    if _run(work, op.subs, txid, txid) is not None:
        return None
    return (tuple(work), txid)


# --- the search ----------------------------------------------------------------------------

def _check_component(keys: tuple[str, ...], ops: list[_Op], max_states: int) -> Verdict | None:
    """None when the component is linearizable, else a failing (or undecided) verdict."""
    explored = 0
    for limit in CHAIN_LIMITS:
        outcome, states, cut = _search(ops, max_states - explored, limit)
        explored += states
        if outcome is False:
            return Verdict(False, f"{_UNDECIDED}: the search gave up after {max_states} states "
                                  f"in the component of keys {_names(keys)} ({len(ops)} "
                                  "events); raise max_states to decide it", keys)
        if outcome is True:
            return None
        if not cut:
            return _failure(keys, ops, *outcome)
    raise AssertionError("the last chain limit is None, so no chain was cut")


def _search(ops: list[_Op], budget: int, limit: int | None) -> tuple[Any, int, bool]:
    """(True: linearizable, False: `budget` states did not decide, or else what _failure
    reports; the states explored; whether a chain of unknown requests was cut at `limit`)."""
    stamps = sorted([(op.event.call, 0, i) for i, op in enumerate(ops)]
                    + [(op.event.ret, 1, i) for i, op in enumerate(ops) if op.known])
    end = len(stamps) + 1                 # node 0 heads the list, node `end` closes it
    nxt = list(range(1, end + 1)) + [end]
    prv = [0] + list(range(end))
    node_op = [-1] * (end + 1)
    is_ret = [False] * (end + 1)
    nodes: list[tuple[int, ...]] = [()] * len(ops)
    for node, (_, ret, i) in enumerate(stamps, 1):
        node_op[node], is_ret[node] = i, bool(ret)
        nodes[i] += (node,)                # (call node, return node) in time order
    touches = [frozenset(sub[1] for sub in op.subs) for op in ops]
    taken = (None if all(op.known for op in ops)      # (unknown gets were dropped)
             else frozenset(op.txid for op in ops if op.txid is not None))
    hints = _hints(ops)
    # Unknown requests that do the same thing are interchangeable: only the earliest called one
    # not applied yet is tried, so the applied ones of a kind are always the first called.
    kinds: dict[tuple, list[int]] = {}
    for i in sorted(range(len(ops)), key=lambda i: ops[i].event.call):
        if not ops[i].known:
            kinds.setdefault(ops[i].subs, []).append(i)
    kind_of = {i: members for members in kinds.values() for i in members}
    used = {id(members): 0 for members in kinds.values()}
    # The known writes come in the order of their txids: the next is writes[written].
    writes: list[float] = sorted(op.txid for op in ops if op.txid is not None)
    written_txids = frozenset(writes)
    writes.append(float("inf"))
    written = 0
    cut = False

    def candidates() -> list[int]:
        """The requests whose call precedes the first return left, the known ones first."""
        known, unknown = [], []
        node = nxt[0]
        while node != end and not is_ret[node]:
            (known if ops[node_op[node]].known else unknown).append(node_op[node])
            node = nxt[node]
        return known + unknown

    def expand(state: _State, chain: tuple) -> list[tuple[int, _State, tuple]]:
        """The next steps to try, best first. `chain`: (the unknown request placed last or
        -1, the keys of each unknown request since the last known one that no later one
        touches, how many since). Each unknown request placed must touch a key of a later one
        or of the known one that ends its chain, else it could move later; two that share no
        key follow each other in index order only, else they could swap."""
        nonlocal cut
        last, loose, length = chain
        next_txid = writes[written]
        due, known, unknown = [], [], []
        cands = candidates()
        near: dict[int, int] = {}          # key -> the candidates that may come next on it
        for i in cands:
            if ops[i].txid in (None, next_txid):
                for key in touches[i]:
                    near[key] = near.get(key, 0) + 1
        for i in cands:
            op = ops[i]
            if op.known:
                if op.txid not in (None, next_txid) or not all(k & touches[i] for k in loose):
                    continue
                after: tuple = (-1, (), 0)
            else:
                if kind_of[i][used[id(kind_of[i])]] != i or (
                        i < last and not touches[i] & touches[last]):
                    continue
                rest = tuple(k for k in loose if not k & touches[i])
                if not all(any(near.get(key) for key in k) for k in rest) \
                        or not any(near[key] > 1 for key in touches[i]):
                    continue                # nothing left could justify them
                after = (i, rest + (touches[i],), length + 1)
            new = _step(op, state, taken)
            if new is state:
                return [(i, new, after)]    # fits without changing anything: no branching
            if new is None:
                if op.read is not None and op.read[2] < next_txid \
                        and op.read[2] in written_txids:
                    return []               # what it read is overwritten: it never fits
            elif op.known:
                known.append((i, new, after))
            elif limit is not None and length >= limit:
                cut = True
            elif hints[i] is not None and hints[i] < next_txid and hints[i] > max(
                    state[0][slot][2] for slot in touches[i]):
                due.append((i, new, after))  # its own txid may be the one a get read
            else:
                unknown.append((i, new, after))
        return due + known + unknown

    total = remaining = sum(op.known for op in ops)
    state: _State = (((None, 0, 0, 0),) * (1 + max(max(keys) for keys in touches)), 0)
    chain: tuple = (-1, (), 0)
    done = applied = 0          # bitsets: the known requests placed, the unknown ones applied
    # (known requests placed, state, chain) -> the sets of unknown requests applied with which
    # that configuration was explored. One explored with fewer applied had every choice this
    # one has (an unknown request may always stay unapplied): it failed, so this one will.
    seen: dict[tuple, list[int]] = {}
    explored = 0
    stack: list[tuple] = []
    options, pos = expand(state, chain), 0
    best, report = -1, ()
    while remaining:
        for i, new, new_chain in options[pos:]:
            pos += 1
            new_done, new_applied = ((done | 1 << i, applied) if ops[i].known
                                     else (done, applied | 1 << i))
            earlier = seen.setdefault((new_done, new, new_chain), [])
            if any(not (subset & ~new_applied) for subset in earlier):
                continue
            earlier.append(new_applied)
            explored += 1
            if explored > budget:
                return False, explored, cut
            stack.append((options, pos, i, state, chain, done, applied))
            for node in nodes[i]:           # lift the request out of the list
                nxt[prv[node]], prv[nxt[node]] = nxt[node], prv[node]
            state, chain, done, applied = new, new_chain, new_done, new_applied
            remaining -= ops[i].known
            written += ops[i].txid is not None
            if not ops[i].known:
                used[id(kind_of[i])] += 1
            options, pos = expand(state, chain), 0
            break
        else:                               # a dead end: back to the last choice
            if total - remaining > best:
                best = total - remaining
                report = (candidates(), state, [frame[2] for frame in stack[-3:]],
                          writes[written])
            if not stack:
                return (best, total, report, taken), explored, cut
            options, pos, i, state, chain, done, applied = stack.pop()
            for node in reversed(nodes[i]):  # put it back
                nxt[prv[node]] = prv[nxt[node]] = node
            remaining += ops[i].known
            written -= ops[i].txid is not None
            if not ops[i].known:
                used[id(kind_of[i])] -= 1
    return True, explored, cut


def _hints(ops: list[_Op]) -> list[int | None]:
    """For each unknown request, the least modify txid a get read from a value it puts and no
    known request wrote: likely its own txid. The search tries it first while that txid is
    still possible for it; a guess that orders the search, no more."""
    known = {op.txid for op in ops if op.txid is not None}
    reads: dict[tuple[int, Any], int] = {}
    for op in ops:
        if op.read is not None and op.read[2] not in known:
            seen = (op.subs[0][1], op.read[0])
            reads[seen] = min(reads.get(seen, op.read[2]), op.read[2])
    return [None if op.known else min((reads[sub[1:3]] for sub in op.subs
                                       if sub[0] == _PUT and sub[1:3] in reads), default=None)
            for op in ops]


# --- messages ------------------------------------------------------------------------------

def _failure(keys: tuple[str, ...], ops: list[_Op], best: int, total: int, report: tuple,
             taken: frozenset[int] | None) -> Verdict:
    nexts, state, last, next_txid = report
    head = (f"not linearizable: keys {_names(keys)} ({len(ops)} events, {len(ops) - total} "
            f"with unknown outcome): at most {best} of the {total} events with a known outcome "
            "can be linearized.")
    lines = [head]
    if last:
        lines.append("The last ones placed on the longest way:")
        lines.extend(f"  {_show(ops[i].event)}" for i in last)
    lines.append(f"Then the keys hold {_show_state(keys, state, ops)}, and none of these can "
                 "come next:")
    shown = [i for i in nexts if ops[i].known][:REPORT_EVENTS]
    for i in shown:
        why = (f"the next known txid is {next_txid}" if ops[i].txid not in (None, next_txid)
               else "contradicts the state" if _step(ops[i], state, taken) is None
               else "fits, but leads nowhere")
        lines.append(f"  {_show(ops[i].event)}   ({why})")
    unknown = sum(not ops[i].known for i in nexts)
    if len(nexts) - len(shown) - unknown > 0:
        lines.append(f"  ... and {len(nexts) - len(shown) - unknown} more")
    if unknown:
        lines.append(f"  (and {unknown} requests with unknown outcome, applied or not)")
    return Verdict(False, "\n".join(lines), keys)


def _names(keys: tuple[str, ...]) -> str:
    more = ", ..." if len(keys) > REPORT_EVENTS else ""
    return f"[{', '.join(map(repr, keys[:REPORT_EVENTS]))}{more}]"


def _show_state(keys: tuple[str, ...], state: _State, ops: list[_Op]) -> str:
    writer = {op.txid: op.event.op for op in ops if op.txid is not None}
    parts = []
    for key, (value, version, lo, hi) in list(zip(keys, state[0]))[:REPORT_EVENTS]:
        if not version:
            parts.append(f"{key!r} absent")
            continue
        if value is _UNREAD and lo == hi and lo in writer:     # the value its put wrote
            op = writer[lo]
            value = [sub[2] for sub in (op[1] if op[0] == "multi" else (op,))
                     if sub[0] == _PUT and sub[1] == key][-1]
        txid = str(lo) if lo == hi else f">= {lo}" if hi is None else f"in {lo}..{hi}"
        parts.append(f"{key!r}={value!r} v{version} txid {txid}")
    return "; ".join(parts) + ("; ..." if len(keys) > REPORT_EVENTS else "")


def _show(event: Event) -> str:
    """One event on one line: client, [call, ret], operation -> result."""
    ret = "none" if event.ret is None else _time(event.ret)
    outcome = "unknown" if event.ret is None or event.result is None else repr(event.result)
    return f"c{event.client} [{_time(event.call)}, {ret}] {event.op!r} -> {outcome}"


def _time(t: float) -> str:
    return f"{t:.6f}".rstrip("0").rstrip(".")
