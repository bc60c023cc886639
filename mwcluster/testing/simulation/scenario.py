"""One seeded scenario: a master, its checkpoint replica, a few workers running a job and a
client writing with sync durability, all in this process, under the scheduler's fake clock,
with faults the seed chooses; then the faults stop and the cluster must settle.

    run_scenario(seed, directory) -> Outcome        raises ScenarioFailed naming the seed

The faults, all from the seed: message drops, duplicates and delays (so reorders) on every
link for the chaos window; cut links for a while; the master crashed (kill -9, or a power loss
that keeps only what was fsynced plus a torn prefix of the rest) at a random moment or at a
named crash point of its journal or right after one of its replies left, and restarted from
its files; the master compacted (a
snapshot, the journal it covers purged); the replica crashed and restarted from its newest
checkpoint; a worker paused past the master's worker timeout.

What must hold once the cluster settled:
- the replica's txid and digest equal the master's (and both states validate);
- every job succeeded with every task's result the handler's, computed directly;
- no task had two attempts whose success the master accepted;
- every write the client was told is durable is there.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mwcluster import errors
from mwcluster.core.follower import Phase
from mwcluster.core.jobs import FINISHED_JOB, TaskState
from mwcluster.core.values import decode
from mwcluster.storage.crashpoints import POINTS
from mwcluster.testing.simulation.nodes import (CALLS, SimMaster, SimReplica, SimWorker,
                                                SimWriter, task_outcome)
from mwcluster.testing.simulation.world import Faults, Network, Scheduler
from mwcluster.wire.protocol import Reply, decode_reply, encode_request

__all__ = ["Outcome", "ScenarioFailed", "run_scenario"]

CHAOS_S = 6.0            # faults happen in [0, CHAOS_S)
SETTLE_S = 90.0          # then the cluster has this long (simulated) to settle
JOURNAL_POINTS = tuple(p for p in POINTS if p != "install.renamed")
# trace lines that say a fault had its effect (a fault planned on a node already down does
# nothing)
_FIRED = (" crashed (", "replica crashed", " paused for ", "master snapshot at txid",
          " cut", " back")


class ScenarioFailed(AssertionError):
    """A property did not hold; the message names the seed that replays it."""


@dataclass
class Outcome:
    seed: int
    trace_digest: str
    fired: list[str]                  # the faults that happened (not only planned)
    events: int
    simulated_s: float
    faults: list[str]
    master_txid: int
    master_crashes: list[str]         # how each crash happened (kill, power, a crash point)
    replica_checkpoints: int
    workers_lost: int
    messages: dict[str, int] = field(default_factory=dict)


class Simulation:
    def __init__(self, seed: int, directory: Path) -> None:
        self.seed = seed
        self.sched = Scheduler(seed)
        self.faults = Faults()
        self.net = Network(self.sched, self.faults)
        self.master = SimMaster(self, directory / "master")
        self.replica = SimReplica(self, directory / "replica")
        rng = self.sched.rng
        self.workers = [SimWorker(self, f"w{n}", rng.randint(1, 3))
                        for n in range(rng.randint(2, 3))]
        self.writer = SimWriter(self, rng.randint(10, 40))
        self.nodes: dict[str, Any] = {"master": self.master, "replica": self.replica,
                                      "writer": self.writer,
                                      **{w.name: w for w in self.workers}}
        self.successes: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.fault_log: list[str] = []
        self.job_id: str | None = None
        self._calls = itertools.count(1)
        self.inputs: list[dict] = []

    def note(self, what: str) -> None:
        self.sched.note(what)

    def send(self, src: str, dst: str, payload: Any) -> None:
        node = self.nodes[dst]
        self.net.send(src, dst, payload, node.deliver)

    def call_master(self, src: str, op: int, args: list) -> Reply:
        """A synchronous round trip to the master (the replica's FETCH), through its
        handlers; RequestTimeout when it is down or the link loses the message."""
        master, faults, rng = self.master, self.faults, self.sched.rng
        if not master.up or (src, "master") in faults.cut or (
                "master", src) in faults.cut or rng.random() < faults.drop:
            raise errors.RequestTimeout(f"{src}: no reply from the master")
        frame = encode_request(src.encode(), next(self._calls), op, args)
        (_ident, reply), = master.twin.drain([(src.encode(), frame)], self.sched.now)
        return decode_reply(reply)

    def accepted_success(self, job_id: str, index: int, attempt: int) -> None:
        self.successes[(job_id, index)].add(attempt)

    # --- the scenario ---------------------------------------------------------------------

    def setup(self) -> None:
        rng, sched = self.sched.rng, self.sched
        self.master.start()
        tasks = rng.randint(4, 12)
        self.inputs = [{"values": [rng.randint(-50, 50) for _ in range(rng.randint(1, 5))],
                        "flaky": rng.random() < 0.25} for _ in range(tasks)]
        op, args, durability, _convert = CALLS.submit_job("sim", "sum-of-squares",
                                                          self.inputs, max_attempts=25,
                                                          durability="sync")
        frame = encode_request(b"setup", 1, op, args, durability)
        replies = self.master.twin.drain([(b"setup", frame)], sched.now)
        replies += self.master.twin.flush(sched.now)[0]       # the sync reply, parked
        self.job_id = decode_reply(replies[0][1]).result
        self.replica.start()
        for worker in self.workers:
            sched.after(rng.uniform(0.0, 0.2), worker.start)
        sched.after(rng.uniform(0.0, 0.5), self.writer.start)
        self._plan_faults()

    def _fault(self, when: float, what: str, fn, *args) -> None:
        def fire() -> None:
            self.note(f"fault: {what}")
            fn(*args)
        self.fault_log.append(f"{when:.3f} {what}")
        self.sched.at(when, fire)

    def _plan_faults(self) -> None:
        rng, faults = self.sched.rng, self.faults
        faults.drop = rng.choice([0.0, 0.0, 0.01, 0.05])
        faults.duplicate = rng.choice([0.0, 0.02, 0.05])
        faults.delay = rng.choice([0.0, 0.02, 0.1])
        self.fault_log.append(f"network: drop {faults.drop}, duplicate {faults.duplicate}, "
                              f"delay {faults.delay}")
        for _ in range(rng.randint(0, 2)):
            mode = rng.choice(["kill", "power"])
            self._fault(rng.uniform(0.3, CHAOS_S), f"master crash ({mode})",
                        self.master.crash, mode, "at a random moment")
        if rng.random() < 0.4:
            nth, mode = rng.randint(5, 120), rng.choice(["kill", "power"])
            self.fault_log.append(f"armed: master crash ({mode}) right after its reply {nth}")
            self.master.crash_after_reply = (nth, mode)
        if rng.random() < 0.4:
            point, nth = rng.choice(JOURNAL_POINTS), rng.randint(1, 3)
            self.fault_log.append(f"armed: crash point {point}:{nth}")
            self.master.disk.crash_at(point, nth)
        for _ in range(rng.randint(0, 2)):
            self._fault(rng.uniform(0.3, CHAOS_S), "master snapshot", self.master.compact)
        if rng.random() < 0.5:
            self._fault(rng.uniform(0.3, CHAOS_S), "replica crash", self.replica.crash)
        if rng.random() < 0.5:
            worker = rng.choice(self.workers)
            self._fault(rng.uniform(0.3, CHAOS_S), f"{worker.name} paused past its timeout",
                        worker.pause, rng.uniform(1.6, 3.0))
        if rng.random() < 0.3:
            worker = rng.choice(self.workers)
            start = rng.uniform(0.3, CHAOS_S - 1)
            link = (worker.name, "master")
            self._fault(start, f"link {worker.name}-master cut", faults.cut.add, link)
            self._fault(start + rng.uniform(0.2, 1.0), f"link {worker.name}-master back",
                        faults.cut.discard, link)
        self._fault(CHAOS_S, "calm: no more faults", self._calm)

    def _calm(self) -> None:
        self.faults.calm()
        self.master.disk.no_crash_points()
        self.master.crash_after_reply = None

    def settled(self) -> bool:
        master = self.master
        if not master.up or not self.replica.up or not self.writer.done:
            return False
        twin = master.twin
        state = twin.engine.state
        if twin.engine.journal.durable_txid != state.txid:
            return False
        job = state.jobs.jobs.get(self.job_id)
        if job is None or job.state not in FINISHED_JOB:
            return False
        replica = self.replica.replica
        return replica.state.txid == state.txid and replica.machine.phase is Phase.FOLLOWING

    def run(self) -> Outcome:
        sched = self.sched
        self.setup()
        sched.run(CHAOS_S)
        if not sched.run(CHAOS_S + SETTLE_S, self.settled):
            self.fail("the cluster did not settle within "
                      f"{SETTLE_S:g} s after the faults stopped ({self.describe()})")
        self.check()
        fired = [line.split(" ", 1)[1] for line in sched.trace
                 if any(mark in line for mark in _FIRED)]
        outcome = Outcome(self.seed, sched.trace_digest(), fired, sched.events, sched.now,
                          self.fault_log, self.master.twin.engine.state.txid,
                          [line.split(" ", 1)[1] for line in sched.trace
                           if " master crashed " in line],
                          self.replica.checkpoints,
                          self.master.workers_lost,
                          {"sent": self.net.sent, "dropped": self.net.dropped,
                           "duplicated": self.net.duplicated, "delayed": self.net.delayed})
        self.master.stop()
        return outcome

    def describe(self) -> str:
        master = self.master
        if not master.up:
            return "the master is down"
        state = master.twin.engine.state
        job = state.jobs.jobs.get(self.job_id)
        replica = self.replica.replica
        return (f"master txid {state.txid} durable {master.twin.engine.journal.durable_txid}; "
                f"job {job.state.value if job else None} "
                f"{dict((s.value, n) for s, n in job.counts.items() if n) if job else ''}; "
                f"replica {replica.state.txid if replica else 'down'} "
                f"{replica.machine.phase.value if replica else ''}; "
                f"writer {self.writer.next}/{self.writer.count}")

    # --- what must hold -----------------------------------------------------------------

    def fail(self, what: str) -> None:
        raise ScenarioFailed(f"seed {self.seed}: {what}\n  faults: " + "; ".join(
            self.fault_log) + "\n  last events:\n    " + "\n    ".join(self.sched.trace[-15:]))

    def check(self) -> None:
        master_state = self.master.twin.engine.state
        replica_state = self.replica.replica.state
        for name, state in (("master", master_state), ("replica", replica_state)):
            problems = state.validate()
            if problems:
                self.fail(f"the {name}'s state breaks invariants: {problems[:3]}")
        if (replica_state.txid, replica_state.digest) != (master_state.txid,
                                                          master_state.digest):
            self.fail(f"the replica (txid {replica_state.txid}, digest "
                      f"{replica_state.digest:016x}) differs from the master (txid "
                      f"{master_state.txid}, digest {master_state.digest:016x})")
        job = master_state.jobs.jobs[self.job_id]
        if job.state.value != "succeeded":
            self.fail(f"the job ended {job.state.value}: {job.reason}")
        if len(job.tasks) != len(self.inputs):
            self.fail(f"the job has {len(job.tasks)} tasks, not the {len(self.inputs)} submitted")
        for task, task_input in zip(job.tasks, self.inputs):
            expected = task_outcome(task_input, attempt=2)[1]
            if task.state is not TaskState.SUCCEEDED or task.result != expected:
                self.fail(f"task {task.index} is {task.state.value} with result {task.result!r}"
                          f", not {expected!r}")
        for (job_id, index), attempts in sorted(self.successes.items()):
            if len(attempts) > 1:
                self.fail(f"task {job_id}/{index}: the successes of attempts "
                          f"{sorted(attempts)} were all accepted")
        for key, value in sorted(self.writer.acked.items()):
            found = master_state.ns.get_encoded(key)
            if found is None or decode(found[0]) < value:
                self.fail(f"{key}: the write of {value} was acknowledged (sync) but the "
                          f"master holds {None if found is None else decode(found[0])}")


def run_scenario(seed: int, directory: Path) -> Outcome:
    """Run the scenario of `seed` in `directory` (empty, its own); raise ScenarioFailed."""
    sim = Simulation(seed, Path(directory))
    try:
        return sim.run()
    finally:
        if sim.master.up:
            sim.master.twin.crash()


def seeds(count: int, first: int = 0) -> list[int]:
    """The seeds of `count` scenarios: spread, so that neighbours differ in every fault."""
    rng = random.Random(first)
    return [rng.getrandbits(32) for _ in range(count)]
