"""The dask executor's runner (nodes/worker/dask_executor.py) on a Dask cluster in this process
(processes=False, on 127.0.0.1, random ports): results, relayed and rate-limited progress,
handler failures, cancellation, and a scheduler that goes and comes back on the same port
(reconnected by Dask itself, or with a fresh Client). No master: run() is called the way the
worker's handler threads call it."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from mwcluster.core import worker_machine as wm
from mwcluster.errors import ConfigError
from mwcluster.nodes.worker import dask_executor
from mwcluster.testing import wait_for
from mwcluster.testing.dask import DaskCluster
from mwcluster.worker import REGISTRY

MODULES = ["mwcluster.testing.handlers"]


def _where(task, report):
    return threading.current_thread().name


def _burst(task, report):
    for n in range(1, 201):
        report(n / 400, n=n)
    return "done"


def _tagged(task, report):
    for n in range(20):
        report(n / 20, tag=task.input)
    return task.input


def _unsendable(task, report):
    return {1, 2}


for _name, _fn in (("tests.dask.where", _where), ("tests.dask.burst", _burst),
                   ("tests.dask.tagged", _tagged), ("tests.dask.unsendable", _unsendable)):
    REGISTRY.register(_name, _fn)    # the Dask workers share this process and its registry


def start(name: str, params=None, task_input=None, index=0, attempt=1) -> wm.Start:
    return wm.Start("job-1", index, attempt, name, task_input, params)


@pytest.fixture
def cluster(tmp_path):
    made = DaskCluster(str(tmp_path / "dask"))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def runner(cluster):
    made = dask_executor.DaskRunner(cluster.address, MODULES)
    try:
        yield made
    finally:
        made.close()


def always() -> bool:
    return True


def test_a_handler_runs_in_a_dask_worker_thread_and_its_result_comes_back(cluster, runner):
    ok, where = runner.run(start("tests.dask.where"), always, lambda p, c: None)
    assert ok and "Dask" in where and where != threading.current_thread().name
    progress: list = []
    assert runner.run(start("testing.echo", task_input={"a": [1, 2]}), always,
                      lambda p, c: progress.append((p, c))) == (True, {"a": [1, 2]})
    assert progress == [(0.5, {"seen": 1})]
    assert runner.status() == {"scheduler": cluster.address, "connected": True,
                               "dask_workers": 1, "dask_threads": 2}
    wait_for(lambda: cluster.our_keys() == [], 10, "the released futures to be forgotten")


def test_progress_is_rate_limited_and_the_newest_report_arrives_before_the_result(runner):
    progress: list = []
    assert runner.run(start("tests.dask.burst"), always,
                      lambda p, c: progress.append((p, c))) == (True, "done")
    assert progress[0] == (1 / 400, {"n": 1}) and progress[-1] == (0.5, {"n": 200})
    assert len(progress) < 200
    assert [c["n"] for _, c in progress] == sorted(c["n"] for _, c in progress)


def test_concurrent_attempts_each_get_their_own_progress(runner):
    seen: dict = {}
    results: dict = {}

    def one(tag: int) -> None:
        seen[tag] = []
        results[tag] = runner.run(start("tests.dask.tagged", task_input=tag, index=tag),
                                  always, lambda p, c: seen[tag].append(c["tag"]))

    threads = [threading.Thread(target=one, args=(tag,)) for tag in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {tag: (True, tag) for tag in range(4)}
    assert all(seen[tag] and set(seen[tag]) == {tag} for tag in range(4)), seen


def test_handler_failures_fail_the_attempt_like_the_other_executors(runner):
    ok, error = runner.run(start("testing.sleep", {"s": "never"}), always, lambda p, c: None)
    assert not ok and error.startswith("ValueError: ")
    ok, error = runner.run(start("tests.dask.unsendable"), always, lambda p, c: None)
    assert not ok and "cannot be sent" in error
    ok, error = runner.run(start("no.such"), always, lambda p, c: None)
    assert not ok and "no handler named 'no.such' on the Dask worker" in error


def test_an_attempt_no_longer_current_has_its_dask_task_cancelled(cluster, runner):
    wanted = threading.Event()
    wanted.set()
    out: list = []
    thread = threading.Thread(target=lambda: out.append(runner.run(
        start("testing.sleep", {"s": 60}), wanted.is_set, lambda p, c: None)))
    thread.start()
    wait_for(lambda: cluster.executing() == 1, 30, "the task to run on the Dask worker")
    wanted.clear()
    thread.join(30)
    assert out and not out[0][0] and "its Dask task was cancelled" in out[0][1]
    wait_for(lambda: cluster.our_keys() == [], 30, "the scheduler to forget the task")
    wait_for(lambda: cluster.executing() == 0, 30, "the handler to stop (report() False)")
    assert runner.run(start("testing.echo", task_input=3), always, lambda p, c: None) == (True, 3)


def test_a_lost_scheduler_fails_the_running_attempt_and_a_new_one_is_used(cluster, runner):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(runner.run(
        start("testing.sleep", {"s": 60}), always, lambda p, c: None)))
    thread.start()
    wait_for(lambda: cluster.executing() == 1, 30, "the task to run on the Dask worker")
    cluster.close()
    thread.join(30)
    assert out and not out[0][0], out
    assert f"the Dask cluster at {cluster.address}" in out[0][1]
    wait_for(lambda: not runner.status()["connected"], 10, "the runner to see the loss")
    cluster.start()
    wait_for(lambda: runner.status()["connected"], 30, "the runner to reconnect")
    progress: list = []
    assert runner.run(start("testing.echo", task_input=5), always,
                      lambda p, c: progress.append(c)) == (True, 5)
    assert progress == [{"seen": 1}]         # subscribed again on the new connection


def test_a_scheduler_away_for_long_gets_a_fresh_client(cluster, runner, caplog):
    caplog.set_level(logging.INFO, logger=dask_executor.__name__)
    cluster.close()
    wait_for(lambda: "is lost; reconnecting" in caplog.text, 30, "the keeper to drop it")
    cluster.start()
    wait_for(lambda: "connected again (a new Dask client)" in caplog.text, 30,
             "a fresh client")
    assert runner.status()["connected"]
    progress: list = []
    assert runner.run(start("testing.echo", task_input=6), always,
                      lambda p, c: progress.append(c)) == (True, 6)
    assert progress == [{"seen": 1}]


def test_an_attempt_waits_for_a_lost_scheduler_within_bounds(cluster, runner, monkeypatch):
    cluster.close()
    wait_for(lambda: not runner.status()["connected"], 10, "the runner to see the loss")
    monkeypatch.setattr(dask_executor, "WAIT_FOR_SCHEDULER_S", 0.2)
    ok, error = runner.run(start("testing.echo"), always, lambda p, c: None)
    assert not ok and f"the Dask cluster at {cluster.address} is unreachable" in error
    monkeypatch.setattr(dask_executor, "WAIT_FOR_SCHEDULER_S", 60)
    ok, error = runner.run(start("testing.echo"), lambda: False, lambda p, c: None)
    assert not ok and "no longer this worker's" in error


def test_an_unreachable_scheduler_at_start_is_a_config_error(monkeypatch):
    with socket.socket() as sock:             # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 0.5)
    with pytest.raises(ConfigError, match=f"Dask scheduler at {address}"):
        dask_executor.DaskRunner(address, MODULES)
