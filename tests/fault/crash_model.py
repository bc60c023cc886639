"""The model behind the crash tests (`test_crash_loop.py`, `test_crash_points.py`): a master
killed under a mixed load, checked after every restart against what was acknowledged.

Several writer streams (one DEALER each) drive puts, compare-and-sets, merges, deletes and
all-or-none multis, each on keys of its own, with a window of requests in flight; a worker
stream takes tasks of a job, reports their progress and finishes them, one request at a time.
One
DEALER's requests are applied in the order sent, every request here is built to succeed
(compare-and-sets carry the version the model predicts), and each applied request is exactly
one record; so after a restart at txid T:

- each stream's keys equal the model after some prefix of that stream's requests, which
  holds every acknowledged request with txid <= T and none with txid > T;
- the job's tasks hold exactly what the worker stream's requests with txid <= T did (the one
  request in flight at the kill may or may not have been applied);
- the records of all streams add up to the records the cycle applied (no holes, no
  reordering, nothing applied twice). A stream's keys can match more than one prefix: a key
  created and then deleted (with only its own updates between) leaves the keys as they
  were, so prefixes k and k + 2 (or more) look alike. The count then needs one prefix per
  stream, among those that match, whose records add up exactly: `account` finds it;
- `sync`: nothing acknowledged is missing; `async`: every missing request acknowledged
  before the last status taken before the kill is covered by the loss window that status
  reported (it had waited at least that long unwritten).

Segments are small (rolls under load) and a checkpoint node installs snapshots every few
hundred records, so kills land during flushes, rolls and installs; after the last cycle the
node must catch up with the master and hold the same digest.

`Rig` starts the master and the checkpoint node, runs one cycle of load ending in a kill (the
test's SIGKILL, or the master's own at a crash point) and checks the restart.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

import msgpack
import zmq

from mwcluster.testing import MasterProcess, RawDealer, wait_for
from mwcluster.testing.checkpoint import CheckpointProcess, idle_master_status, in_step
from mwcluster.wire.protocol import Op

MASTER_ENV = {**os.environ, "MWCLUSTER_HEARTBEAT_INTERVAL_S": "0.05",
              "MWCLUSTER_SEGMENT_BYTES": str(64 << 10), "MWCLUSTER_WORKER_TIMEOUT_S": "3600"}
JOB_ID, WORKER_ID, JOB_TASKS = "crash-job", "crash-worker", 100_000
STREAMS = 3
KEYS_PER_STREAM = 12
WINDOW = 64
CLOCK_SLACK_S = 0.002    # the status rounds loss_window_s to microseconds

PUT, MERGE, DELETE, CHECK = 1, 2, 3, 4


def pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def merge_patch(target: dict, patch: dict) -> dict:
    out = dict(target)
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


@dataclass
class Stream:
    """One writer: its requests in send order, and the model of its keys."""
    index: int
    rng: random.Random
    base: dict = field(default_factory=dict)      # key -> (value, version) at cycle start
    model: dict = field(default_factory=dict)     # key -> (value, version) after all sent
    sent: list = field(default_factory=list)      # (op, args) in send order this cycle
    acked: dict = field(default_factory=dict)     # position in `sent` -> (txid, ack time)
    counter: int = 0

    def key(self, i: int) -> str:
        return f"/s{self.index}/k{i:02d}"

    def next_request(self) -> tuple[int, list]:
        """A request that succeeds on the model, and the model after it."""
        self.counter += 1
        key = self.key(self.rng.randrange(KEYS_PER_STREAM))
        cur = self.model.get(key)
        value = {"s": self.index, "n": self.counter}
        roll = self.rng.random()
        if cur is None or roll < 0.3:
            op, args = Op.PUT, [key, pack(value), None]
            new = (value, 1 if cur is None else cur[1] + 1)
        elif roll < 0.5:                      # compare-and-set on the predicted version
            op, args = Op.PUT, [key, pack(value), cur[1]]
            new = (value, cur[1] + 1)
        elif roll < 0.7:
            patch = {"m": self.counter, "n": None} if self.rng.random() < 0.3 else \
                {"m": self.counter}
            op, args = Op.MERGE, [key, pack(patch), None]
            new = (merge_patch(cur[0], patch), cur[1] + 1)
        elif roll < 0.8:
            op, args = Op.DELETE, [key, False, cur[1]]
            new = None
        else:                                 # check this key, put another: all or none
            other = self.key(self.rng.randrange(KEYS_PER_STREAM))
            if other == key:
                op, args = Op.PUT, [key, pack(value), cur[1]]
                new = (value, cur[1] + 1)
            else:
                was = self.model.get(other)
                op, args = Op.MULTI, [[[CHECK, key, cur[1]], [PUT, other, pack(value), None]]]
                self.model[other] = (value, 1 if was is None else was[1] + 1)
                new = cur
        if new is None:
            self.model.pop(key, None)
        else:
            self.model[key] = new
        return op, args

    def replay(self, count: int) -> dict:
        """The model after the first `count` requests of this cycle."""
        state = dict(self.base)
        for op, args in self.sent[:count]:
            apply_request(state, op, args)
        return state


def apply_request(state: dict, op: int, args: list) -> None:
    if op == Op.PUT:
        key, value, _ = args
        cur = state.get(key)
        state[key] = (msgpack.unpackb(value), 1 if cur is None else cur[1] + 1)
    elif op == Op.MERGE:
        key, patch, _ = args
        cur = state[key]
        state[key] = (merge_patch(cur[0], msgpack.unpackb(patch)), cur[1] + 1)
    elif op == Op.DELETE:
        del state[args[0]]
    else:
        for member in args[0]:
            if member[0] == PUT:
                apply_request(state, Op.PUT, member[1:])


class JobStream:
    """A worker taking tasks of one job, one request in flight: register, then take a task
    when it holds fewer than two, else report progress on one (0.25 a step) or finish it.
    `tasks` is what its acknowledged requests made of the tasks it touched:
    index -> (state, attempt, progress, result)."""

    def __init__(self) -> None:
        self.tasks: dict[int, tuple] = {}       # as the stream sees them now
        self.base: dict[int, tuple] = {}        # as recovered at the start of this cycle
        self.registered = False
        self.acked: list[tuple[int, list, int, tuple | None]] = []   # (txid, request,
        #                             records it made, effect) in order, this cycle
        self.in_flight: tuple[int, list] | None = None    # (request id, request)
        self.turn = 0

    def held(self) -> list[int]:
        return sorted(i for i, t in self.tasks.items() if t[0] in ("assigned", "running"))

    def next_request(self) -> list:
        if not self.registered:
            return [Op.WORKER_REGISTER, [WORKER_ID, "crash-loop", 2]]
        held = self.held()
        self.turn += 1
        if len(held) < 2 and self.turn % 3:
            return [Op.TASK_REQUEST, [WORKER_ID, 1]]
        if not held:
            return [Op.TASK_REQUEST, [WORKER_ID, 1]]
        index = held[self.turn % len(held)]
        _state, attempt, progress, _ = self.tasks[index]
        if progress >= 0.75:
            return [Op.TASK_FINISH, [WORKER_ID, JOB_ID, index, attempt, True, {"i": index}]]
        return [Op.TASK_PROGRESS, [WORKER_ID, JOB_ID, index, attempt, progress + 0.25,
                                   {"steps": int((progress + 0.25) * 4)}]]

    def effect(self, request: list, result) -> tuple[int, list]:
        """(records made, [(index, new task tuple)]) of an acknowledged request."""
        op, args = request
        if op == Op.WORKER_REGISTER:
            return 1, []
        if op == Op.TASK_REQUEST:
            return len(result), [(a[1], ("assigned", a[2], 0.0, None)) for a in result]
        _w, _job, index, attempt = args[:4]
        if op == Op.TASK_PROGRESS:
            return 1, [(index, ("running", attempt, args[4], None))]
        return 1, [(index, ("succeeded", attempt, 1.0, args[5]))]

    def on_reply(self, reply) -> None:
        _rid, request = self.in_flight
        self.in_flight = None
        assert reply.status == 0, ("job stream", request, reply)
        records, changes = self.effect(request, reply.result)
        if request[0] == Op.WORKER_REGISTER:
            self.registered = True
        for index, task in changes:
            self.tasks[index] = task
        self.acked.append((reply.txid, request, records, changes))


def drive(dealers: list[RawDealer], streams: list[Stream], seconds: float, master,
          sync: bool, job: JobStream | None = None, *, until_exit: bool = False
          ) -> tuple[tuple[float, float], bool]:
    """Keep WINDOW requests in flight per stream until `seconds` passed (or, `until_exit`,
    until the master killed itself at a crash point), then SIGKILL the master. Returns the
    last status sample taken before the kill, (when it was sent, loss_window_s), and whether
    the master had died on its own."""
    poller = zmq.Poller()
    for d in dealers:
        poller.register(d.sock, zmq.POLLIN)
    by_sock = {d.sock: (d, s) for d, s in zip(dealers, streams)}
    ids: list[dict] = [{} for _ in streams]        # request id -> position in sent
    durability = 2 if sync else 1
    status_dealer = RawDealer(master.client_endpoint, timeout_s=2.0)
    job_dealer = RawDealer(master.client_endpoint) if job is not None else None
    if job_dealer is not None:
        poller.register(job_dealer.sock, zmq.POLLIN)
    sample = (0.0, 0.0)                            # (sent at, loss_window_s) of the last
    deadline = time.monotonic() + seconds
    next_status = 0.0
    try:
        while time.monotonic() < deadline and not (until_exit and master.returncode is not None):
            for d, s, pending in zip(dealers, streams, ids):
                while len(pending) < WINDOW:
                    op, args = s.next_request()
                    pending[d.send(op, args, durability)] = len(s.sent)
                    s.sent.append((op, args))
            if job_dealer is not None and job.in_flight is None:
                request = job.next_request()
                job.in_flight = (job_dealer.send(request[0], request[1], durability), request)
            for sock, _ in poller.poll(10):
                if job_dealer is not None and sock is job_dealer.sock:
                    while sock.poll(0):
                        job.on_reply(job_dealer.recv(0))
                    continue
                d, s = by_sock[sock]
                pending = ids[streams.index(s)]
                while sock.poll(0):
                    reply = d.recv(0)
                    assert reply.status == 0, (s.index, reply)
                    s.acked[pending.pop(reply.request_id)] = (reply.txid, time.monotonic())
            if time.monotonic() >= next_status:
                sent_at = time.monotonic()
                next_status = sent_at + 0.05
                try:
                    sample = (sent_at, status_dealer.status()["loss_window_s"])
                except AssertionError:         # no reply: fine only if it died meanwhile
                    if not (until_exit and master.returncode is not None):
                        raise
        died_alone = master.returncode is not None
        master.kill()
    finally:
        status_dealer.close()
    if job_dealer is not None:
        while job_dealer.sock.poll(0):
            job.on_reply(job_dealer.recv(0))
        job_dealer.close()
    # replies already queued on the sockets were sent before the kill: count them
    for d, s, pending in zip(dealers, streams, ids):
        while d.sock.poll(0):
            reply = d.recv(0)
            assert reply.status == 0, (s.index, reply)
            s.acked[pending.pop(reply.request_id)] = (reply.txid, time.monotonic())
    return sample, died_alone


def read_job(dealer: RawDealer) -> dict[int, tuple]:
    """The job's tasks the worker stream touched, as index -> (state, attempt, progress,
    result)."""
    out = {}
    for state in ("assigned", "running", "succeeded"):
        reply = dealer.call(Op.JOB_TASKS, [JOB_ID, 0, JOB_TASKS, state])
        assert reply.status == 0, reply
        for t in reply.result:
            assert t["worker"] == WORKER_ID, t
            out[t["index"]] = (t["state"], t["attempt"], t["progress"], t["result"])
    return out


def check_job(dealer: RawDealer, job: JobStream, base: dict, recovered_txid: int,
              sync: bool) -> int:
    """Check the job's tasks against the worker stream's history; reset the stream for the
    next cycle. Returns the records the stream's requests applied this cycle."""
    actual = read_job(dealer)
    expected = dict(base)
    records = 0
    kept = [a for a in job.acked if a[0] <= recovered_txid]
    lost = [a for a in job.acked if a[0] > recovered_txid]
    assert [a[0] for a in job.acked] == sorted(a[0] for a in job.acked)
    assert job.acked[:len(kept)] == kept, "a lost request before a kept one: a hole"
    if sync:
        assert not lost, f"acknowledged sync job requests lost: {lost}"
    for _txid, _request, made, changes in kept:
        records += made
        expected.update(changes)
    if actual != expected and not lost and job.in_flight is not None:
        request = job.in_flight[1]
        if request[0] == Op.TASK_REQUEST:          # one more assignment, at an index unknown
            new = {i: t for i, t in actual.items() if i not in expected}
            if len(new) == 1 and next(iter(new.values())) == ("assigned", 1, 0.0, None) and \
                    {i: t for i, t in actual.items() if i in expected} == expected:
                expected.update(new)
                records += 1
        elif request[0] != Op.WORKER_REGISTER:   # (a re-register changes no task: whether
            made, changes = job.effect(request, None)   # it applied shows in the count)
            candidate = {**expected, **dict(changes)}
            if candidate == actual:
                expected, records = candidate, records + made
    assert actual == expected, (
        f"the job's tasks after recovery at txid {recovered_txid} are not what the worker "
        f"stream's requests up to it made: {len(actual)} tasks vs {len(expected)} expected; "
        f"differing: {[(i, actual.get(i), expected.get(i)) for i in sorted(set(actual) | set(expected)) if actual.get(i) != expected.get(i)][:6]}; "
        f"in flight: {job.in_flight}; lost: {lost}")
    job.base, job.tasks = actual, dict(actual)
    job.acked, job.in_flight, job.registered = [], None, False
    return records


def read_keys(dealer: RawDealer, stream: Stream) -> dict:
    out = {}
    for i in range(KEYS_PER_STREAM):
        reply = dealer.call(Op.GET, [stream.key(i)])
        assert reply.status == 0, reply
        if reply.result is not None:
            out[stream.key(i)] = (msgpack.unpackb(reply.result[0]), reply.result[1])
    return out


def check_cycle(dealer: RawDealer, streams: list[Stream], start_txid: int, recovered_txid: int,
                sample: tuple[float, float], sync: bool,
                job: JobStream | None = None) -> int:
    """Check the recovered master against the model; set each stream's new base. Returns
    the acknowledged requests lost (always 0 in sync mode)."""
    applied = 0
    lost = 0
    register_in_flight = (job is not None and job.in_flight is not None
                          and job.in_flight[1][0] == Op.WORKER_REGISTER
                          and all(a[0] <= recovered_txid for a in job.acked))
    accounts: list = []
    options: list[list[int]] = []          # per stream: the prefix lengths its keys match
    if job is not None:
        lost += sum(1 for a in job.acked if a[0] > recovered_txid)
        accounts.append(("job", len(job.acked), job.in_flight, job.acked[-3:]))
        applied += check_job(dealer, job, job.base, recovered_txid, sync)
        accounts.append(("job records", applied))
    for s in streams:
        acked = sorted(s.acked.items())
        txids = [txid for _, (txid, _) in acked]
        assert txids == sorted(txids), f"stream {s.index}: acks out of txid order"
        lo = max((pos + 1 for pos, (txid, _) in acked if txid <= recovered_txid), default=0)
        hi = min((pos for pos, (txid, _) in acked if txid > recovered_txid),
                 default=len(s.sent))
        missing = [(pos, t) for pos, (txid, t) in acked if txid > recovered_txid]
        if sync:
            assert not missing, f"stream {s.index}: acknowledged sync requests lost: {missing}"
        # A lost record was never written; so when the last status before the kill was asked
        # for, it had waited at least since its acknowledgement: the window reported then
        # must cover it (the records acknowledged after that sample were not observed).
        sent_at, window = sample
        for pos, acked_at in missing:
            if acked_at <= sent_at:
                assert sent_at - acked_at <= window + CLOCK_SLACK_S, (
                    f"stream {s.index}: request {pos}, acknowledged {sent_at - acked_at:.3f} s "
                    f"before the last status, was lost; that status reported a loss window "
                    f"of {window} s")
        lost += len(missing)
        actual = read_keys(dealer, s)
        matches = [k for k in range(lo, hi + 1) if s.replay(k) == actual]
        assert matches, (f"stream {s.index}: the recovered keys match no prefix in "
                         f"[{lo}, {hi}] of {len(s.sent)} requests sent this cycle")
        options.append(matches)
        accounts.append((s.index, lo, hi, matches, len(s.sent), len(s.acked)))
        s.base, s.model = actual, dict(actual)
        s.sent, s.acked = [], {}
    if register_in_flight:
        options.append([0, 1])             # the worker's re-register, sent just before the kill
    picks = account(recovered_txid - start_txid - applied, options)
    assert picks is not None, (accounts,
        f"the cycle applied {recovered_txid - start_txid} records but no choice of matching "
        f"prefixes accounts for them: a hole, a duplicate or a foreign record")
    return lost


def account(target: int, options: list[list[int]]) -> list[int] | None:
    """One count from each list in `options` such that they add up to `target` (the
    lowest counts first), or None when no choice does."""
    reachable: dict[int, list[int]] = {0: []}
    for counts in options:
        step: dict[int, list[int]] = {}
        for total, picked in reachable.items():
            for count in counts:
                step.setdefault(total + count, picked + [count])
        reachable = step
    return reachable.get(target)




class Rig:
    """A master (restarted in the same data directory), a checkpoint node following it, the
    writer streams and the worker stream; `cycle()` runs load until a kill and checks the
    restart."""

    def __init__(self, tmp_path, durability: str, seed: str, master_env: dict | None = None
                 ) -> None:
        self.durability, self.sync = durability, durability == "sync"
        self.rng = random.Random(seed)
        self.endpoints = ("--client-endpoint", f"ipc://{tmp_path}/client.sock",
                          "--pub-endpoint", f"ipc://{tmp_path}/pub.sock")
        self.streams = [Stream(i, random.Random(self.rng.random())) for i in range(STREAMS)]
        self.data = tmp_path / "m"
        self.job = JobStream()
        self.master = self._master(master_env)
        self.node_dir = tmp_path / "c"
        self.node: CheckpointProcess | None = None
        self.totals = {"cycles": 0, "acked": 0, "lost": 0, "recovery_s": [], "finished": 0}
        self.start_txid = 0
        self.recovered: dict = {}              # the status of the last restarted master

    def _master(self, env: dict | None) -> MasterProcess:
        return MasterProcess(self.data, durability=self.durability, env=env or MASTER_ENV,
                             extra_args=self.endpoints)

    def start(self) -> None:
        """Start both nodes and submit the job the worker stream works on."""
        self.master.start()
        self.node = CheckpointProcess(self.node_dir, self.master, heartbeat_interval_s=0.25,
                                      txns=500, period_s=1.0)
        self.node.start()
        with RawDealer(self.master.client_endpoint) as dealer:
            tasks = [[i, {}] for i in range(JOB_TASKS)]
            submitted = dealer.call(Op.JOB_SUBMIT, [JOB_ID, "crash", "h", 0, 3, tasks], 2)
            assert submitted.status == 0, submitted
            self.start_txid = dealer.status()["txid"]

    def cycle(self, seconds: float, *, until_exit: bool = False, next_env: dict | None = None,
              before_restart=None) -> bool:
        """Drive the load for `seconds` (or until the master kills itself), kill the master,
        call `before_restart()`, restart the master (with `next_env`) and check the restart;
        True when the master had died on its own."""
        dealers = [RawDealer(self.master.client_endpoint) for _ in self.streams]
        try:
            sample, died_alone = drive(dealers, self.streams, seconds, self.master, self.sync,
                                       self.job, until_exit=until_exit)
            self.totals["acked"] += sum(len(s.acked) for s in self.streams) + len(self.job.acked)
        finally:
            for d in dealers:
                d.close()
        if before_restart is not None:
            before_restart()
        self.master = self._master(next_env)
        self.master.start()
        with RawDealer(self.master.client_endpoint) as dealer:
            status = self.recovered = dealer.status()
            self.totals["recovery_s"].append(status["recovery_s"])
            self.totals["lost"] += check_cycle(dealer, self.streams, self.start_txid,
                                               status["txid"], sample, self.sync, self.job)
            self.totals["finished"] = sum(1 for t in self.job.tasks.values()
                                          if t[0] == "succeeded")
            self.start_txid = status["txid"]
        self.totals["cycles"] += 1
        return died_alone

    def check_node_in_step(self) -> None:
        """The checkpoint node catches up with the master, digest included, and has
        checkpointed."""
        with RawDealer(self.master.client_endpoint) as dealer:
            final = idle_master_status(dealer)
        wait_for(lambda: in_step(self.node, final), timeout_s=30,
                 what="the checkpoint node to catch up with the master's digest")
        # caught up; its first checkpoint may still be due (every 1 s or 500 records)
        wait_for(lambda: self.node.status()["last_checkpoint_txid"] is not None, timeout_s=30,
                 what="the checkpoint node to write a checkpoint")

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        self.master.stop()
