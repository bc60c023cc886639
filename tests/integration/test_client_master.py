"""The client, the CLI and the benchmark against a real master (a child process on random
127.0.0.1 ports, stopped by each fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import zmq
from click.testing import CliRunner

from mwcluster import Client, errors
from mwcluster.cli import main
from mwcluster.client import op_check, op_delete, op_merge, op_put
from mwcluster.core.records import Put, decode_record
from mwcluster.core.values import encode
from mwcluster.testing import MasterProcess, wait_for
from mwcluster.wire.protocol import Op, decode_reply, encode_request

STATUS_FIELDS = {"epoch", "txid", "durable_txid", "journal_bytes", "last_snapshot_txid",
                 "cpu_s", "flush_interval_ms"}


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    with MasterProcess(tmp_path_factory.mktemp("client") / "data") as m:
        yield m


@pytest.fixture
def client(master):
    with Client(master.client_endpoint, timeout_s=5.0) as c:
        yield c


def test_put_get_stat_cas_merge_delete(client):
    txid = client.put("/it/a", {"n": 1, "tags": ["x"]})
    assert txid > 0
    assert client.get("/it/a") == {"n": 1, "tags": ["x"]}
    st = client.stat("/it/a")
    assert (st.version, st.create_txid, st.modify_txid) == (1, txid, txid)
    assert st.value_bytes == len(encode({"n": 1, "tags": ["x"]}))
    assert client.get("/it/missing") is None and client.stat("/it/missing") is None

    txid2 = client.put("/it/a", {"n": 2}, expected_version=1)
    assert txid2 > txid
    with pytest.raises(errors.BadVersion):
        client.put("/it/a", {"n": 3}, expected_version=1)
    with pytest.raises(errors.NodeExists):
        client.put("/it/a", {"n": 3}, expected_version=0)
    with pytest.raises(errors.NoNode):
        client.put("/it/nothing", 1, expected_version=4)

    client.merge("/it/a", {"m": {"deep": True}, "n": None})
    value, st = client.get_with_stat("/it/a")
    assert value == {"m": {"deep": True}} and st.version == 3
    client.put("/it/list", [1, 2])
    with pytest.raises(errors.NotAMap):
        client.merge("/it/list", {"a": 1})

    client.put("/it/tree/x", b"\x00\x01")
    assert client.get("/it/tree/x") == b"\x00\x01"
    client.put("/it/tree", 1)
    with pytest.raises(errors.NotEmpty):
        client.delete("/it/tree")
    assert client.delete("/it/tree", recursive=True) > 0
    assert client.get("/it/tree/x") is None
    with pytest.raises(errors.NoNode):
        client.delete("/it/tree")


def test_multi_all_or_nothing(client):
    txid, results = client.multi([op_put("/mu/a", 1), op_put("/mu/b", 2),
                                  op_check("/mu/c", 0)])
    assert txid > 0 and len(results) == 3
    assert client.get("/mu/a") == 1
    with pytest.raises(errors.MultiFailed) as info:
        client.multi([op_merge("/mu/d", {"x": 1}), op_delete("/mu/a"),
                      op_check("/mu/b", 7)])
    assert info.value.index == 2
    assert client.get("/mu/a") == 1 and client.get("/mu/d") is None


def test_invalid_input_is_refused_with_the_masters_message(client):
    with pytest.raises(errors.InvalidRecord, match="invalid key"):
        client.put("no-slash", 1)
    with pytest.raises(errors.InvalidRecord):
        client.multi([])
    assert client.ping() == client.epoch


def test_listing(client):
    for name in ("b", "a", "c/d", "c/e"):
        client.put(f"/ls/{name}", name)
    assert client.children("/ls") == ["a", "b", "c"]
    assert client.list("/ls/") == ["/ls/a", "/ls/b", "/ls/c/d", "/ls/c/e"]
    assert client.list("/ls/", limit=2, start_after="/ls/a") == ["/ls/b", "/ls/c/d"]
    assert list(client.iter_keys("/ls/", page=1)) == ["/ls/a", "/ls/b", "/ls/c/d", "/ls/c/e"]
    assert "ls" in client.children("/")


def test_status_and_sync_durability(client):
    txid = client.put("/du/sync", 1, durability="sync")
    status = client.status()
    assert STATUS_FIELDS <= status.keys()
    assert status["durable_txid"] >= txid and status["epoch"] == client.epoch
    txid = client.put("/du/async", 2, durability="async")
    wait_for(lambda: client.status()["durable_txid"] >= txid, what="async put durable")


def test_fetch_returns_the_records_written(client):
    txid = client.put("/fe/x", "logged", durability="sync")
    durable, records = client.fetch(txid, 1 << 16)
    assert durable >= txid
    first_txid, _epoch, payload = records[0]
    assert first_txid == txid
    assert decode_record(payload) == Put("/fe/x", encode("logged"), None)


def test_pipeline_many_in_flight(client):
    with client.pipeline(window=128) as pipe:
        futures = [pipe.put(f"/pi/{i:04d}", i) for i in range(2000)]
        reads = [pipe.get(f"/pi/{i:04d}") for i in range(0, 2000, 100)]
    txids = [f.result() for f in futures]
    assert txids == sorted(txids) and len(set(txids)) == 2000
    assert [f.result() for f in reads] == list(range(0, 2000, 100))


def test_batching_pipeline_against_the_master(client):
    before = client.status()
    with client.pipeline(window=256, batch=32) as pipe:
        futures = [pipe.put(f"/pb/{i:04d}", i) for i in range(1000)]
        cas = pipe.put("/pb/0000", "x", expected_version=5)
        syncs = [pipe.put(f"/pb/sync/{i}", i, durability="sync") for i in range(40)]
        reads = [pipe.get(f"/pb/{i:04d}") for i in range(0, 1000, 100)]
    txids = [f.result() for f in futures]
    assert txids == sorted(txids) and len(set(txids)) == 1000
    assert isinstance(cas.exception(), errors.BadVersion)
    assert [f.result() for f in reads] == list(range(0, 1000, 100))
    status = client.status()
    assert status["durable_txid"] >= max(f.result() for f in syncs)
    batches = status["batch_messages_total"] - before["batch_messages_total"]
    assert 1051 / 32 <= batches < 1051 / 2
    assert status["requests_total"] - before["requests_total"] >= 1051


def test_a_resent_request_is_applied_once(master):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(master.client_endpoint)
    try:
        frame = encode_request(b"retrying-client", 41, Op.PUT, ["/once/k", encode(1), None])
        sock.send(frame)
        first = decode_reply(sock.recv())
        sock.send(frame)
        second = decode_reply(sock.recv())
    finally:
        sock.close(linger=0)
    assert first.status == 0 and (second.txid, second.result) == (first.txid, first.result)
    with Client(master.client_endpoint) as c:
        assert c.stat("/once/k").version == 1


def run_cli(master, *args):
    return CliRunner().invoke(main, [*args, "--master", master.client_endpoint],
                              catch_exceptions=False)


def test_cli_round_trip(master):
    r = run_cli(master, "put", "/cli/a", '{"x": 1}')
    assert r.exit_code == 0 and int(r.output) > 0
    assert json.loads(run_cli(master, "get", "/cli/a").output) == {"x": 1}
    r = run_cli(master, "put", "/cli/a", '"v2"', "--expected-version", "1", "--sync")
    assert r.exit_code == 0
    r = run_cli(master, "put", "/cli/a", '"v3"', "--expected-version", "1")
    assert r.exit_code == 1 and r.output.startswith("Error: bad_version:")
    assert "Traceback" not in r.output
    assert json.loads(run_cli(master, "get", "/cli/a").output) == "v2"
    for consistency in ("fast", "strong"):
        r = run_cli(master, "get", "/cli/a", "--consistency", consistency)
        assert r.exit_code == 0 and json.loads(r.output) == "v2"
    r = run_cli(master, "get", "/cli/a", "--consistency", "eventual")
    assert r.exit_code == 2 and "'eventual' is not one of 'strong', 'fast'" in r.output
    run_cli(master, "put", "/cli/b/c", "plain words")
    assert run_cli(master, "ls", "/cli").output.split() == ["a", "b"]
    assert run_cli(master, "ls", "/cli/", "--keys").output.split() == ["/cli/a", "/cli/b/c"]
    st = json.loads(run_cli(master, "stat", "/cli/a", "--json").output)
    assert st["version"] == 2
    assert run_cli(master, "rm", "/cli", "--recursive").exit_code == 0
    r = run_cli(master, "get", "/cli/a")
    assert r.exit_code == 1 and "no such key" in r.output
    status = json.loads(run_cli(master, "status", "--json").output)
    assert STATUS_FIELDS <= status.keys()
    assert "durable_txid" in run_cli(master, "status").output


def test_cli_in_a_subprocess_with_the_environment(master):
    env = {**os.environ, "MWCLUSTER_MASTER": master.client_endpoint}
    cmd = [sys.executable, "-m", "mwcluster.cli"]
    done = subprocess.run([*cmd, "put", "/sub/k", "[1, 2]"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*cmd, "get", "/sub/k"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout) == [1, 2]
    done = subprocess.run([*cmd, "get", "/sub/none"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "no such key" in done.stderr


def test_bench_json(master):
    r = run_cli(master, "bench", "--clients", "2", "--inflight", "16", "--ops", "2000",
                "--mix", "put=90,get=10", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert {"ops_per_s", "p50_ms", "p99_ms", "p999_ms", "errors", "clients", "inflight",
            "ops", "durability", "mix", "seconds"} <= result.keys()
    assert result["errors"] == 0 and result["completed"] == 2000
    assert result["ops_per_s"] > 0
    # beside the clients' own CPU, the master's, from its status before and after the run
    assert result["client_cpu_us"] > 0 and result["master_cpu_us"] > 0
    r = run_cli(master, "bench", "--clients", "1", "--inflight", "4", "--ops", "200",
                "--durability", "sync", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["errors"] == 0


def test_bench_batch_json(master):
    for durability in ("async", "sync"):
        r = run_cli(master, "bench", "--clients", "2", "--inflight", "64", "--batch", "16",
                    "--ops", "2000", "--durability", durability, "--json")
        assert r.exit_code == 0, r.output
        result = json.loads(r.output)
        assert result["errors"] == 0 and result["completed"] == 2000
        assert result["batch"] == 16 and 2000 // 16 <= result["messages"] < 2000
        assert result["ops_per_s"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]


def free_port() -> int:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    try:
        return sock.bind_to_random_port("tcp://127.0.0.1")
    finally:
        sock.close(linger=0)


def test_the_client_rides_over_a_master_restart(tmp_path):
    port = free_port()
    pinned = ("--client-endpoint", f"tcp://127.0.0.1:{port}")
    first = MasterProcess(tmp_path / "data", extra_args=pinned)
    with first, Client(f"tcp://127.0.0.1:{port}", timeout_s=0.5, retries=40) as client:
        txid = client.put("/restart/k", "before", durability="sync")
        epoch = client.epoch
        assert first.terminate() == 0
        second = MasterProcess(tmp_path / "data", extra_args=pinned)
        failed: list[BaseException] = []

        def start_second():
            try:
                second.start()
            except BaseException as exc:
                failed.append(exc)

        starter = threading.Thread(target=start_second)
        starter.start()          # the put below waits, retrying, until the master is back
        try:
            assert client.put("/restart/k", "after", expected_version=1) > txid, failed
            assert client.epoch > epoch
            assert client.get("/restart/k") == "after"
        finally:
            starter.join(timeout=60)
            second.stop()
        assert not failed
