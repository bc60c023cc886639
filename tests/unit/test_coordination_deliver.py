"""The master's parked watches, answered by deliver() (nodes/master/coordination.py): a seeded
run of puts, deletes and multis over nested and sibling prefixes, with watchers that ask again
from the txid each answer names, must hand every watcher exactly the events of its prefix in
txid order, a record's events together, whatever its limit; a watcher the log moved past is
answered COMPACTED, never a gap."""

from __future__ import annotations

import random

import pytest

from mwcluster.core import records as r
from mwcluster.core.durability import FAST, Durability
from mwcluster.core.values import encode
from mwcluster.engine import Engine
from mwcluster.nodes.master.coordination import Coordination
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.wire.protocol import EVENT_DELETE, ErrorCode, Op, Request, decode_reply

APPLIED = int(Durability.ASYNC) | FAST       # answered at what is applied: no journal wait
# nested and sibling prefixes, and exact keys ("/p/1/a" is also a key written below) that are
# shorter than other watched prefixes
PREFIXES = ["/p/", "/p/1/", "/p/10/", "/p/2/", "/q/", "/p/1/x/", "/q/a", "/p/1/xyz/long/"]


@pytest.fixture
def engine(tmp_path):
    eng = Engine(tmp_path / "d", background=False, watch_events=100_000)
    eng.open()
    yield eng
    eng.close()


class Watcher:
    def __init__(self, ident: bytes, prefix: str, limit: int) -> None:
        self.ident, self.prefix, self.limit = ident, prefix, limit
        self.next_txid, self.request_id = 1, 0
        self.seen: list[tuple] = []
        self.answers: list[list] = []

    def ask(self, coord: Coordination) -> None:
        """Send the next WATCH; an immediate answer is taken at once."""
        self.request_id += 1
        req = Request(b"c", self.request_id, int(Op.WATCH), APPLIED,
                      [self.prefix, self.next_txid, None, self.limit, 60_000])
        answer = coord.watch(self.ident, req, 0.0)
        if answer is not None:
            self.take(coord, *answer)

    def take(self, coord: Coordination, status: int, _txid: int, result) -> None:
        assert status == 0, result
        next_txid, _epoch, events = result
        assert next_txid > self.next_txid or not events
        self.next_txid = next_txid
        self.answers.append(events)
        self.seen.extend((e[0], e[1], e[2]) for e in events)
        self.ask(coord)


def write_some(engine: Engine, rng: random.Random, n: int) -> None:
    keys = [p + k for p in PREFIXES for k in ("a", "b", "1/z")]
    for _ in range(n):
        roll = rng.random()
        if roll < 0.6:
            engine.submit(r.Put(rng.choice(keys), encode(rng.randrange(100))))
        elif roll < 0.8:
            engine.submit(r.Multi(tuple(r.Put(rng.choice(keys), encode(i))
                                        for i in range(rng.randrange(2, 6)))))
        elif rng.random() < 0.2:
            top = rng.choice(PREFIXES).rstrip("/")
            if engine.state.ns.get(top) is not None or engine.state.ns.count_below(top):
                engine.submit(r.Delete(top, recursive=True))
        else:
            key = rng.choice(keys)
            if engine.state.ns.get(key) is not None:
                engine.submit(r.Delete(key))


def route(coord: Coordination, watchers: dict[bytes, Watcher], frames) -> None:
    for ident, frame in frames:
        reply = decode_reply(frame)
        watchers[ident].take(coord, reply.status, reply.txid, reply.result)


@pytest.mark.parametrize("seed", range(6))
def test_every_watcher_gets_exactly_its_prefixes_events_in_order(engine, seed):
    rng = random.Random(seed)
    coord = Coordination(engine, MasterStats(), 0, 0.0, replica_txid=lambda: 0)
    watchers = {}
    for i, prefix in enumerate(PREFIXES * 3):
        ident = b"w%d" % i
        watchers[ident] = Watcher(ident, prefix, limit=rng.choice([1, 2, 3, 1000]))
    for w in watchers.values():
        w.ask(coord)
    held: list = []
    for _ in range(60):
        write_some(engine, rng, rng.randrange(1, 12))
        # some answers reach their watchers only after more writes: those ask again from
        # behind what deliver() has matched, and are answered at once, then wait again
        route(coord, watchers, held)
        frames = coord.deliver()
        rng.shuffle(frames)
        cut = rng.randrange(len(frames) + 1)
        route(coord, watchers, frames[:cut])
        held = frames[cut:]
    route(coord, watchers, held + coord.deliver())
    log = engine.changes.events
    for w in watchers.values():
        expected = [(t, EVENT_DELETE if what is None else None, key) for t, key, what in log
                    if key.startswith(w.prefix)]
        assert [(t, k) for t, _, k in w.seen] == [(t, k) for t, _, k in expected], w.prefix
        assert all((ty == EVENT_DELETE) == (want == EVENT_DELETE)
                   for (_, ty, _), (_, want, _) in zip(w.seen, expected))
        # a record's events are never split over two answers, and an answer holds at most
        # `limit` events but for the rest of the record its last one is in
        for before, after in zip(w.answers, w.answers[1:]):
            if before and after:
                assert before[-1][0] != after[0][0]
        for events in w.answers:
            assert len({e[0] for e in events[w.limit - 1:]}) <= 1, w.limit
    assert coord.parked == len(watchers)


def test_a_watcher_parked_behind_the_logs_trim_is_answered_compacted(tmp_path):
    engine = Engine(tmp_path / "d", background=False, watch_events=10)
    engine.open()
    try:
        coord = Coordination(engine, MasterStats(), 0, 0.0, replica_txid=lambda: 0)
        w = Watcher(b"w", "/p/", limit=1000)
        w.ask(coord)
        assert coord.parked == 1
        for i in range(50):                 # the log keeps 10 events: the rest are trimmed
            engine.submit(r.Put(f"/q/{i}", encode(i)))
        engine.submit(r.Put("/p/late", encode(0)))
        engine.changes.settle()
        frames = coord.deliver()
        assert len(frames) == 1
        reply = decode_reply(frames[0][1])
        assert reply.status == ErrorCode.COMPACTED
        assert reply.result[0] == "compacted" and reply.result[2] > w.next_txid
    finally:
        engine.close()


def test_a_replicated_watch_below_the_masters_txid_gets_each_event_once_the_standby_acks(
        engine):
    """A restarted master's replicated horizon starts at 0, below its txid: a watch parked
    there is answered from its own txid when the standby's ack comes, skipping nothing."""
    txids = [engine.submit(r.Put(f"/r/{i}", encode(i)))[0] for i in range(5)]
    acked = [0]
    coord = Coordination(engine, MasterStats(), 0, 0.0, replica_txid=lambda: acked[0])
    req = Request(b"c", 1, int(Op.WATCH), int(Durability.REPLICATED),
                  ["/r/", 1, None, 100, 60_000])
    assert coord.watch(b"w", req, 0.0) is None and coord.parked == 1
    assert coord.deliver() == []
    acked[0] = txids[-1]
    frames = coord.deliver()
    assert len(frames) == 1
    reply = decode_reply(frames[0][1])
    assert [e[0] for e in reply.result[2]] == txids and reply.result[0] == txids[-1] + 1
