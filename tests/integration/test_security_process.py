"""CURVE and authorization with real processes on 127.0.0.1: a secured master and checkpoint
node, peers with unknown, wrong or no keys on every socket, key removal and rotation at a
reload, protected mode.

A refused handshake must be reported as AuthenticationFailed naming its cause, never as a
timeout: each client here has a long timeout and retries, so a test that passes shows the
error came from the handshake watch (a timeout would raise RequestTimeout, much later).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from mwcluster.client import Client
from mwcluster.client.connection import promote_standby
from mwcluster.errors import AuthenticationFailed, Unauthorized
from mwcluster.security.curve import Credentials
from mwcluster.security.keys import new_keys, read_public, read_secret
from mwcluster.testing import MasterProcess, wait_for
from mwcluster.testing.checkpoint import CheckpointProcess
from mwcluster.recipes import Lock
from mwcluster.testing.keys import ClusterKeys
from mwcluster.wire.protocol import TOPIC_LOG, Op

PATIENT = {"timeout_s": 20.0, "retries": 3}    # a timeout would take over a minute


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("secured")
    keys = ClusterKeys(base / "keys")
    keys.add("etl", ["write"], ["/teams/etl/"])
    with MasterProcess(base / "master", keys=keys,
                       extra_args=("--audit-log", str(base / "audit.log"))) as master:
        node = CheckpointProcess(base / "checkpoint", master, keys=keys, period_s=3600)
        with node:
            yield keys, master, node, base


def client(master, creds, **kw) -> Client:
    return Client(master.client_endpoint, credentials=creds, **{**PATIENT, **kw})


def test_principals_get_what_their_roles_allow(cluster):
    keys, master, _node, base = cluster
    with client(master, keys.credentials("client")) as writer:
        txid = writer.put("/roles/a", 1)
        assert writer.get("/roles/a") == 1
    with client(master, keys.credentials("reader")) as reader:
        assert reader.get("/roles/a") == 1
        with pytest.raises(Unauthorized, match="'reader'.*may not PUT.*role write or admin"):
            reader.put("/roles/a", 2)
        with pytest.raises(Unauthorized, match="may not FETCH"):
            reader.fetch(1, 1 << 16)
        with pytest.raises(Unauthorized, match="RELOAD_PRINCIPALS"):
            reader.reload_principals()
        assert reader.status()["security"]["curve"] is True
    with client(master, keys.credentials("etl")) as etl:
        etl.put("/teams/etl/x", 1)
        with pytest.raises(Unauthorized, match="limited to keys under /teams/etl/"):
            etl.put("/roles/a", 3)
    with client(master, keys.credentials("server")) as replica:
        durable, records = replica.fetch(1, 1 << 16)
        assert durable >= txid and records
    stranger_secret, _ = new_keys(base / "strangers", "stranger", ["replica"])
    for creds, match in ((None, "has no key"),
                         (Credentials(read_secret(stranger_secret),
                                      keys.credentials().server_key), "refused the key")):
        with client(master, creds) as peer:
            with pytest.raises(AuthenticationFailed, match=match):
                peer.fetch(1, 1 << 16)
    with client(master, keys.credentials("admin")) as admin:
        assert admin.get("/roles/a") == 1          # nothing refused was applied
        assert admin.status()["security"]["unauthorized_requests"] >= 4


@pytest.mark.parametrize("case", ["unknown key", "no key", "wrong server key"])
def test_a_refused_handshake_says_why_at_once(cluster, tmp_path, case):
    keys, master, node, _base = cluster
    if case == "unknown key":
        secret, _ = new_keys(tmp_path, "mallory", ["admin"])
        creds, match = Credentials(read_secret(secret), keys.credentials().server_key), \
            "refused the key of mallory"
    elif case == "no key":
        creds, match = None, "requires CURVE authentication and this client has no key"
    else:
        creds, match = keys.credentials("client", server="reader"), "server key given"
    for endpoint in (master.client_endpoint, node.status_endpoint):
        # The client would wait 120 s for a reply: a refusal found only when that wait ends
        # misses the test's 60 s deadline (the refusal takes well under a second).
        outcome: list[BaseException | None] = []

        def ask() -> None:
            with Client(endpoint, credentials=creds, timeout_s=120.0, retries=0) as peer:
                try:
                    peer.status()
                    outcome.append(None)
                except BaseException as exc:
                    outcome.append(exc)

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(60)
        refused_in_time = not asking.is_alive()
        asking.join(30)              # a failed run: its client has 90 s left, as a daemon
        assert refused_in_time, f"no refusal within 60 s from {endpoint}"
        assert isinstance(outcome[0], AuthenticationFailed), outcome
        assert re.search(match, str(outcome[0])), outcome


def test_a_curve_client_against_a_plain_master_says_so(tmp_path, cluster):
    keys = cluster[0]
    with MasterProcess(tmp_path / "plain") as plain:
        with Client(plain.client_endpoint, credentials=keys.credentials(), **PATIENT) as c:
            with pytest.raises(AuthenticationFailed, match="does not speak CURVE"):
                c.ping()


def _sub(ctx, endpoint: str, creds):
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    if creds is not None:
        creds.apply(sock)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED |
                                      zmq.EVENT_HANDSHAKE_FAILED_AUTH |
                                      zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                      zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    sock.connect(endpoint)
    return sock, monitor


def test_the_log_stream_goes_only_to_replica_and_admin_principals(cluster, tmp_path):
    keys, master, _node, _base = cluster
    secret, _ = new_keys(tmp_path, "stranger", ["admin"])
    stranger = Credentials(read_secret(secret), keys.credentials().server_key)
    peers = {"server": keys.credentials("server"), "admin": keys.credentials("admin"),
             "reader": keys.credentials("reader"), "client": keys.credentials("client"),
             "stranger": stranger, "plain": None,
             "wrong server key": keys.credentials("server", server="reader")}
    ctx = zmq.Context()
    try:
        subs = {name: _sub(ctx, master.pub_endpoint, creds) for name, creds in peers.items()}
        outcome: dict[str, int] = {}

        def handshakes_done() -> bool:
            for name, (_sock, monitor) in subs.items():
                while name not in outcome and monitor.poll(0):
                    outcome[name] = recv_monitor_message(monitor)["event"]
            return len(outcome) == len(subs)
        wait_for(handshakes_done, 10, "every subscriber's handshake to end")
        assert {n for n, e in outcome.items() if e == zmq.EVENT_HANDSHAKE_SUCCEEDED} == \
            {"server", "admin"}
        with client(master, keys.credentials("client")) as writer:
            got = {"server": 0}

            def stream_seen() -> bool:
                writer.put("/stream/x", 1)
                sock = subs["server"][0]
                while sock.poll(0):
                    topic, *_ = sock.recv_multipart()
                    got["server"] += topic == TOPIC_LOG
                return got["server"] > 0
            wait_for(stream_seen, 10, "the replica principal to receive the stream")
        for name in ("reader", "client", "stranger", "plain", "wrong server key"):
            assert subs[name][0].poll(0) == 0, f"{name} received the log stream"
    finally:
        for sock, monitor in subs.values():
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)
        ctx.term()


def test_the_checkpoint_node_follows_and_its_endpoint_checks_roles(cluster):
    keys, master, node, _base = cluster
    with client(master, keys.credentials("client")) as writer:
        txid = writer.put("/follow/x", 1)
    wait_for(lambda: node.status()["replica_txid"] >= txid, 20, "the node to follow")
    assert node.status()["security"]["curve"] is True
    with Client(node.status_endpoint, credentials=keys.credentials("client"), **PATIENT) as c:
        with pytest.raises(Unauthorized, match="may not PROMOTE.*role admin"):
            c.promote()
    with Client(node.status_endpoint, credentials=keys.credentials("reader"),
                read_from="master", **PATIENT) as c:
        assert c.status()["role"] == "checkpoint"
    with Client(master.client_endpoint, credentials=keys.credentials("reader"),
                read_from="standby", standby=node.status_endpoint, **PATIENT) as c:
        assert c.get("/follow/x") == 1 and c.standby.served == 1


def test_removing_and_rotating_keys_take_effect_at_a_reload(cluster):
    keys, master, _node, base = cluster
    keys.add("carol", ["write"])
    keys.add("dave", ["write"])
    os.kill(master.pid, signal.SIGHUP)           # reload by signal
    old_carol = keys.credentials("carol")

    def allowed(creds) -> bool:
        try:
            with Client(master.client_endpoint, credentials=creds, timeout_s=5) as c:
                c.ping()
            return True
        except AuthenticationFailed:
            return False
    wait_for(lambda: allowed(old_carol), 10, "carol's key to be read at SIGHUP")
    with client(master, old_carol) as carol, client(master, keys.credentials("dave")) as dave:
        carol.put("/rot/a", 1)
        dave.put("/rot/b", 1)
        keys.add("carol", ["write"], force=True)         # a new key under the same name
        keys.public("dave").unlink()                     # dave removed
        with client(master, keys.credentials("admin")) as admin:
            admin.reload_principals()                    # reload by request
        # the connections that were open are refused at their next request
        with pytest.raises(Unauthorized, match="not an allowed principal any more"):
            carol.put("/rot/a", 2)
        with pytest.raises(Unauthorized, match="not an allowed principal any more"):
            dave.put("/rot/b", 2)
    assert not allowed(old_carol)
    with client(master, keys.credentials("carol")) as carol:
        assert carol.get("/rot/a") == 1
        last = carol.put("/rot/a", 3)
    audit = (base / "audit.log")          # flushed at the master's next tick
    wait_for(lambda: f"result=ok txid={last}\n" in audit.read_text(), 5, "the audit log")
    text = audit.read_text()
    assert "principal=carol" in text and "result=unauthorized" in text
    assert read_public(str(keys.public("carol"))).decode() not in text     # no keys in it
    assert read_secret(keys.secret("carol")).secret.decode() not in text



def test_a_checkpoint_node_rereads_its_principals_at_sighup(cluster):
    keys, _master, node, _base = cluster
    keys.add("erin", ["read"])
    erin = keys.credentials("erin")
    with Client(node.status_endpoint, credentials=keys.credentials("admin"), **PATIENT) as a:
        before = a.status()["security"]["principal_reloads"]
        os.kill(node.pid, signal.SIGHUP)
        wait_for(lambda: a.status()["security"]["principal_reloads"] == before + 1, 10,
                 "the node to reread its principals at SIGHUP")
    with Client(node.status_endpoint, credentials=erin, **PATIENT) as c:
        assert c.status()["role"]                      # the added principal is let in
        keys.public("erin").unlink()
        os.kill(node.pid, signal.SIGHUP)
        with pytest.raises(Unauthorized, match="not an allowed principal any more"):
            wait_for(lambda: c.status() is None, 10, "the removal to take effect")
    with Client(node.status_endpoint, credentials=erin, **PATIENT) as c:
        with pytest.raises(AuthenticationFailed, match="refused the key of erin"):
            c.status()
    assert node.returncode is None

def _master_cmd(tmp_path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mwcluster.cli", "master", "--data-dir",
            str(tmp_path / "d"), "--pub-endpoint", "tcp://127.0.0.1:0", *extra]


def test_protected_mode_refuses_a_public_address_without_keys(tmp_path):
    done = subprocess.run(_master_cmd(tmp_path, "--client-endpoint", "tcp://0.0.0.0:0"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "without authentication" in done.stderr and "--insecure" in done.stderr
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_a_bad_key_file_stops_the_start_with_what_to_do(tmp_path, cluster):
    keys = cluster[0]
    bad = tmp_path / "open.secret"
    bad.write_text(keys.secret("server").read_text())
    bad.chmod(0o644)
    done = subprocess.run(_master_cmd(tmp_path, "--client-endpoint", "tcp://127.0.0.1:0",
                                      "--key-file", str(bad), "--principals-dir",
                                      str(keys.dir)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "chmod 600" in done.stderr
    secret = read_secret(keys.secret("server")).secret.decode()
    assert secret not in done.stderr and secret not in done.stdout
    done = subprocess.run(_master_cmd(tmp_path, "--client-endpoint", "tcp://127.0.0.1:0",
                                      "--key-file", str(keys.secret("server"))),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "principals_dir is not" in done.stderr


def test_status_reads_every_node_of_a_secured_cluster(tmp_path):
    """`mwcluster status` asks the master, its checkpoint node and its workers with one key:
    a worker's status endpoint serves with the worker's own key, which the master lists."""
    import json

    from mwcluster.demo import job as demo_job
    from mwcluster.testing.cluster import LocalCluster, run_command

    with LocalCluster(tmp_path / "c", workers=1, slots=1, handlers=[demo_job.__name__],
                      checkpoint=True) as cluster:
        env = {**os.environ, **cluster.keys.env("reader")}
        wait_for(lambda: cluster.client().status()["worker_nodes"], 20, "the worker to register")

        def everyone_answers() -> bool:
            done = subprocess.run([sys.executable, "-m", "mwcluster.cli", "status", "--json",
                                   "--master", cluster.master.client_endpoint],
                                  capture_output=True, text=True, env=env, timeout=60)
            assert done.returncode == 0, done.stderr
            out = json.loads(done.stdout)
            entries = out.get("worker_status", []) + out.get("checkpoint_node_status", [])
            return len(entries) == 2 and all(e["reachable"] for e in entries)
        wait_for(everyone_answers, 30, "the node and the worker to answer over CURVE")
        worker = cluster.workers[0]
        endpoint = cluster.client().status()["worker_nodes"][0]["status_endpoint"]
        creds = cluster.keys.credentials("reader", server=worker.worker_id)
        os.kill(worker.pid, signal.SIGHUP)              # rereads its principals, keeps going
        with Client(endpoint, credentials=creds, **PATIENT) as c:
            wait_for(lambda: c.status()["security"]["principal_reloads"] == 1, 10,
                     "the worker to reread its principals at SIGHUP")
        assert worker.returncode is None
        stranger_secret, _ = new_keys(tmp_path / "strangers", "stranger", ["admin"])
        stranger = Credentials(read_secret(stranger_secret), creds.server_key)
        for creds, match in ((None, "requires CURVE"),
                             (cluster.keys.credentials("reader"), "server key given"),
                             (stranger, "refused the key of stranger")):
            with Client(endpoint, credentials=creds, **PATIENT) as c:   # nothing for them
                with pytest.raises(AuthenticationFailed, match=match):
                    c.status()
        plain = run_command([sys.executable, "-m", "mwcluster.cli", "status",
                             "--master", cluster.master.client_endpoint], 60)
        assert plain.returncode == 1 and "has no key" in plain.stderr


def test_a_failover_changes_nothing_for_a_secured_client(tmp_path):
    """The master and its standby serve with the cluster's one server key: a client with one
    set of credentials follows the promotion; replicated writes are confirmed over CURVE; the
    node audits the PROMOTEs at its status endpoint, and the promoted master its requests,
    in the one audit log its configuration names."""
    from mwcluster.testing.failover import StandbyProcess

    keys = ClusterKeys(tmp_path / "keys")
    audit = tmp_path / "promoted-audit.log"
    with MasterProcess(tmp_path / "m", durability="sync", keys=keys) as master, \
            StandbyProcess(tmp_path / "s", master, keys=keys,
                           extra_args=("--audit-log", str(audit))) as standby:
        endpoints = [master.client_endpoint, standby.promote_client_endpoint]
        with Client(endpoints, credentials=keys.credentials("client"), timeout_s=2,
                    retries=8) as c:
            txid = c.put("/fo/a", 1, durability="replicated")
            wait_for(lambda: standby.status()["replica_txid"] >= txid, 20, "the standby")
            with pytest.raises(Unauthorized, match="may not PROMOTE"):
                promote_standby(standby.status_endpoint, 10, keys.credentials("reader"))
            master.kill()
            report = standby.promote()
            assert report["epoch"] > master.epoch
            assert c.get("/fo/a") == 1
            txid_b = c.put("/fo/b", 2)
            assert c.epoch == report["epoch"]
            wait_for(lambda: audit.exists() and f"txid={txid_b}\n" in audit.read_text(), 5,
                     "the promoted master's audit line")   # flushed at its next tick
            lines = audit.read_text().splitlines()
            assert any("principal=client" in x and "key=/fo/b" in x for x in lines), lines
            # the node's own lines came first: the refused and the accepted PROMOTE
            assert [x.split(" op=")[1] for x in lines if " op=PROMOTE" in x] == [
                "PROMOTE result=unauthorized txid=0", "PROMOTE result=ok txid=0"], lines
            assert "principal=reader" in lines[0] and "principal=admin" in lines[1], lines


def test_a_node_with_an_unknown_key_says_so_and_still_stops_at_once(cluster, tmp_path):
    """libzmq does not retry a refused handshake: a socket with no way to the master must
    not block a send forever (the node would ignore SIGTERM)."""
    keys, master, _node, _base = cluster
    other, _ = new_keys(tmp_path / "other", "server", ["replica"])
    node = CheckpointProcess(tmp_path / "c", master,
                             extra_args=("--key-file", str(other), "--principals-dir",
                                         str(keys.dir), "--server-key",
                                         str(keys.public("server"))))
    with node:
        wait_for(lambda: node.stderr_text().count("refused the key of server") >= 2, 30,
                 f"the node to report the refusal twice: {node.stderr_text()[-3000:]}")
        assert node.terminate(timeout_s=20) == 0, node.stderr_text()[-2000:]


def test_a_removed_principal_loses_its_open_subscription_at_the_reload(tmp_path):
    keys = ClusterKeys(tmp_path / "keys")
    keys.add("tap", ["replica"])
    with MasterProcess(tmp_path / "m", keys=keys) as master:
        ctx = zmq.Context()
        sock, monitor = _sub(ctx, master.pub_endpoint, keys.credentials("tap"))
        try:
            with client(master, keys.credentials("client")) as writer, \
                    client(master, keys.credentials("admin")) as admin:

                def receives() -> bool:
                    writer.put("/tap/x", 1)
                    got = False
                    while sock.poll(0):
                        got |= sock.recv_multipart()[0] == TOPIC_LOG
                    return got
                wait_for(receives, 10, "the tap to receive the stream")
                keys.public("tap").unlink()
                admin.reload_principals()
                refused = {}

                def refused_again() -> bool:   # it reconnected, and ZAP refused it
                    while monitor.poll(0):
                        event = recv_monitor_message(monitor)["event"]
                        refused["auth"] = event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    return refused.get("auth", False)
                wait_for(refused_again, 10, "the tap's reconnection to be refused")
                while sock.poll(0):
                    sock.recv_multipart()        # what was sent before the reload
                writer.put("/tap/after", 1)
                wait_for(lambda: writer.status()["published_txid"] >= writer.seen_txid, 10,
                         "the write to be published")
                assert sock.poll(200) == 0, "a removed principal still receives the stream"
        finally:
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)
            ctx.term()


def test_protected_mode_covers_the_promote_endpoints(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mwcluster.cli", "checkpoint", "--data-dir",
                           str(tmp_path / "c"), "--promote-client-endpoint", "tcp://0.0.0.0:0",
                           "--promote-pub-endpoint", "tcp://127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "tcp://0.0.0.0:0" in done.stderr
    assert "--insecure" in done.stderr


def test_a_nested_value_in_a_refused_request_does_not_stop_the_master(cluster):
    """Refusals and audit lines name such a value by its type (formatting it would recurse
    past Python's limit, in the master's loop)."""
    import msgpack

    from mwcluster.testing import RawDealer
    from mwcluster.wire.protocol import decode_reply

    keys, master, node, _base = cluster
    nested = b"\x91" * 1000 + b"\x90"        # a list 1,000 deep, packed by hand

    def frame(op: int, args: bytes) -> bytes:
        return b"\x96" + b"".join(msgpack.packb(v) for v in (1, b"cid", 9, int(op), 0)) + args
    put = b"\x93" + nested + msgpack.packb(b"") + msgpack.packb(None)
    beat = b"\x92" + nested + msgpack.packb([])
    for name, endpoint, body in (("etl", master.client_endpoint, frame(Op.PUT, put)),
                                 ("reader", master.client_endpoint, frame(Op.PUT, put)),
                                 ("client", master.client_endpoint,
                                  frame(Op.WORKER_HEARTBEAT, beat)),
                                 ("client", node.status_endpoint,
                                  frame(Op.PROMOTE, b"\x91" + nested))):
        with RawDealer(endpoint, credentials=keys.credentials(name)) as d:
            d.send_frames(body)
            assert d.sock.poll(10_000), f"no answer to {name}"
            reply = decode_reply(d.sock.recv())
            assert reply.status == 27 and "could not be checked" not in reply.result[1]
            assert d.call(Op.PING).status == 0


def test_watches_need_read_and_a_prefix_limited_writer_can_hold_a_lock_in_its_prefix(cluster):
    keys, master, _node, _base = cluster
    with client(master, keys.credentials("etl")) as etl, \
            client(master, keys.credentials("reader")) as reader:
        watch = reader.watch("/teams/etl/locks/", wait_s=0)
        lock = Lock(etl, "nightly", prefix="/teams/etl/locks/", ttl_s=5)
        assert lock.acquire(timeout=30)
        with pytest.raises(Unauthorized, match="may not LEASE_REVOKE"):
            etl.revoke_lease(lock._me.lease)
        key = lock.key
        lock.release()               # no revoke for it: its key is deleted instead
        assert etl.get(key) is None
        events = []
        while len(events) < 2:
            events.extend(watch.poll())
        assert [(e.type, e.key) for e in events] == [("put", key), ("delete", key)]
        with pytest.raises(Unauthorized, match="limited to keys under /teams/etl/"):
            Lock(etl, "elsewhere", ttl_s=5).acquire(timeout=30)
