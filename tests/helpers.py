"""What several test modules share: the client's ROUTER stub, its injected sleep, and the
hypothesis strategies of namespace records. (tests/conftest.py holds the pure core's apply
helpers.) Imported as `helpers`: pytest puts tests/ on sys.path, beside conftest.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq
from hypothesis import strategies as st

from mwcluster import Client
from mwcluster.core import records as r
from mwcluster.core.values import encode
from mwcluster.engine import Engine
from mwcluster.storage.fsutil import FaultyJournalIO
from mwcluster.wire.protocol import (ErrorCode, Op, ProtocolError, decode_reply,
                                     decode_request, decode_sub_request, encode_error,
                                     encode_reply)

__all__ = ["EPOCH", "KEYS", "Sleeps", "Stub", "engine_on", "make_client"]


@contextmanager
def engine_on(path: Path, epoch: int, io: FaultyJournalIO) -> Iterator[Engine]:
    """An open Engine whose journal I/O fails on demand (retried quickly); at the end the
    faults are healed and the engine closed."""
    eng = Engine(path, epoch=epoch, journal_io=io, retry_initial_s=0.001, retry_max_s=0.01)
    eng.open()
    try:
        yield eng
    finally:
        io.heal()
        io.block_writes.set()
        eng.close()

# --- the client's stub master ------------------------------------------------------------

EPOCH = 7


class Stub:
    """A ROUTER in a thread. `handler(request, identity)` returns a list of frames to send
    back; the default answers every request like a tiny master would."""

    def __init__(self, handler=None):
        self.handler = handler or self.answer
        self.requests: list = []           # (identity, Request) in arrival order
        self.lock = threading.Lock()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.store: dict[str, tuple[bytes, int]] = {}
        self.txid = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self._stop.is_set():
            if not self.sock.poll(20, zmq.POLLIN):
                continue
            identity, frame = self.sock.recv_multipart()
            req = decode_request(frame)
            with self.lock:
                self.requests.append((identity, req))
            for reply in self.handler(req, identity):
                self.sock.send_multipart([identity, reply])

    def close(self):
        self._stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()
        self.sock.close(linger=0)
        self.ctx.term()

    def seen(self):
        with self.lock:
            return list(self.requests)

    def answer(self, req, identity=None):
        """A minimal master over a dict: PUT, GET, STAT, DELETE, CHILDREN, LIST, STATUS, PING,
        and BATCH of those."""
        rid = req.request_id
        if req.op == Op.BATCH:
            subs = []
            for raw in req.args:
                try:
                    sub = decode_sub_request(req.client_id, raw)
                except ProtocolError as exc:
                    subs.append([exc.request_id or 0, int(exc.error), 0,
                                 [exc.error.name.lower(), str(exc)]])
                    continue
                r = decode_reply(self.answer(sub)[0])
                subs.append([r.request_id, r.status, r.txid, r.result])
            return [encode_reply(rid, EPOCH, 0, max([s[2] for s in subs], default=0), subs)]
        if req.op == Op.PUT:
            key, value, expected = req.args
            version = self.store.get(key, (b"", 0))[1]
            if expected is not None and expected != version:
                return [encode_error(rid, EPOCH, ErrorCode.BAD_VERSION,
                                     f"{key} is at version {version}, not {expected}")]
            self.txid += 1
            self.store[key] = (value, version + 1)
            return [encode_reply(rid, EPOCH, 0, self.txid, version + 1)]
        if req.op == Op.GET:
            found = self.store.get(req.args[0])
            result = None if found is None else [found[0], found[1], 1, 1]
            return [encode_reply(rid, EPOCH, 0, 0, result)]
        if req.op == Op.STAT:
            found = self.store.get(req.args[0])
            result = None if found is None else [found[1], 1, 1, len(found[0])]
            return [encode_reply(rid, EPOCH, 0, 0, result)]
        if req.op == Op.DELETE:
            key, recursive, _ = req.args
            doomed = [k for k in self.store if k == key or (recursive and
                                                           k.startswith(key + "/"))]
            if not doomed:
                return [encode_error(rid, EPOCH, ErrorCode.NO_NODE, f"{key} does not exist")]
            for k in doomed:
                del self.store[k]
            self.txid += 1
            return [encode_reply(rid, EPOCH, 0, self.txid, len(doomed))]
        if req.op == Op.CHILDREN:
            base = req.args[0].rstrip("/") + "/"
            names = sorted({k[len(base):].split("/")[0] for k in self.store
                            if k.startswith(base)})
            return [encode_reply(rid, EPOCH, 0, 0, names[:req.args[1]])]
        if req.op == Op.LIST:
            prefix, limit, after = req.args
            keys = sorted(k for k in self.store if k.startswith(prefix)
                          and (after is None or k > after))
            return [encode_reply(rid, EPOCH, 0, 0, keys[:limit])]
        if req.op == Op.STATUS:
            return [encode_reply(rid, EPOCH, 0, 0, {"epoch": EPOCH, "txid": self.txid})]
        if req.op == Op.PING:
            return [encode_reply(rid, EPOCH, 0, 0, None)]
        if req.op == Op.FETCH:
            return [encode_error(rid, EPOCH, ErrorCode.TRUNCATED, "stub keeps no records")]
        return [encode_error(rid, EPOCH, ErrorCode.UNKNOWN_OP, f"stub: op {req.op}")]


class Sleeps(list):
    """An injected sleep: records how long the client would have slept."""

    def __call__(self, seconds):
        self.append(seconds)


def make_client(endpoint, **kw):
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("sleep", Sleeps())
    return Client(endpoint, **kw)


# --- namespace records (hypothesis) ------------------------------------------------------

KEYS = ["/a", "/a/b", "/a/b/c", "/a/bc", "/a-b", "/b", "/b/a"]

# Values, patches, outcomes and counters come from small fixed sets, one choice each: their
# own encodings are tested elsewhere, and fewer choices per step make shrinking much faster.

keys = st.sampled_from(KEYS)
expected_versions = st.sampled_from([None, None, None, 0, 1, 2, 3])
VALUES = [0, 1, -1, 2**40, 0.5, "", "x", b"\x00b", None, True, [], [1, [2]], {},
          {"x": 1}, {"x": {"y": 2}, "z": None}, {1: "int key"}]
small_values = st.sampled_from(VALUES)
PATCHES = [{}, {"x": 2}, {"x": None}, {"y": {"z": 1}}, {"x": {"y": None}, "w": [1]},
           {"z": None, "y": None}, [1]]                  # the last is not a map: refused
patches = st.sampled_from(PATCHES)

puts = st.builds(lambda k, v, e: r.Put(k, encode(v), e), keys, small_values, expected_versions)
merges = st.builds(lambda k, p, e: r.Merge(k, encode(p), e), keys, patches, expected_versions)
deletes = st.builds(r.Delete, keys, st.booleans(), expected_versions)
checks = st.builds(r.Check, keys, st.sampled_from([0, 1, 2]))
# Unconditional puts are common in multis, so that a failing op often has earlier ones to undo.
multis = st.builds(lambda ops: r.Multi(tuple(ops)), st.lists(
    st.one_of(puts, puts, merges, deletes, checks), min_size=1, max_size=4))
noops = st.builds(r.Noop, st.sampled_from(["", "tick"]))


def run_quick_benchmark(script: str, section: str, headers, tmp_path: Path) -> str:
    """Run benchmarks/SCRIPT --quick --record into a file of tmp_path; check it exited 0,
    printed and recorded every header in `headers`, wrote section `section` with its command,
    machine and date, and left docs/benchmarks.md alone. Returns the recorded text."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    docs = root / "docs" / "benchmarks.md"
    before = docs.read_bytes() if docs.exists() else None
    out = tmp_path / "benchmarks.md"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / script), "--quick",
                           "--record", "--results", str(out)],
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for header in headers:
        assert header in done.stdout, done.stdout
        assert header in text, text
    assert f"<!-- begin {section} -->\n## {section}\n" in text, text
    assert text.rstrip().endswith(f"<!-- end {section} -->"), text
    assert f"- command: `python benchmarks/{script} --quick --record`" in text, text
    assert "- machine: " in text and "- date: " in text, text
    assert (docs.read_bytes() if docs.exists() else None) == before
    return text


def pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
