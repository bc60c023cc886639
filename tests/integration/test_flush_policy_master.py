"""The flush policy through a real master (`flush_interval_ms`, docs/durability.md): async
records wait out the interval, and any reply that waits for durability has its records
written at once. The interval here is 60 s, so a reply that waited for it would run into the
clients' 20 s timeout: each test fails by a deadline, not by a measured time."""

from __future__ import annotations

import os

import pytest

from mwcluster import Client
from mwcluster.testing import MasterProcess, wait_for
from mwcluster.testing.failover import StandbyProcess


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    env = dict(os.environ, MWCLUSTER_FLUSH_INTERVAL_MS="60000")
    with MasterProcess(tmp_path_factory.mktemp("flush") / "data", env=env) as m:
        yield m


@pytest.fixture
def client(master):
    with Client(master.client_endpoint, timeout_s=20.0, retries=1) as c:
        yield c


def test_async_records_wait_out_the_interval_and_status_says_so(client):
    txid = client.put("/flush/a", 1, durability="async")
    status = client.status()
    assert status["flush_interval_ms"] == 60000.0
    assert status["txid"] >= txid and status["durable_txid"] < txid
    assert status["loss_window_s"] > 0


def test_a_sync_put_is_written_at_once_with_what_waited_before_it(client):
    early = client.put("/flush/b", 1, durability="async")
    assert client.status()["durable_txid"] < early
    txid = client.put("/flush/c", 2, durability="sync")
    assert client.status()["durable_txid"] >= txid > early


def test_a_strong_sync_read_of_an_unflushed_record_is_written_at_once(client):
    txid = client.put("/flush/d", 3, durability="async")
    assert client.status()["durable_txid"] < txid
    # strong at `sync`: the reply waits until what it saw is fsynced, so it urges the write
    assert client.get("/flush/d", consistency="strong", durability="sync") == 3
    assert client.status()["durable_txid"] >= txid


def test_async_reads_do_not_urge(client):
    txid = client.put("/flush/e", 4, durability="async")
    assert client.get("/flush/e") == 4                       # strong at the async level
    assert client.get("/flush/e", consistency="fast") == 4
    assert client.status()["durable_txid"] < txid


def test_replicated_puts_are_written_at_once(tmp_path):
    """A `replicated` reply waits for the standby, which gets only durable records: its record
    is written at once too."""
    env = dict(os.environ, MWCLUSTER_FLUSH_INTERVAL_MS="60000")
    with MasterProcess(tmp_path / "m", env=env) as master, \
            StandbyProcess(tmp_path / "c", master) as standby:
        with Client([master.client_endpoint], timeout_s=20, retries=1) as client:
            client.put("/warm", 0, durability="sync")
            wait_for(lambda: standby.status()["replica_txid"] >= 1, 30, "standby following")
            for i in range(5):
                early = client.put(f"/flush/async/{i}", i, durability="async")
                txid = client.put(f"/flush/r/{i}", i, durability="replicated")
                assert client.status()["replica_txid"] >= txid > early
