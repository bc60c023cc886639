"""Watches and leases through a real master (docs/coordination.md): events from a txid in
order, a record's events together, a waiting watch answered by the write that reaches it,
resumption across a kill -9 and restart with nothing missed or repeated, a Resync when the
log moved past the watch, leases that expire into deletions everyone sees, keepalives, and
a fresh TTL for every lease after a restart."""

from __future__ import annotations

import os
import threading

import pytest

from mwcluster import Client
from mwcluster.errors import NotFound, RemoteMultiFailed
from mwcluster.testing import MasterProcess, wait_for


@pytest.fixture
def master(tmp_path):
    with MasterProcess(tmp_path / "data") as m:
        yield m


def client_of(master, **kw):
    return Client(master.client_endpoint, timeout_s=kw.pop("timeout_s", 5.0), **kw)


def keys_and_types(events):
    return [(e.txid, e.type, e.key) for e in events]


def test_events_from_a_txid_in_order_with_a_records_events_together(master):
    with client_of(master) as c:
        first = c.put("/w/a", 1)
        c.put("/other/x", 0)
        txid, _ = c.multi([c.op_put("/w/b", 2), c.op_put("/w/c", 3), c.op_delete("/w/a")])
        c.delete("/w", recursive=True)
        watch = c.watch("/w/", from_txid=first)
        events = []
        while len(events) < 6:
            events.extend(watch.poll())
    assert keys_and_types(events) == [
        (first, "put", "/w/a"), (txid, "put", "/w/b"), (txid, "put", "/w/c"),
        (txid, "delete", "/w/a"), (txid + 1, "delete", "/w/b"), (txid + 1, "delete", "/w/c")]
    assert events[1].value == 2 and events[1].version == 1 and events[1].create_txid == txid


def test_a_waiting_watch_is_answered_by_the_write_that_reaches_it(master):
    with client_of(master) as c, client_of(master) as writer:
        watch = c.watch("/wait/", wait_s=2.0)
        start = watch.next_txid
        done = threading.Event()

        def write():
            # once the watch waits at the master (not before: it could be answered at once)
            wait_for(lambda: writer.status()["coordination"]["watches_waiting"] == 1, 10,
                     "the watch to wait")
            writer.put("/elsewhere", 1)         # another prefix: no answer
            writer.put("/wait/k", "v")
            done.set()

        thread = threading.Thread(target=write)
        thread.start()
        events = []
        while not events:
            events = watch.poll()
        thread.join()
    assert done.is_set()
    assert [(e.type, e.key, e.value) for e in events] == [("put", "/wait/k", "v")]
    assert events[0].txid == start + 1      # the put elsewhere came first


def test_a_watch_resumes_across_kill_9_and_restart_missing_and_repeating_nothing(tmp_path):
    with MasterProcess(tmp_path / "data") as master:
        endpoint = master.client_endpoint
        with Client(endpoint, timeout_s=2.0) as c, Client(endpoint, timeout_s=2.0) as w:
            watch = c.watch("/r/", from_txid=1, give_up_s=60)
            written = [w.put(f"/r/{i}", i) for i in range(20)]
            seen = []
            while len(seen) < 20:
                seen.extend(watch.poll())
            master.kill()
            master.restart(extra_args=("--client-endpoint", endpoint))
            more = [w.put(f"/r/{i}", -i) for i in range(5)]
            while len(seen) < 25:
                seen.extend(watch.poll())
            assert not watch.resyncs
    assert [e.txid for e in seen] == written + more
    assert [e.value for e in seen[20:]] == [0, -1, -2, -3, -4]
    assert [e.version for e in seen[20:]] == [2] * 5


def test_a_watch_the_log_moved_past_resyncs_from_a_read_and_goes_on(tmp_path):
    env = dict(os.environ, MWCLUSTER_WATCH_EVENTS="10")
    with MasterProcess(tmp_path / "data", env=env) as master, client_of(master) as c:
        start = c.put("/c/keep", "old")
        for i in range(30):
            c.put(f"/c/{i % 3}", i)
        c.delete("/c/keep")
        watch = c.watch("/c/", from_txid=start)
        first = watch.poll()
        assert first.__class__.__name__ == "Resync" and "no longer held" in first.reason
        assert {k: e.value for k, e in first.entries.items()} == {"/c/0": 27, "/c/1": 28,
                                                                  "/c/2": 29}
        txid = c.put("/c/new", 1)
        events = []
        while not events:
            events = watch.poll()
        assert keys_and_types(events) == [(txid, "put", "/c/new")]
        assert c.status()["coordination"]["watch_compacted"] >= 1


def test_a_lease_that_is_not_kept_alive_expires_and_deletes_its_keys(master):
    with client_of(master) as c:
        lease = c.grant_lease(1.0)
        c.put("/svc/a", "me", lease=lease)
        c.put("/svc/b", "me too", lease=lease)
        c.put("/svc/plain", "stays")
        watch = c.watch("/svc/", from_txid=lease.id)
        events = []
        while len([e for e in events if e.type == "delete"]) < 2:
            events.extend(watch.poll())
        assert c.children("/svc") == ["plain"]
        with pytest.raises(NotFound):
            c.keepalive_once(lease)
        with pytest.raises(RemoteMultiFailed, match="lease .* does not exist"):
            c.put("/svc/late", 1, lease=lease)
        assert c.status()["coordination"]["lease_expiries"] == 1
    deletes = [e for e in events if e.type == "delete"]
    assert {e.key for e in deletes} == {"/svc/a", "/svc/b"} and \
        len({e.txid for e in deletes}) == 1, "one record deletes a lease's keys"


def test_keepalives_keep_a_lease_past_its_ttl_and_revoke_ends_it(master):
    with client_of(master) as c:
        lease = c.grant_lease(1.0)
        c.put("/held", 1, lease=lease)
        keeper = c.keepalive(lease, interval_s=0.2)
        # ten renewals 0.2 s apart: twice the TTL passed since the grant
        wait_for(lambda: keeper.sent >= 10, 20, "ten keepalives")
        assert c.get("/held") == 1 and not keeper.lost.is_set()
        keeper.stop()
        assert c.revoke_lease(lease) == 1
        assert c.get("/held") is None


def test_after_a_restart_every_lease_gets_a_whole_ttl_again(tmp_path):
    with MasterProcess(tmp_path / "data") as master:
        endpoint = master.client_endpoint
        with Client(endpoint, timeout_s=5.0) as c:
            lease = c.grant_lease(3.0, durability="sync")
            c.put("/eph", 1, lease=lease, durability="sync")
            master.kill()
            master.restart(extra_args=("--client-endpoint", endpoint))
            assert c.get("/eph") == 1          # not expired by the master change
            assert c.keepalive_once(lease) == 3.0
            watch = c.watch("/eph", from_txid=lease.id)
            deleted = []
            while not deleted:
                deleted = [e for e in watch.poll() if e.type == "delete"]
            assert deleted[0].key == "/eph" and c.get("/eph") is None
