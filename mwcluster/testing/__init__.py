"""Test helpers shipped with the package: in-memory twins built on the real code, and real
processes on 127.0.0.1 that the tests start and always stop.

    processes.py   MasterProcess (a master child on random ports), RawDealer, wait_for
    checkpoint.py  CheckpointProcess (a checkpoint node child), checkpoint_once
    failover.py    StandbyProcess (a promotable checkpoint node child), SyncWriter
    cluster.py     LocalCluster: a master, a checkpoint node and workers as children (the demo
                   and the examples use it too)
    memory.py      MasterTwin (a master on the real code, no socket, no thread) and
                   MemoryMaster (one behind a lock, for worker tests), RunningWorker
"""

from mwcluster.testing.cluster import LocalCluster, LocalMaster, WorkerProcess, exit_on_sigterm
from mwcluster.testing.processes import (PACKAGE_ROOT, MasterProcess, MasterStartError,
                                         RawDealer, child_env, wait_for)

__all__ = ["PACKAGE_ROOT", "LocalCluster", "LocalMaster", "MasterProcess", "MasterStartError",
           "RawDealer", "WorkerProcess", "child_env", "exit_on_sigterm", "wait_for"]
