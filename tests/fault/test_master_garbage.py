"""Hypothesis-generated garbage against a running master.

Every answer to a bad message is an error reply (or nothing at all, when not even the frames
hold together); the master keeps serving (a PING right after is answered) and applies nothing
(txid and digest unchanged). Garbage that happens to be a valid read may be answered with
success; garbage that would be a valid mutation is skipped, since applying it is correct. A
BATCH of garbage sub-requests is answered with one error sub-reply per bad sub-request (a
batch in which any sub-request would apply is skipped likewise).
"""

from __future__ import annotations

import itertools
import os
import time

import msgpack
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from mwcluster.core.limits import Limits
from mwcluster.core.records import Put, check_admission, from_wire
from mwcluster.core.state import State
from mwcluster.testing import MasterProcess, RawDealer
from mwcluster.testing.keys import ClusterKeys
from mwcluster.wire.protocol import (JOB_MUTATIONS, MUTATIONS, Op, ProtocolError, check_args,
                                     decode_request, decode_sub_request)

pytestmark = pytest.mark.fault

MAX_MESSAGE_BYTES = 65536
PING_IDS = itertools.count(0x5EED_0000_0000)

ints = st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False),
                    st.text(max_size=20), st.binary(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.one_of(st.text(max_size=8), ints), inner,
                                                 max_size=4)), max_leaves=20)
ops = st.one_of(st.sampled_from([int(op) for op in Op]), ints)
keys = st.one_of(st.sampled_from(["/g", "/g/h", "", "/", "g", "/g/", "/a/../b", "/\x00"]),
                 st.text(max_size=12))
mutation_args = st.lists(st.one_of(keys, st.binary(max_size=12), ints, st.none(),
                                   st.booleans(), values), max_size=4)
envelopes = st.tuples(st.one_of(st.just(1), values), st.one_of(st.binary(max_size=70), values),
                      st.one_of(ints, values), ops, st.one_of(st.integers(0, 3), values),
                      st.one_of(mutation_args, values))
# a well-formed envelope around garbage arguments: reaches every operation's own checks
bad_args = st.tuples(st.just(1), st.binary(min_size=1, max_size=64), st.integers(0, 1 << 40),
                     st.sampled_from([int(op) for op in Op]), st.integers(0, 2),
                     mutation_args)
# mutations with arguments of the right types and doubtful values: admission and apply refuse
expected = st.one_of(st.none(), st.integers(-2, 3), ints)
typed_mutations = st.one_of(
    st.tuples(st.sampled_from([1, 2]), keys, st.binary(max_size=12), expected),
    st.tuples(st.just(3), keys, st.booleans(), expected),
).map(list)
typed_args = st.one_of(typed_mutations.map(lambda m: (m[0], m[1:])),
                       st.lists(st.one_of(typed_mutations,
                                          st.tuples(st.just(4), keys, expected).map(list)),
                                max_size=3).map(lambda ops: (5, [ops])))
typed = st.tuples(st.binary(min_size=1, max_size=64), st.integers(0, 1 << 40), typed_args,
                  st.integers(0, 2)).map(
    lambda t: msgpack.packb([1, t[0], t[1], t[2][0], t[3], t[2][1]], use_bin_type=True))
# BATCH frames around every kind of sub-request: typed mutations, garbage fields, nested
# batches, values that are not sub-requests at all
sub_requests = st.one_of(
    st.tuples(st.integers(0, 1 << 40), typed_args, st.integers(0, 2)).map(
        lambda t: [t[0], t[1][0], t[2], t[1][1]]),
    st.tuples(st.one_of(ints, values), ops, st.one_of(st.integers(0, 3), values),
              st.one_of(mutation_args, values)).map(list),
    st.tuples(st.integers(0, 1 << 40), st.just(int(Op.BATCH)), st.integers(0, 2),
              st.lists(st.lists(values, max_size=4), max_size=2)).map(list),
    values,
)
batches = st.tuples(st.binary(min_size=1, max_size=64), st.integers(0, 1 << 40),
                    st.integers(0, 2), st.lists(sub_requests, max_size=6)).map(
    lambda t: msgpack.packb([1, t[0], t[1], int(Op.BATCH), t[2], t[3]], use_bin_type=True))
frames = st.one_of(
    typed, typed, typed, batches, batches,
    bad_args.map(lambda e: msgpack.packb(list(e), use_bin_type=True)),
    st.binary(max_size=300),
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    envelopes.map(lambda e: msgpack.packb(list(e), use_bin_type=True)),
    st.lists(values, min_size=6, max_size=6).map(lambda v: msgpack.packb(v, use_bin_type=True)),
)
messages = st.one_of(frames.map(lambda f: [f]), st.lists(frames, min_size=2, max_size=4))


def classify(message: list[bytes]) -> str:
    """'mutation' when the master would apply something from it, 'read' when it is a valid
    read, 'batch' for a BATCH that applies nothing, else ''."""
    if len(message) != 1:
        return ""
    try:
        req = decode_request(message[0], MAX_MESSAGE_BYTES)
    except ProtocolError:
        return ""
    if req.op == Op.BATCH:
        state = mirror()
        if len(req.args) <= 1024 and any(
                applies(state, req.client_id, sub) for sub in req.args):
            return "mutation"
        return "batch"
    if req.op not in MUTATIONS and req.op not in JOB_MUTATIONS:
        return "read"
    return "mutation" if applies(mirror(), req.client_id, message[0]) else ""


def applies(state: State, client_id: bytes, sub) -> bool:
    """Whether the master would apply this request (a frame) or sub-request (decoded) to a
    state like `state` (which it then changes)."""
    try:
        req = (decode_request(sub, MAX_MESSAGE_BYTES) if isinstance(sub, bytes)
               else decode_sub_request(client_id, sub))
        if req.op in JOB_MUTATIONS:
            check_args(req)      # well-typed job ops may apply: counted as mutations
            return True
        if req.op not in MUTATIONS:
            return False
        rec = from_wire([req.op, *req.args])
        check_admission(rec, Limits())
        state.apply(state.txid + 1, rec)    # the master's state: only the fixture's one put
    except Exception:
        return False
    return True


SEED_VALUE = msgpack.packb({"a": 1})


def mirror() -> State:
    state = State()
    state.apply(1, Put("/g/h", SEED_VALUE))
    return state


@pytest.fixture(scope="module", params=["plain", "curve"])
def master(tmp_path_factory, request):
    """A plain master, and one with CURVE on whose garbage comes from an authenticated admin
    (hostile input from a peer that passed authentication reaches every operation)."""
    env = {**os.environ, "MWCLUSTER_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)}
    base = tmp_path_factory.mktemp("garbage")
    keys = ClusterKeys(base / "keys") if request.param == "curve" else None
    with MasterProcess(base / "data", env=env, keys=keys) as m:
        yield m


@pytest.fixture(scope="module")
def dealer(master):
    creds = master.keys.credentials("admin") if master.keys else None
    with RawDealer(master.client_endpoint, timeout_s=5, credentials=creds) as d:
        assert d.call(Op.PUT, ["/g/h", SEED_VALUE, None]).txid == 1
        yield d


def ping_after(dealer: RawDealer) -> list:
    """Send a PING; return every reply that came before its answer."""
    rid = dealer.send(Op.PING, request_id=next(PING_IDS))
    before = []
    while True:
        reply = dealer.recv()
        assert reply is not None, "the master stopped answering"
        if reply.request_id == rid and reply.status == 0 and reply.result is None:
            return before
        before.append(reply)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=messages)
def test_garbage_gets_error_replies_and_changes_nothing(master, dealer, message):
    kind = classify(message)
    assume(kind != "mutation")
    status = dealer.status()
    dealer.send_frames(*message)
    replies = ping_after(dealer)
    assert len(replies) <= 1, replies
    if not replies:
        event("no reply")
    for reply in replies:
        event(f"reply status {reply.status}" + (f" {reply.result[0]}" if reply.status else ""))
        assert reply.epoch == master.epoch
        if reply.status == 0:
            assert kind in ("read", "batch"), (message, reply)
            if kind == "batch":
                check_sub_replies(reply.result)
        else:
            assert reply.txid == 0 and isinstance(reply.result, list) and \
                isinstance(reply.result[1], str)
    after = dealer.status()
    assert (after["txid"], after["digest"]) == (status["txid"], status["digest"])


def check_sub_replies(subs) -> None:
    """Each sub-reply of a batch that applied nothing: an error, or a read's success."""
    assert isinstance(subs, list)
    for rid, status, txid, result in subs:
        assert isinstance(rid, int) and txid == 0
        if status:
            assert isinstance(result, list) and isinstance(result[1], str)
            event(f"sub-reply status {status} {result[0]}")


def test_frames_over_the_size_limit_are_cut_at_the_socket(master, dealer):
    before = dealer.status()
    for size in (MAX_MESSAGE_BYTES + 1, 4 * MAX_MESSAGE_BYTES):
        dealer.send_frames(b"\x91" + b"\x00" * size)
        deadline = time.monotonic() + 10   # the connection is dropped; the DEALER reconnects
        pings: set[int] = set()
        while True:
            rid = dealer.send(Op.PING, request_id=next(PING_IDS))
            pings.add(rid)
            reply = dealer.recv(timeout_s=0.2)
            while reply is not None and reply.request_id != rid:
                # a late answer to an earlier PING of this loop, or an error for the frame
                assert reply.request_id in pings or reply.status != 0, reply
                reply = dealer.recv(timeout_s=0.2)
            if reply is not None:
                break
            assert time.monotonic() < deadline, "the master did not answer after a huge frame"
    after = dealer.status()
    assert (after["txid"], after["digest"]) == (before["txid"], before["digest"])


def test_many_frames_and_empty_frames(master, dealer):
    before = dealer.status()
    dealer.send_frames(b"", b"", b"")
    dealer.send_frames(b"")
    dealer.send_frames(*([b"x" * 1000] * 50))
    replies = ping_after(dealer)
    assert len(replies) == 3 and all(r.status == 1 for r in replies)
    assert "50 frames" in replies[2].result[1]
    assert dealer.status()["digest"] == before["digest"]
    assert master.returncode is None
