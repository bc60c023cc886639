"""A linearizability checker for client histories of the versioned key-value store.

`check(events)` says whether one sequential order of the requests explains a history: an order
that keeps real time (a request that returned before another was called comes first) in which
every result is what the store would have answered at that point. An `Event` is one request:
its client, call and return times on one monotonic clock, operation and result. With no reply
(`ret` None) the outcome is unknown: it took effect at some point after its call, or never.

The model mirrors core/namespace.py. A key is absent or holds (value, version, modify txid).
A put creates the key at version 1 or adds 1 to its version; a delete removes it (absent:
no_node). An `expected` version None is unconditional, 0 "must not exist" (else node_exists),
n > 0 "must exist (else no_node) at version n (else bad_version)". A multi applies its sub-ops
in order, all or none, at one txid; a check sub-op needs the key at exactly that version (0:
absent); ("error", "multi_failed") means some sub-op failed and nothing changed. Each success
has its own txid and txids grow along the order, so the known writes come in txid order. An
unknown write's txid is unknown: the key holds an interval instead (above the key's previous
txid, below the next known write's), which a get returning the exact txid narrows. This is
sound (a linearizable history is never rejected) and misses a few violations that hinge on
unknown txids. Two global checks come first: no txid given twice, and a request called after
another returned gets a larger txid than any that one wrote or read.

The search is that of Wing & Gong (1993, "Testing and verifying concurrent objects") with the
memoisation Lowe describes (2017, "Testing for linearizability"). Calls and returns sit in one
doubly linked list in time order; a request may come next if its call precedes the first
return left; placing it lifts its entries out of the list, backtracking puts them back; the
configurations explored (requests placed as a bitset, model state) are not explored again. It
is iterative (an explicit stack) and runs on each independent component alone (requests
grouped by the keys they touch, a multi joining its keys), as linearizability is local. Exact
prunings, each keeping at least one linearization when there is one: a request that fits
without changing the state (a get, a refusal) is placed at once, with no alternative; a known
write only when its txid is the next; an unknown request only where it takes effect, only as
the earliest called of those that do the same thing, and only if it touches a key of the
request placed after it (else it could move later; a chain of unknown requests ends in a known
one that touches them all); a configuration reached with a superset of the unknown requests
applied of one that failed fails too; values no get reads count as equal. Unknown requests are
tried last, those a get suggests are due first. A search beyond `max_states` configurations in
a component gives up: the history is undecided, never ok.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

REFUSAL_CODES = frozenset({"bad_version", "no_node", "node_exists"})
MULTI_FAILED = "multi_failed"
REPORT_EVENTS = 8       # events listed at most in a failure message

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
    known: bool           # an answer came back: the request must be linearized before ret
    subs: tuple           # ((kind, key or slot, value, expected), ...); a get is one _GET
    read: Any             # get: None (absent) or (value, version, modify_txid)
    txid: int | None      # mutation answered ok
    error: str | None     # mutation refused: its code


# A key's entry: (value, version, txid_lo, txid_hi), its modify txid within [lo, hi] (hi None:
# no upper bound yet); lo == hi when exact. Version 0 is absent (deleted at that txid, or 0). State: (entries by slot, floor), the floor being the
# largest txid known to exist so far in the component.
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
        if verdict is None:
            continue
        if not verdict.message.startswith(_UNDECIDED):
            return verdict
        undecided = undecided or verdict
    if undecided is not None:
        return undecided
    return Verdict(True, f"linearizable: {len(ops)} events in {len(components)} independent "
                         "components", ())


# --- parsing -----------------------------------------------------------------------------

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
        if result == ("none",):
            return _Op(event, True, ((_GET, op[1], None, None),), None, None, None)
        if not (isinstance(result, tuple) and len(result) == 4 and result[0] == "value"
                and _is_int(result[2], 1) and _is_int(result[3], 1)):
            raise ValueError("a get's result is ('value', value, version, modify_txid) or "
                             f"('none',): {event}")
        read = (_freeze(result[1]), result[2], result[3])
        return _Op(event, True, ((_GET, op[1], None, None),), read, None, None)
    subs = tuple(_parse_sub(sub, event) for sub in (op[1] if op[0] == "multi" else (op,)))
    if not subs or (op[0] == "multi" and len(op) != 2):
        raise ValueError(f"a multi is ('multi', (sub-op, ...)) with sub-ops: {event}")
    if not known:
        return _Op(event, False, subs, None, None, None)
    codes = {MULTI_FAILED} if op[0] == "multi" else REFUSAL_CODES
    if isinstance(result, tuple) and len(result) == 2 and result[0] == "ok" \
            and _is_int(result[1], 1):
        return _Op(event, True, subs, None, result[1], None)
    if isinstance(result, tuple) and len(result) == 2 and result[0] == "error" \
            and result[1] in codes:
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


def _keys_of(op: _Op) -> tuple[str, ...]:
    return tuple(sorted({sub[1] for sub in op.subs}))


# --- global txid checks ------------------------------------------------------------------

def _txid_problem(ops: list[_Op]) -> Verdict | None:
    """A txid given twice, or a txid smaller than one a request that returned earlier knew."""
    owner: dict[int, _Op] = {}
    for op in ops:
        if op.txid is not None:
            other = owner.setdefault(op.txid, op)
            if other is not op:
                return _global_failure(f"txid {op.txid} was given to two requests", other, op)
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
            return _global_failure(f"txid {op.txid} is not above txid {_witness(best)}, which "
                                   "existed before the request was called", best, op)
    return None


def _witness(op: _Op) -> int:
    return op.txid if op.txid is not None else op.read[2]


def _global_failure(what: str, first: _Op, second: _Op) -> Verdict:
    keys = tuple(sorted(set(_keys_of(first)) | set(_keys_of(second))))
    return Verdict(False, f"not linearizable: {what}:\n  {_show(first.event)}\n  "
                          f"{_show(second.event)}", keys)


# --- components ----------------------------------------------------------------------------

class _Unread:
    def __repr__(self) -> str:
        return "<a value no get read>"


_UNREAD = _Unread()


def _components(ops: list[_Op]) -> list[tuple[tuple[str, ...], list[_Op]]]:
    """The requests grouped by connected keys, each group's keys mapped to slots 0..n-1, and
    each value that no get reads replaced by _UNREAD: then states that differ only in values
    nobody saw are one state (a get compares values with other values only)."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for op in ops:
        first = root(op.subs[0][1])
        for sub in op.subs[1:]:
            parent[root(sub[1])] = first
    groups: dict[str, list[_Op]] = {}
    for op in ops:
        groups.setdefault(root(op.subs[0][1]), []).append(op)
    out = []
    for members in groups.values():
        keys = tuple(sorted({sub[1] for op in members for sub in op.subs}))
        slot = {key: i for i, key in enumerate(keys)}
        read = {(op.subs[0][1], op.read[0]) for op in members if op.read is not None}
        members = [op._replace(subs=tuple(
            (kind, slot[key], value if (key, value) in read else _UNREAD, expected)
            for kind, key, value, expected in op.subs)) for op in members]
        out.append((keys, members))
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


def _step(op: _Op, state: _State, open_bounds: bool) -> _State | None:
    """The state after `op` at this point, the same object if unchanged; None if `op` cannot
    come here (or, for an unknown request, would change nothing)."""
    entries, floor = state
    if op.subs[0][0] == _GET:
        cur = entries[op.subs[0][1]]
        read = op.read
        if read is None:
            return state if not cur[1] else None
        value, version, txid = read
        if cur[0] != value or cur[1] != version:
            return None
        if cur[2] == cur[3]:
            return state if txid == cur[2] else None
        if txid < cur[2] or (cur[3] is not None and txid > cur[3]):
            return None
        resolved = list(entries)           # the unknown write's txid is now known
        resolved[op.subs[0][1]] = (value, version, txid, txid)
        return (tuple(resolved), max(floor, txid))
    work = list(entries)
    if op.error is not None:
        code = _run(work, op.subs, 0, 0)
        if code is None or (code != op.error and op.error != MULTI_FAILED):
            return None
        return state
    if op.txid is None:
        # Unknown: it takes effect here, at a txid above its keys' txids; not tied to the floor,
        # so that it commutes with requests on other keys.
        lo = max(entries[slot][2] for slot in {sub[1] for sub in op.subs}) + 1
        if _run(work, op.subs, lo, None) is not None or tuple(work) == entries:
            return None                    # (a multi of checks only changes nothing either)
        return (tuple(work), floor)
    txid = op.txid
    if txid <= floor:
        return None
    if open_bounds:                        # unknown writes before this one had smaller txids
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
    open_bounds = not all(op.known for op in ops)     # unknown gets were dropped
    hints = _hints(ops)
    # Unknown requests that do the same thing are interchangeable: only the earliest called one
    # not applied yet is tried, so the applied ones of a kind are always the first called.
    kinds: dict[tuple, list[int]] = {}
    for i in sorted(range(len(ops)), key=lambda i: ops[i].event.call):
        if not ops[i].known:
            kinds.setdefault(ops[i].subs, []).append(i)
    kind_of = {i: members for members in kinds.values() for i in members}
    used = {id(members): 0 for members in kinds.values()}
    # The known writes can only come in the order of their txids: the next is writes[written].
    writes: list[float] = sorted(op.txid for op in ops if op.txid is not None)
    writes.append(float("inf"))
    written = 0

    def lift(i: int) -> None:
        for node in nodes[i]:
            nxt[prv[node]], prv[nxt[node]] = nxt[node], prv[node]

    def unlift(i: int) -> None:
        for node in reversed(nodes[i]):
            nxt[prv[node]] = prv[nxt[node]] = node

    def candidates() -> list[int]:
        """The requests whose call precedes the first return left, the known ones first."""
        known, unknown = [], []
        node = nxt[0]
        while node != end and not is_ret[node]:
            i = node_op[node]
            (known if ops[i].known else unknown).append(i)
            node = nxt[node]
        return known + unknown

    def expand(state: _State, chain: tuple) -> list[tuple[int, _State, tuple]]:
        """The next steps to try, best first: unknown requests whose txid seems due, the known
        ones, the unknown ones that let a known one fit, the other unknown ones.

        `chain` is (the unknown request placed last or -1, the keys of each unknown request
        since the last known one that no later one touches). Each unknown request placed must
        touch a key of a later one or of the known one that ends its chain, else it could move
        later; and two that touch no common key follow each other in index order only, else
        they could swap."""
        last, loose = chain
        next_txid = writes[written]
        due, known, unknown, blocked = [], [], [], []
        cands = candidates()
        near: dict[int, int] = {}              # key -> candidates that may come next touching it
        for i in cands:
            if ops[i].txid in (None, next_txid):
                for key in touches[i]:
                    near[key] = near.get(key, 0) + 1
        for i in cands:
            op = ops[i]
            if op.known:
                if op.txid not in (None, next_txid) or not all(k & touches[i] for k in loose):
                    continue
                after: tuple = (-1, ())
            else:
                if kind_of[i][used[id(kind_of[i])]] != i or (
                        i < last and not touches[i] & touches[last]):
                    continue
                rest = tuple(k for k in loose if not k & touches[i])
                if not all(any(near.get(key) for key in k) for k in rest) \
                        or not any(near[key] > 1 for key in touches[i]):
                    continue                    # nothing left could justify them
                after = (i, rest + (touches[i],))
            new = _step(op, state, open_bounds)
            if new is state:
                return [(i, new, after)]        # fits without changing anything: no branching
            if new is None:
                if op.known:
                    blocked.append(op)
            elif op.known:
                known.append((i, new, after))
            elif hints[i] is not None and state[1] < hints[i] < next_txid:
                due.append((i, new, after))
            else:
                unknown.append((i, new, after))
        if len(unknown) > 1 and blocked:
            unknown.sort(key=lambda option: all(_step(op, option[1], open_bounds) is None
                                                for op in blocked))
        return due + known + unknown

    total = sum(op.known for op in ops)
    remaining = total
    state: _State = (((None, 0, 0, 0),) * len(keys), 0)
    chain: tuple = (-1, ())                # see expand
    done = applied = 0          # bitsets: the known requests linearized, the unknown applied
    # (known requests linearized, state, chain) -> the sets of unknown requests applied with
    # which that configuration was explored. One explored with fewer applied had every choice
    # this one has (an unknown request may always stay unapplied): it failed, so this one will.
    seen: dict[tuple, list[int]] = {}
    explored = 0
    stack: list[tuple] = []
    options, pos = expand(state, chain), 0
    best = -1
    report: tuple = ()
    while remaining:
        while pos < len(options):
            i, new, new_chain = options[pos]
            pos += 1
            if ops[i].known:
                new_done, new_applied = done | 1 << i, applied
            else:
                new_done, new_applied = done, applied | 1 << i
            earlier = seen.setdefault((new_done, new, new_chain), [])
            if any(not (subset & ~new_applied) for subset in earlier):
                continue
            earlier.append(new_applied)
            explored += 1
            if explored > max_states:
                return Verdict(False, f"{_UNDECIDED}: the search gave up after {max_states} "
                                      f"states in the component of keys {_names(keys)} "
                                      f"({len(ops)} events); raise max_states to decide it",
                               keys)
            stack.append((options, pos, i, state, chain, done, applied))
            lift(i)
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
                return _failure(keys, ops, best, total, report, open_bounds)
            options, pos, i, state, chain, done, applied = stack.pop()
            unlift(i)
            remaining += ops[i].known
            written -= ops[i].txid is not None
            if not ops[i].known:
                used[id(kind_of[i])] -= 1
    return None


def _hints(ops: list[_Op]) -> list[int | None]:
    """For each unknown request, the least modify txid a get read from a value it puts and no
    known request wrote: likely its own txid. The search tries it first once that txid is due
    (between the last known write and the next); a guess that orders the search, no more."""
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
             open_bounds: bool) -> Verdict:
    nexts, state, last, next_txid = report
    lines = [(f"not linearizable: keys {_names(keys)} ({len(ops)} events, {len(ops) - total} "
              f"with unknown outcome): at most {best} of the {total} events with a known "
              "outcome can be linearized.")]
    if last:
        lines.append("The last ones placed on the longest way:")
        lines.extend(f"  {_show(ops[i].event)}" for i in last)
    lines.append(f"Then the keys hold {_show_state(keys, state, ops)}, and none of these can come "
                 "next:")
    shown = [i for i in nexts if ops[i].known][:REPORT_EVENTS]
    for i in shown:
        if ops[i].txid not in (None, next_txid):
            why = f"the next known txid is {next_txid}"
        elif _step(ops[i], state, open_bounds) is None:
            why = "contradicts the state"
        else:
            why = "fits, but leads nowhere"
        lines.append(f"  {_show(ops[i].event)}   ({why})")
    unknown = sum(not ops[i].known for i in nexts)
    hidden = len(nexts) - len(shown) - unknown
    if hidden > 0:
        lines.append(f"  ... and {hidden} more")
    if unknown:
        lines.append(f"  (and {unknown} requests with unknown outcome, applied or not)")
    return Verdict(False, "\n".join(lines), keys)


def _names(keys: tuple[str, ...]) -> str:
    names = ", ".join(map(repr, keys[:REPORT_EVENTS]))
    return f"[{names}{', ...' if len(keys) > REPORT_EVENTS else ''}]"


def _show_state(keys: tuple[str, ...], state: _State, ops: list[_Op]) -> str:
    writer = {op.txid: op.event.op for op in ops if op.txid is not None}
    parts = []
    for key, cur in list(zip(keys, state[0]))[:REPORT_EVENTS]:
        if not cur[1]:
            parts.append(f"{key!r} absent")
            continue
        value, version, lo, hi = cur
        if value is _UNREAD and lo in writer and lo == hi:     # the value as its put wrote it
            op = writer[lo]
            value = [sub[2] for sub in (op[1] if op[0] == "multi" else (op,))
                     if sub[0] == _PUT and sub[1] == key][-1]
        txid = (str(lo) if lo == hi else f">= {lo}" if hi is None else f"in {lo}..{hi}")
        parts.append(f"{key!r}={value!r} v{version} txid {txid}")
    return "; ".join(parts) + ("; ..." if len(keys) > REPORT_EVENTS else "")


def _show(event: Event) -> str:
    """One event on one line: client, [call, ret], operation -> result."""
    ret = "none" if event.ret is None else _time(event.ret)
    outcome = "unknown" if event.ret is None or event.result is None else repr(event.result)
    return f"c{event.client} [{_time(event.call)}, {ret}] {event.op!r} -> {outcome}"


def _time(t: float) -> str:
    return f"{t:.6f}".rstrip("0").rstrip(".")
