"""The simulated nodes: the real decisions and state, the simulation's clock and network.

    SimMaster   a MasterTwin (testing/memory.py: the Engine on its files through SimDisk,
                the request Handlers, the log stream): requests are drained as they arrive,
                the journal is flushed a few milliseconds after an append (the scheduler
                picks when), replies and log batches go back over the network; it crashes
                (kill or power loss, or at a crash point) and restarts on its files
    SimReplica  the checkpoint node's decision machine and its executor (nodes/checkpoint/
                executor.py) over the log stream; FETCH goes through the master's handlers,
                the master's snapshot is read from its files; checkpoints are written with
                the node's own writer function into the replica's directory; it crashes and
                restarts from its newest checkpoint
    SimWorker   a WorkerMachine whose requests (nodes/worker/exchange.py, the Client's own
                call encodings) go over the network with the Client's retry rule (the same
                request id resent after a timeout), running a deterministic handler; it can
                be paused past the master's worker timeout
    SimWriter   a client writing keys with sync durability, resending on timeout

Every node's timers carry its `generation`: a crash bumps it, so what the dead process had
scheduled does nothing.
"""

from __future__ import annotations

import itertools
from collections import deque
from pathlib import Path
from typing import Any

from mwcluster import errors
from mwcluster.client.calls import Calls, convert_reply, error_from_reply
from mwcluster.core import follower as fm
from mwcluster.core import worker_machine as wm
from mwcluster.core.recent import RecentRequests
from mwcluster.engine import load_snapshot
from mwcluster.nodes.checkpoint.executor import ReplicaExecutor, load_local, stream_event
from mwcluster.nodes.checkpoint.link import fetch_result
from mwcluster.nodes.checkpoint.writer import set_aside_snapshots
from mwcluster.nodes.master.jobs import JobsConfig
from mwcluster.nodes.worker import exchange
from mwcluster.storage import snapshot as snapshots
from mwcluster.testing.memory import MasterTwin
from mwcluster.testing.simulation.disk import SimCrash, SimDisk
from mwcluster.wire.protocol import (TOPIC_HEARTBEAT, TOPIC_LOG, ErrorCode, Op, Reply,
                                     decode_reply, encode_request)

__all__ = ["SimMaster", "SimReplica", "SimWorker", "SimWriter"]

TICK_S = 0.25                 # the master's tick
HEARTBEAT_S = 0.5             # its heartbeat when idle (the replica's heartbeat interval)
JOBS = JobsConfig(worker_timeout_s=1.5, worker_heartbeat_ms=300, max_assign_per_request=4)
REQUEST_TIMEOUT_S = 0.4       # a client's wait for a reply before it resends
ATTEMPTS = 3                  # sends of one request before it times out (the workers' Client)
REPLICA_TICK_S = 0.1


class _Capture(Calls):
    """The Client's calls, captured instead of sent: (op, args, durability, convert)."""

    def _run(self, op: int, args: list, durability: int, convert) -> tuple:
        return op, args, durability, convert


CALLS = _Capture()


class SimMaster:
    name = "master"

    def __init__(self, sim: Any, data_dir: Path) -> None:
        self.sim = sim
        self.data_dir = data_dir
        self.disk = SimDisk()
        self.twin: MasterTwin | None = None
        self.generation = 0
        self.inbox: list[tuple[str, bytes]] = []
        self.drain_due = self.flush_due = False
        self.last_publish = 0.0
        self._lost_before = 0          # workers declared lost by earlier lives of the master
        # a crash right after the N-th reply leaves (a named fault): (N, mode) or None
        self.crash_after_reply: tuple[int, str] | None = None
        self.replies = 0

    @property
    def up(self) -> bool:
        return self.twin is not None

    @property
    def workers_lost(self) -> int:
        return self._lost_before + (self.twin.handlers.jobs.workers_lost if self.twin else 0)

    def start(self) -> None:
        sim = self.sim
        self.generation += 1
        try:
            self.twin = MasterTwin(self.data_dir, jobs=JOBS, journal_io=self.disk,
                                   wall_ms=sim.sched.wall_ms, clock=sim.sched.clock,
                                   publish_batch_bytes=8192)
        except SimCrash:                     # a crash point reached during recovery
            self.twin = None
            self._down("kill", "a crash point during recovery")
            return
        report = self.twin.recovery
        sim.note(f"master up: epoch {self.twin.epoch}, txid {report.last_txid} "
                 f"(snapshot {report.snapshot_txid} + {report.replayed_records} replayed, "
                 f"{report.journal_cut_bytes} torn bytes cut)")
        self.last_publish = sim.sched.now
        sim.sched.after(TICK_S, self._tick, self.generation)

    def deliver(self, message: tuple[str, bytes]) -> None:
        if self.twin is None:
            return
        self.inbox.append(message)
        if not self.drain_due:
            self.drain_due = True
            self.sim.sched.after(0.0001, self._drain, self.generation)

    def _drain(self, generation: int) -> None:
        if generation != self.generation:
            return
        self.drain_due = False
        messages, self.inbox = self.inbox, []
        now = self.sim.sched.now
        self._reply(self.twin.drain([(src.encode(), frame) for src, frame in messages], now))
        if self.twin is not None:             # (a reply may have crashed it)
            self._flush_soon()

    def _flush_soon(self) -> None:
        journal = self.twin.engine.journal
        if not self.flush_due and journal.last_txid > journal.durable_txid:
            self.flush_due = True
            self.sim.sched.after(self.sim.sched.rng.uniform(0.0005, 0.004), self._flush,
                                 self.generation)

    def _flush(self, generation: int) -> None:
        if generation != self.generation:
            return
        self.flush_due = False
        try:
            replies, batches = self.twin.flush(self.sim.sched.now)
        except SimCrash:
            self.crash("kill", "at a crash point of the flush")
            return
        self._reply(replies)
        if self.twin is not None:
            self._publish(TOPIC_LOG, batches)
            self._flush_soon()

    def _tick(self, generation: int) -> None:
        if generation != self.generation:
            return
        sched = self.sim.sched
        self._reply(self.twin.tick(sched.now))
        if self.twin is None:
            return
        self._flush_soon()
        if sched.now - self.last_publish >= HEARTBEAT_S:
            self._publish(TOPIC_HEARTBEAT, [self.twin.heartbeat(sched.wall_ms())])
        sched.after(TICK_S, self._tick, generation)

    def _reply(self, replies: list[tuple[bytes, bytes]]) -> None:
        for ident, frame in replies:
            self.sim.send(self.name, ident.decode(), frame)
            self.replies += 1
            armed = self.crash_after_reply
            if armed is not None and self.replies >= armed[0]:
                self.crash_after_reply = None
                self.crash(armed[1], f"right after its reply {self.replies} left")
                return

    def _publish(self, topic: bytes, bodies: list[bytes]) -> None:
        if bodies:
            self.last_publish = self.sim.sched.now
        for body in bodies:
            self.sim.send(self.name, "replica", [topic, body])

    def compact(self) -> None:
        """A snapshot of the master's state in-process (as the checkpoint node's uploads
        would install), then the journal segments it covers purged."""
        if self.twin is None:
            return
        try:
            header = self.twin.engine.snapshot(created_ms=self.sim.sched.wall_ms())
        except SimCrash:
            self.crash("kill", "at a crash point of the snapshot's purge")
            return
        self.sim.note(f"master snapshot at txid {header.txid}")

    def crash(self, mode: str, why: str) -> None:
        if self.twin is None:
            return
        self._lost_before = self.workers_lost
        try:
            self.twin.crash()
        except SimCrash:
            pass
        self.twin = None
        self._down(mode, why)

    def _down(self, mode: str, why: str) -> None:
        sim = self.sim
        self.generation += 1
        self.inbox = []
        self.drain_due = self.flush_due = False
        cut = self.disk.crash(mode, sim.sched.rng)
        sim.note(f"master crashed ({mode}, {why}){': ' + '; '.join(cut) if cut else ''}")
        sim.sched.after(sim.sched.rng.uniform(0.2, 1.0), self._restart, self.generation)

    def _restart(self, generation: int) -> None:
        if generation == self.generation and self.twin is None:
            self.start()

    def stop(self) -> None:
        if self.twin is not None:
            self.twin.close()
            self.twin = None


class SimLink:
    """The replica's link port: FETCH through the master's handlers, its snapshot from its
    files; RequestTimeout when the master is down or the message is lost."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.epoch: int | None = None

    def fetch(self, from_txid: int, max_bytes: int) -> tuple[int, list]:
        reply = self.sim.call_master("replica", Op.FETCH, [from_txid, max_bytes])
        self.epoch = reply.epoch
        if reply.status:
            raise error_from_reply(reply)
        return fetch_result(reply.result)

    def load_master_snapshot(self, work_dir: Path, chunk_bytes: int, credit: int,
                             recent: RecentRequests):
        reply = self.sim.call_master("replica", Op.SNAPSHOT_INFO, [])
        if reply.status:
            raise error_from_reply(reply)
        txid = reply.result[0]
        return load_snapshot(self.sim.master.data_dir / "snapshots" /
                             snapshots.snapshot_name(txid), recent)


class SimReplica:
    name = "replica"

    def __init__(self, sim: Any, data_dir: Path) -> None:
        self.sim = sim
        self.data_dir = data_dir
        self.snapshot_dir = data_dir / "snapshots"
        self.replica: ReplicaExecutor | None = None
        self.generation = 0
        self.checkpoints = 0

    @property
    def up(self) -> bool:
        return self.replica is not None

    def start(self) -> None:
        sim = self.sim
        self.generation += 1
        machine = fm.Follower(fm.FollowerConfig(heartbeat_interval_s=HEARTBEAT_S, period_s=1.0,
                                                txns=40, max_buffer_bytes=1 << 20))
        self.replica = ReplicaExecutor(
            machine, self, incoming_dir=self.data_dir / "incoming", recent_requests=100_000,
            fetch_max_bytes=16384, snapshot_chunk_bytes=1 << 20, snapshot_credit=1,
            clock=sim.sched.clock, link=SimLink(sim), freeze_loaded=False)
        found = load_local(self.snapshot_dir, 100_000)
        base = None
        if found is not None:
            state, recent, _path = found
            self.replica.replace(state, recent)
            base = state.txid
        sim.note(f"replica up from {'nothing' if base is None else f'its snapshot {base}'}")
        self.replica.feed(fm.Start(sim.sched.now, base))
        sim.sched.after(REPLICA_TICK_S, self._tick, self.generation)

    def deliver(self, frames: list[bytes]) -> None:
        if self.replica is None:
            return
        try:
            event = stream_event(frames, self.sim.sched.now)
        except (errors.MwclusterError, ValueError, TypeError):
            return
        self.replica.feed(event)

    def _tick(self, generation: int) -> None:
        if generation != self.generation:
            return
        self.replica.feed(fm.Tick(self.sim.sched.now))
        self.sim.sched.after(REPLICA_TICK_S, self._tick, generation)

    # the executor's checkpoint port
    def start_checkpoint(self, ins: fm.Checkpoint) -> fm.Event:
        replica, sched = self.replica, self.sim.sched
        if replica.state.txid != ins.txid:
            return fm.CheckpointFailed(sched.now, f"the replica is at {replica.state.txid}")
        state = replica.state
        snapshots.write_snapshot(self.snapshot_dir, state.txid, ins.epoch, state.digest,
                                 state.image_chunks(replica.recent), sched.wall_ms())
        snapshots.prune(self.snapshot_dir, 2)
        self.checkpoints += 1
        return fm.CheckpointDone(ins.txid, sched.now)

    def set_aside(self, ins: fm.SetAsideSnapshots) -> None:
        set_aside_snapshots(self.snapshot_dir, ins.after_txid, ins.reason)

    def crash(self) -> None:
        if self.replica is None:
            return
        self.replica = None
        self.generation += 1
        self.sim.note("replica crashed")
        self.sim.sched.after(self.sim.sched.rng.uniform(0.1, 0.8), self._restart,
                             self.generation)

    def _restart(self, generation: int) -> None:
        if generation == self.generation and self.replica is None:
            self.start()


class _Client:
    """One request at a time over the network, as the Client sends it: encoded by the
    Client's own calls, resent with the same request id after REQUEST_TIMEOUT_S, given up
    (RequestTimeout) after ATTEMPTS sends."""

    def __init__(self, sim: Any, name: str) -> None:
        self.sim = sim
        self.name = name
        self.client_id = name.encode()
        self._ids = itertools.count(1)
        self.waiting: tuple | None = None    # (request_id, frame, convert, sends, on_answer)
        self.generation = 0
        # a paused owner defers its timers: later(fn, *args) is True when it did
        self.later = lambda fn, *args: False

    def send(self, call: tuple, on_answer) -> None:
        op, args, durability, convert = call
        request_id = next(self._ids)
        frame = encode_request(self.client_id, request_id, op, args, durability)
        self.waiting = (request_id, frame, convert, 1, on_answer)
        self._send(request_id, frame)

    def _send(self, request_id: int, frame: bytes) -> None:
        self.sim.send(self.name, "master", (self.name, frame))
        self.sim.sched.after(REQUEST_TIMEOUT_S, self._timeout, request_id, self.generation)

    def _timeout(self, request_id: int, generation: int) -> None:
        if self.later(self._timeout, request_id, generation):
            return
        waiting = self.waiting
        if generation != self.generation or waiting is None or waiting[0] != request_id:
            return
        _rid, frame, convert, sends, on_answer = waiting
        if sends < ATTEMPTS:
            self.waiting = (request_id, frame, convert, sends + 1, on_answer)
            self._send(request_id, frame)
            return
        self.waiting = None
        on_answer(None, errors.RequestTimeout(f"no reply to request {request_id}"))

    def receive(self, frame: bytes) -> None:
        reply: Reply = decode_reply(frame)
        waiting = self.waiting
        if waiting is None or reply.request_id != waiting[0]:
            return                                          # stale: already answered
        if reply.status == ErrorCode.SHUTTING_DOWN:
            return                                          # resent at the timeout
        self.waiting = None
        value, error = convert_reply(reply, waiting[2])
        waiting[4](value, error)


class SimWorker:
    def __init__(self, sim: Any, worker_id: str, slots: int) -> None:
        self.sim = sim
        self.name = worker_id
        self.slots = slots
        self.client = _Client(sim, worker_id)
        self.client.later = self._later
        self.machine: wm.WorkerMachine | None = None
        self.todo: deque = deque()
        self.current: dict[tuple[str, int], int] = {}   # attempts whose report() is True
        self.paused_until = 0.0
        self.wake_at: float | None = None

    def now_ms(self) -> int:
        return int(self.sim.sched.now * 1000)

    def start(self) -> None:
        self.machine = wm.WorkerMachine(self.name, self.slots, heartbeat_ms=None,
                                        progress_interval_ms=100, idle_poll_ms=50)
        self.todo.extend(self.machine.start(self.now_ms()))
        self._step()

    def pause(self, seconds: float) -> None:
        """The process stops running (a long GC pause, a stopped VM): nothing it does or
        receives happens before it resumes."""
        self.paused_until = max(self.paused_until, self.sim.sched.now + seconds)
        self.sim.note(f"{self.name} paused for {seconds:.2f} s")

    def _later(self, fn, *args) -> bool:
        """Defer an event of a paused worker to when it resumes."""
        if self.sim.sched.now < self.paused_until:
            self.sim.sched.at(self.paused_until, fn, *args)
            return True
        return False

    def deliver(self, frame: bytes) -> None:
        if not self._later(self.deliver, frame):
            self.client.receive(frame)

    def _step(self) -> None:
        machine = self.machine
        while self.client.waiting is None and self.todo and machine.exited is None:
            ins = self.todo.popleft()
            if machine.still_wanted(ins):
                self._execute(ins)
        wake = machine.next_wakeup_ms()
        if wake is not None:
            now = self.sim.sched.now
            at = max(wake / 1000, now + 0.001)
            if self.wake_at is None or at < self.wake_at or self.wake_at <= now:
                self.wake_at = at
                self.sim.sched.at(at, self._wake)

    def _wake(self) -> None:
        if self._later(self._wake):
            return
        self.wake_at = None
        self.todo.extend(self.machine.tick(self.now_ms()))
        self._step()

    def _execute(self, ins: Any) -> None:
        kind = type(ins)
        if kind is wm.Start:
            self.current[(ins.job_id, ins.index)] = ins.attempt
            self._run_handler(ins)
        elif kind is wm.Drop:
            if self.current.get((ins.job_id, ins.index)) == ins.attempt:
                del self.current[(ins.job_id, ins.index)]
        elif kind is wm.Register:
            self.client.send(CALLS.register_worker(self.name, ins.slots, "sim"),
                             lambda value, error: self._registered(ins, value, error))
        elif kind in exchange.CALLS:
            name, args, kwargs = exchange.call_of(ins, self.name)
            self.client.send(getattr(CALLS, name)(*args, **kwargs),
                             lambda value, error: self._answered(ins, value, error))

    def _registered(self, ins: wm.Register, reply: Any, error: Exception | None) -> None:
        if isinstance(error, (errors.RequestTimeout, errors.ShuttingDown)):
            # the node retries a registration with backoff until the master answers
            self.sim.sched.after(0.2, self._retry_register, ins)
            return
        self._more(exchange.registered(self.machine, reply, error, self.now_ms()))

    def _retry_register(self, ins: wm.Register) -> None:
        if not self._later(self._retry_register, ins):
            self.todo.appendleft(ins)
            self._step()

    def _answered(self, ins: Any, value: Any, error: Exception | None) -> None:
        if type(ins) is wm.SendFinish and error is None and ins.ok and value == "succeeded":
            self.sim.accepted_success(ins.job_id, ins.index, ins.attempt)
        self._more(exchange.outcome(self.machine, ins, value, error, self.now_ms()))

    def _more(self, instructions: list) -> None:
        self.todo.extendleft(reversed(instructions))
        self._step()

    # --- the handler: the sum of squares of its input, its first attempt sometimes failing

    def _run_handler(self, ins: wm.Start) -> None:
        rng = self.sim.sched.rng
        duration = rng.uniform(0.05, 0.5)
        for fraction in (1 / 3, 2 / 3):
            self.sim.sched.after(duration * fraction, self._progress, ins, fraction)
        self.sim.sched.after(duration, self._done, ins)

    def _progress(self, ins: wm.Start, fraction: float) -> None:
        if self._later(self._progress, ins, fraction):
            return
        if self.current.get((ins.job_id, ins.index)) == ins.attempt:
            self._more(self.machine.on_progress(ins.job_id, ins.index, ins.attempt, fraction,
                                                {"rows": int(fraction * 100)}, self.now_ms()))

    def _done(self, ins: wm.Start) -> None:
        if self._later(self._done, ins):
            return
        self.current.pop((ins.job_id, ins.index), None)
        ok, outcome = task_outcome(ins.input, ins.attempt)
        self._more(self.machine.on_done(ins.job_id, ins.index, ins.attempt, ok, outcome,
                                        self.now_ms()))


def task_outcome(task_input: dict, attempt: int) -> tuple[bool, Any]:
    """What the simulated handler returns: (ok, result or error message)."""
    if task_input["flaky"] and attempt == 1:
        return False, "flaky: the first attempt fails"
    return True, sum(v * v for v in task_input["values"])


class SimWriter:
    """Writes /kv/0.., one at a time with sync durability: each acknowledged put must
    survive every crash."""

    name = "writer"

    def __init__(self, sim: Any, count: int) -> None:
        self.sim = sim
        self.client = _Client(sim, self.name)
        self.count = count
        self.next = 0
        self.acked: dict[str, int] = {}       # key -> the value acknowledged
        self.done = False

    def start(self) -> None:
        self._put()

    def _put(self) -> None:
        if self.next >= self.count:
            self.done = True
            return
        key, value = f"/kv/{self.next % 7}", self.next
        self.client.send(CALLS.put(key, value, durability="sync"),
                         lambda _txid, error: self._answered(key, value, error))

    def _answered(self, key: str, value: int, error: Exception | None) -> None:
        if error is None:
            self.acked[key] = value
            self.next += 1
        self.sim.sched.after(self.sim.sched.rng.uniform(0.005, 0.05), self._put)

    def deliver(self, frame: bytes) -> None:
        self.client.receive(frame)
