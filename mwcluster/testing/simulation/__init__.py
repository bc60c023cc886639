"""The whole cluster in one process, under a seeded scheduler and a fake clock (in the manner
of FoundationDB's simulation and TigerBeetle's VOPR): the master, its checkpoint replica and
workers run their real decisions and state, and the real journal and snapshot files, while the
network, the disk's crash semantics and time are simulated, with faults injected by name.

    world.py     Scheduler (seeded; the fake clock; the trace), Network (drop, duplicate,
                 delay, cut)
    disk.py      SimDisk: the journal's I/O seam with kill -9 and power-loss semantics, and
                 the journal's named crash points
    nodes.py     SimMaster, SimReplica, SimWorker, SimWriter
    scenario.py  one seeded scenario and the properties checked at its end

A failing scenario raises ScenarioFailed naming its seed; `run_scenario(seed, directory)`
replays it exactly (the same events in the same order: `Outcome.trace_digest`).
"""

from mwcluster.testing.simulation.scenario import Outcome, ScenarioFailed, run_scenario, seeds

__all__ = ["Outcome", "ScenarioFailed", "run_scenario", "seeds"]
