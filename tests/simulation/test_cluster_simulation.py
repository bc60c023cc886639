"""The whole cluster in one process under a seeded scheduler and a fake clock
(mwcluster/testing/simulation): a master, its checkpoint replica, workers running a job and a
client writing with sync durability, with faults named by the seed (lost, repeated and late
messages, cut links, the master killed or losing power, at random moments or at the
journal's crash points, compactions, the replica crashed, a worker paused past its timeout).
Each scenario must settle with the replica's digest equal to the master's, the job's result
equal to the direct computation, no task's success accepted twice, and every acknowledged
sync write present.

    pytest tests/simulation                         # the default number of seeds
    pytest tests/simulation --sim-seeds 5000        # more
    pytest tests/simulation --sim-seed 1828018965   # replay one (a failure names its seed)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from mwcluster.storage.crashpoints import POINTS
from mwcluster.testing import PACKAGE_ROOT
from mwcluster.testing.simulation import ScenarioFailed, run_scenario, seeds
from mwcluster.testing.simulation.scenario import Simulation

OUTCOMES: list = []          # every scenario's outcome, for the coverage test at the end


@pytest.fixture
def sim_dir():
    """A directory for one scenario's files: in memory (tmpfs) when the machine has one."""
    parent = "/dev/shm" if Path("/dev/shm").is_dir() else None
    directory = tempfile.mkdtemp(prefix="mwcluster-sim-", dir=parent)
    yield Path(directory)
    shutil.rmtree(directory, ignore_errors=True)


def test_a_seeded_scenario(sim_seed, sim_dir):
    try:
        OUTCOMES.append(run_scenario(sim_seed, sim_dir))
    except ScenarioFailed as exc:
        pytest.fail(f"{exc}\n  replay: pytest tests/simulation --sim-seed {sim_seed}",
                    pytrace=False)


def test_the_scenarios_run_every_named_fault(request):
    """The seeds the suite ran (the default set, not one replayed seed) made each fault
    happen (not only planned it): a check that cannot meet a fault proves nothing about it."""
    if request.config.getoption("--sim-seed") is not None or len(OUTCOMES) < 100:
        pytest.skip("needs the default set of seeds (at least 100 run in this session)")
    effects = {"master killed": "master crashed (kill",
               "master lost power": "master crashed (power",
               "master compacted": "master snapshot at txid",
               "replica crashed": "replica crashed", "worker paused": " paused for ",
               "link cut": "-master cut",
               "crash right after a reply": "right after its reply",
               "crash at a journal crash point": "at a crash point"}
    faults = Counter()
    for outcome in OUTCOMES:
        for name, mark in effects.items():
            faults[name] += any(mark in line for line in outcome.fired)
        faults["worker declared lost"] += outcome.workers_lost > 0
        for kind in ("dropped", "duplicated", "delayed"):
            faults[kind] += outcome.messages[kind] > 0
    missing = [name for name in (*effects, "worker declared lost", "dropped", "duplicated",
                                 "delayed") if not faults[name]]
    assert missing == [], f"no scenario reached: {missing} ({dict(faults)})"


def test_a_seed_replays_exactly(sim_dir):
    seed = seeds(1, first=7)[0]
    first = run_scenario(seed, sim_dir / "a")
    again = run_scenario(seed, sim_dir / "b")
    assert first == again and first.events > 100


def test_a_seed_replays_exactly_in_another_process_with_another_hash_seed(sim_dir):
    """No decision may depend on the order of a set or dict of strings (which
    PYTHONHASHSEED changes between processes)."""
    seed = seeds(1, first=11)[0]
    here = run_scenario(seed, sim_dir / "here")
    code = ("import sys; from pathlib import Path; "
            "from mwcluster.testing.simulation import run_scenario; "
            f"print(run_scenario({seed}, Path(sys.argv[1])).trace_digest)")
    env = {**os.environ, "PYTHONHASHSEED": "12345",
           "PYTHONPATH": os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH"))
                                         if p)}
    there = subprocess.run([sys.executable, "-c", code, str(sim_dir / "there")], env=env,
                           capture_output=True, text=True, timeout=120)
    assert there.returncode == 0, there.stderr
    assert there.stdout.strip() == here.trace_digest


# --- the checks themselves can fail -------------------------------------------------------


def settled_simulation(directory: Path) -> Simulation:
    sim = Simulation(seeds(1, first=3)[0], directory)
    sim.setup()
    assert sim.sched.run(60.0, sim.settled)
    return sim


def test_a_replica_that_differs_from_the_master_is_found(sim_dir):
    sim = settled_simulation(sim_dir)
    from mwcluster.core import records as r
    from mwcluster.core.values import encode

    replica = sim.replica.replica.state
    replica.apply(replica.txid + 1, r.Put("/not-on-the-master", encode(1)))
    sim.master.twin.engine.submit(r.Put("/only-on-the-master", encode(1)))
    sim.master.twin.flush(sim.sched.now)
    with pytest.raises(ScenarioFailed, match="the replica .* differs from the master"):
        sim.check()


def test_a_wrong_result_and_a_success_accepted_twice_are_found(sim_dir):
    sim = settled_simulation(sim_dir)
    job = sim.master.twin.engine.state.jobs.jobs[sim.job_id]
    saved = job.tasks[0].result
    sim.inputs[0] = {**sim.inputs[0], "values": [*sim.inputs[0]["values"], 1000]}
    with pytest.raises(ScenarioFailed, match="task 0 is succeeded with result"):
        sim.check()
    sim.inputs[0]["values"].pop()
    assert job.tasks[0].result == saved
    sim.accepted_success(sim.job_id, 1, 7)
    sim.accepted_success(sim.job_id, 1, 8)
    with pytest.raises(ScenarioFailed, match=r"the successes of attempts \[.*7, 8\]"):
        sim.check()


def test_a_master_that_answers_sync_writes_before_their_fsync_is_caught(monkeypatch):
    """A bug planted in the real handlers (a sync reply sent at once instead of parked until
    the fsync that covers it): a power loss then erases writes the client was told were
    durable, and the scenarios say so."""
    from mwcluster.nodes.master.handlers import Handlers

    monkeypatch.setattr(Handlers, "_park",
                        lambda self, queue, txid, ident, reply, now, request_id: reply)
    caught = []
    parent = "/dev/shm" if Path("/dev/shm").is_dir() else None
    for seed in seeds(60, first=5):
        directory = tempfile.mkdtemp(prefix="mwcluster-sim-", dir=parent)
        try:
            run_scenario(seed, Path(directory))
        except ScenarioFailed as exc:
            caught.append(str(exc))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        if caught:
            break
    assert caught, "60 scenarios with crashes never noticed a lost acknowledged write"
    assert re.search(r"was acknowledged \(sync\)|were all accepted", caught[0]), caught[0]


def test_the_journal_points_the_scenarios_crash_at_are_the_documented_ones():
    from mwcluster.testing.simulation.scenario import JOURNAL_POINTS

    assert set(JOURNAL_POINTS) == set(POINTS) - {"install.renamed"}
