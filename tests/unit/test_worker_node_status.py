"""The worker shell's status endpoint against the in-memory master twin: the endpoint is named
at register (and dropped for a master that refuses the extra arg), the status follows the
machine, and the socket is closed when the worker stops."""

from __future__ import annotations

import threading

from mwcluster.errors import BadRequest
from mwcluster.nodes.worker.node import WorkerNode
from mwcluster.testing import RawDealer, wait_for
from mwcluster.testing.memory import MemoryClient, MemoryMaster
from mwcluster.testing.memory import RunningWorker as Running
from mwcluster.wire.protocol import Op
from mwcluster.worker import Registry
from mwcluster.config import load_worker_config


def config(**flags):
    base = {"worker_id": "w1", "slots": 2, "heartbeat_ms": 20, "progress_interval_ms": 10,
            "idle_poll_ms": 5, "stop_timeout_s": 5.0, "status_endpoint": "tcp://127.0.0.1:0",
            "executor": "thread"}       # handlers of this test's Registry
    base.update(flags)
    return load_worker_config(env={}, flags=base)


def gated_registry(release: threading.Event) -> Registry:
    reg = Registry()

    @reg.handler("gated")
    def gated(task, report):
        report(0.25, n=1)
        release.wait(20)
        return task.input

    return reg


def test_the_status_endpoint_is_named_at_register_follows_tasks_and_closes_at_stop():
    fake = MemoryMaster()
    release = threading.Event()
    job = fake.submit_job("g", "gated", [3])
    node = WorkerNode(config(), gated_registry(release), client_factory=fake.client)
    with Running(node):
        wait_for(lambda: node.observed.status_endpoint is not None, what="the endpoint bound")
        endpoint = node.observed.status_endpoint
        wait_for(lambda: fake.status_endpoints.get("w1") == endpoint, what="named at register")
        with RawDealer(endpoint) as dealer:
            wait_for(lambda: [t["progress"] for t in dealer.status()["tasks"]] == [0.25],
                     what="the task's progress in the status")
            assert dealer.status()["tasks"][0]["job_id"] == job
            release.set()
            wait_for(lambda: dealer.status()["tasks_succeeded"] == 1, what="the success")
            assert dealer.status()["last_exchange_age_s"] is not None
    # its context was terminated, which returns only once the status socket is closed
    assert node.observed._ctx is None and node.observed._status is None
    assert not any(t.name == "worker status" and t.is_alive() for t in threading.enumerate())


class OldMasterClient(MemoryClient):
    """A client of a master from before the optional status endpoint at register."""

    refusals = 0

    def register_worker(self, worker_id, slots, address="", durability=None, *,
                        status_endpoint=None):
        if status_endpoint is not None:
            OldMasterClient.refusals += 1
            raise BadRequest("WORKER_REGISTER takes 3 args (worker_id, address, slots), got 4")
        return super().register_worker(worker_id, slots, address, durability)


def test_a_master_that_refuses_the_endpoint_gets_a_registration_without_it():
    fake = MemoryMaster()
    release = threading.Event()
    release.set()
    job = fake.submit_job("g", "gated", [1, 2])
    node = WorkerNode(config(), gated_registry(release),
                      client_factory=lambda: OldMasterClient(fake))
    with Running(node):
        wait_for(lambda: fake.job_state(job) == "succeeded", what="the job to succeed")
    assert OldMasterClient.refusals == 1
    assert fake.count(Op.WORKER_REGISTER) == 1 and fake.status_endpoints == {}


def test_no_status_endpoint_means_no_socket_and_nothing_named():
    fake = MemoryMaster()
    release = threading.Event()
    release.set()
    job = fake.submit_job("g", "gated", [1])
    node = WorkerNode(config(status_endpoint=""), gated_registry(release),
                      client_factory=fake.client)
    with Running(node):
        wait_for(lambda: fake.job_state(job) == "succeeded", what="the job to succeed")
    assert node.observed.status_endpoint is None and fake.status_endpoints == {}
    assert node.observed.status()["tasks_succeeded"] == 1      # still kept, for metrics
