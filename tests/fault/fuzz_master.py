"""Coverage-guided fuzzing (atheris) of everything that reads untrusted bytes.

    python tests/fault/fuzz_master.py CORPUS_DIR -max_total_time=60

Each input's first byte picks a target; the rest is the message:

  0  the master's request handlers (`Handlers.handle`, the whole per-request path: decode,
     validation, admission, apply, reply) over a real Engine in a temporary directory;
  1  a reply frame (`decode_reply`), as a client reads it;
  2  a log-stream message (`decode_pub`), as a checkpoint node reads it;
  3  a journal payload (`records.decode_payload`) that passes admission (`check_admission`:
     what the master lets into its journal) applied to a scratch state, as replay does;
  4  a journal frame (`segments.decode_record`);
  5  the handlers of a master with authorization on (security/access.py): the next byte picks
     who sends the message (a principal of each role, one limited to a prefix, an unknown
     key, no key); a request from one whose roles allow no mutation must change nothing.

A finding is any exception other than the documented refusals (MwclusterError and its
subclasses; ValueError from the frame decoder), a reply that does not decode, a handler
answer that is not a reply, or a state whose invariants (`State.validate`) no longer hold.
`write_seeds(dir)` writes one valid input per request type, so fuzzing starts from messages
the master accepts. tests/fault/test_fuzz_master.py runs this for a bounded time.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import atheris
import msgpack

with atheris.instrument_imports():
    from mwcluster import errors
    from mwcluster.core import records
    from mwcluster.core.limits import Limits
    from mwcluster.core.state import State
    from mwcluster.engine import Engine
    from mwcluster.nodes.master.handlers import Drain as _Drain
    from mwcluster.nodes.master.handlers import Handlers
    from mwcluster.nodes.master.stats import MasterStats
    from mwcluster.security.access import Access
    from mwcluster.security.keys import Principal
    from mwcluster.storage import segments
    from mwcluster.wire import protocol
    from mwcluster.wire.protocol import Op, decode_reply, encode_request

EPOCH = 3
MAX_MESSAGE_BYTES = 1 << 16
CHECK_EVERY = 256           # inputs between full invariant checks of the handlers' state
RESET_EVERY_KEYS = 20_000   # a fresh engine once the state grows this large

_engine: Engine | None = None
_handlers: Handlers | None = None
_secured_engine: Engine | None = None
_secured: Handlers | None = None
# (user id, may it change the state) per sender of target 5
_PRINCIPALS = [("read", ("read",), ()), ("write", ("write",), ()), ("w", ("worker",), ()),
               ("replica", ("replica",), ()), ("admin", ("admin",), ()),
               ("etl", ("write",), ("/teams/etl/",))]
_SENDERS = [(f"{name:0<40}"[:40], bool({"write", "worker", "admin"} & set(roles)))
            for name, roles, _ in _PRINCIPALS] + [("unknown-key", False), (None, False)]
_count = 0
_dir = tempfile.mkdtemp(prefix="mwcluster-fuzz-")
atexit.register(shutil.rmtree, _dir, True)


def _fresh_handlers() -> Handlers:
    global _engine, _handlers
    if _engine is not None:
        _engine.close()
    path = Path(_dir) / f"data-{_count}"
    _engine = Engine(path, epoch=EPOCH)
    _engine.open()
    _handlers = Handlers(_engine, EPOCH, MasterStats(), status=lambda: {"fuzz": True},
                         max_message_bytes=MAX_MESSAGE_BYTES)
    return _handlers


def _fresh_secured() -> Handlers:
    global _secured_engine, _secured
    if _secured_engine is not None:
        _secured_engine.close()
    _secured_engine = Engine(Path(_dir) / f"secured-{_count}", epoch=EPOCH)
    _secured_engine.open()
    principals = {f"{name:0<40}"[:40].encode(): Principal(name, f"{name:0<40}"[:40].encode(),
                                                          frozenset(roles), prefixes)
                  for name, roles, prefixes in _PRINCIPALS}
    _secured = Handlers(_secured_engine, EPOCH, MasterStats(), status=lambda: {"fuzz": True},
                        max_message_bytes=MAX_MESSAGE_BYTES, access=Access(principals))
    return _secured


def _secured_target(body: bytes) -> None:
    global _count
    if not body:
        return
    user, may_change = _SENDERS[body[0] % len(_SENDERS)]
    handlers = _secured or _fresh_secured()
    before = handlers.engine.state.txid
    out = handlers.handle(b"fuzz-peer", body[1:], _Drain(0.0), user, "fuzz")
    if out is not None:
        decode_reply(out)
    if not may_change and handlers.engine.state.txid != before:
        raise AssertionError(f"a request from {user!r}, whose roles allow no mutation, "
                             f"changed the state (txid {before} -> "
                             f"{handlers.engine.state.txid})")
    _count += 1
    if _count % CHECK_EVERY == 0:
        _check_state(handlers.engine.state, f"{_count} requests")
        if len(handlers.engine.state.ns) > RESET_EVERY_KEYS:
            _fresh_secured()


def _check_state(state: State, what: str) -> None:
    problems = state.validate()
    if problems:
        raise AssertionError(f"invariants broken after {what}: {problems[:5]}")


def _handlers_target(body: bytes) -> None:
    global _count
    handlers = _handlers or _fresh_handlers()
    out = handlers.handle(b"fuzz-peer", body, _Drain(0.0))
    if out is not None:
        reply = decode_reply(out)            # must decode: a ProtocolError here is a finding
        if not isinstance(reply.status, int) or not isinstance(reply.request_id, int):
            raise AssertionError(f"a reply with a bad status or id: {reply!r}")
    _count += 1
    if _count % CHECK_EVERY == 0:
        _check_state(handlers.engine.state, f"{_count} requests")
        if len(handlers.engine.state.ns) > RESET_EVERY_KEYS:
            _fresh_handlers()


_scratch = State()
_LIMITS = Limits()


def _replay_target(body: bytes) -> None:
    global _scratch
    try:
        rec, origin = records.decode_payload(body)
        records.check_admission(rec, _LIMITS, origin)
    except errors.MwclusterError:
        return
    try:
        _scratch.apply(_scratch.txid + 1, rec)
    except errors.ApplyError:
        pass
    if len(_scratch.ns) > 5_000:
        _scratch = State()
    _check_state(_scratch, f"replaying {rec!r:.200}")


def one_input(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 6, data[1:]
    if target == 0:
        _handlers_target(body)
        return
    if target == 5:
        _secured_target(body)
        return
    try:
        if target == 1:
            decode_reply(body)
        elif target == 2:
            protocol.decode_pub(body[:1], body[1:])
        elif target == 3:
            _replay_target(body)
        else:
            try:
                segments.decode_record(body)
            except ValueError:
                pass
    except errors.MwclusterError:
        pass


def _pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def seed_messages() -> list[bytes]:
    """One valid input per target and request type (target byte first)."""
    cid = b"seed-client"
    reqs = [
        (Op.PUT, ["/a/b", _pack({"x": 1}), None]), (Op.PUT, ["/a/c", _pack([1, 2]), 0]),
        (Op.MERGE, ["/a/b", _pack({"y": 2}), None]), (Op.DELETE, ["/a", True, None]),
        (Op.MULTI, [[[4, "/a/b", 1], [1, "/a/d", _pack(1), None]]]),
        (Op.GET, ["/a/b"]), (Op.STAT, ["/a/b"]), (Op.CHILDREN, ["/a", 10]),
        (Op.LIST, ["/a", 10, None]), (Op.STATUS, []), (Op.PING, []), (Op.FETCH, [1, 4096]),
        (Op.SNAPSHOT_INFO, []), (Op.SNAPSHOT_CHUNK, [0, 0, 16]),
        (Op.BATCH, [[[1, int(Op.PUT), 0, ["/b/1", _pack(1), None]],
                     [2, int(Op.GET), 0, ["/b/1"]]]]),
    ]
    seeds = [bytes([0]) + encode_request(cid, i + 1, int(op), args, i % 3)
             for i, (op, args) in enumerate(reqs)]
    seeds.append(bytes([1]) + protocol.encode_reply(1, EPOCH, 0, 5, [1, "x"]))
    seeds.append(bytes([2]) + protocol.TOPIC_LOG
                 + protocol.encode_log_batch(EPOCH, [(1, EPOCH, b"\x94\x01\xa2/a\xc4\x01x\xc0")]))
    seeds.append(bytes([2]) + protocol.TOPIC_HEARTBEAT
                 + protocol.encode_heartbeat(EPOCH, 5, 123, 1000))
    seeds.append(bytes([3]) + records.encode_record(records.Put("/r", _pack(1))))
    seeds.append(bytes([3]) + records.encode_record(records.JobSubmit(
        "j1", "job", "h", 0, 2, [[1, {}], [2, {}]], 5)))
    seeds.append(bytes([4]) + segments.encode_record(7, EPOCH, b"payload"))
    for sender in range(len(_SENDERS)):       # every request type from every sender
        seeds += [bytes([5, sender]) + encode_request(cid, i + 1, int(op), args, 0)
                  for i, (op, args) in enumerate(reqs)]
    return seeds


def write_seeds(directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seed_messages()):
        (directory / f"seed-{i:03d}").write_bytes(seed)


def main() -> None:
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus:
        write_seeds(corpus[0])
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
