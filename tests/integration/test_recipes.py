"""mwcluster.recipes against a real master, with the holders in processes of their own
(recipe_party.py) so that a holder can be killed -9 or stopped: another takes over once the
dead holder's lease expires, the order of holders is the order they queued in, no two hold
at once (checked on the master's own history: a watch of the lock's keys from txid 1 and
the keys each holder wrote only while holding), a stale holder's fenced write is refused,
and a lock and an election carry over a kill -9 and restart of the master and a promotion of
the standby."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mwcluster import Client
from mwcluster.recipes import Barrier, Election, Lock
from mwcluster.testing import MasterProcess, wait_for

PARTY = str(Path(__file__).with_name("recipe_party.py"))
TTL_S = 2.0


class Party:
    """A recipe_party.py process; lines() are what it printed, read by a thread."""

    def __init__(self, endpoint: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, PARTY, endpoint, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.split())

    def next_line(self, timeout_s: float = 60.0) -> list[str]:
        try:
            return self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"party {self.proc.args[3:]} said nothing within "
                                 f"{timeout_s} s (exit code {self.proc.poll()})") from None

    def say(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout_s: float = 60.0) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def master(tmp_path):
    with MasterProcess(tmp_path / "data") as m:
        yield m


@pytest.fixture
def parties():
    started: list[Party] = []
    yield started
    for party in started:
        party.stop()


def lock_history(client: Client, name: str):
    """[(txid, "put"|"delete", lock key, create_txid)] of the lock's directory from txid 1,
    and {token: {"enter"/"exit"/"late": txid}} of what the holders wrote while holding."""
    watch = client.watch(f"/locks/{name}/", from_txid=1, wait_s=0)
    events = []
    while True:
        batch = watch.poll()
        if not batch:
            break
        events.extend((e.txid, e.type, e.key, e.create_txid) for e in batch)
    marks: dict[int, dict[str, int]] = {}
    for entry in client.range(f"/hist/{name}/").entries:
        _, _, _, token, what = entry.key.split("/")
        marks.setdefault(int(token), {})[what] = entry.stat.create_txid
    return events, marks


def check_one_at_a_time(events, marks, killed: set[int]) -> list[int]:
    """Each holder's hold runs from its enter mark to its exit mark (or, for a killed one,
    to its lock key's deletion); no two overlap, and they come in token order. The tokens
    in the order they held."""
    deleted = {key: txid for txid, kind, key, _ in events if kind == "delete"}
    key_of = {create: key for txid, kind, key, create in events if kind == "put"}
    holds = []
    for token, mark in marks.items():
        end = mark.get("exit")
        if token in killed:
            assert end is None
            end = deleted[key_of[token]]
        assert end is not None, f"holder {token} never exited and was not killed"
        # the key was first in line when it entered: every older key was gone by then
        older = [k for c, k in key_of.items() if c < token]
        assert all(deleted.get(k, 1 << 62) < mark["enter"] for k in older), token
        holds.append((mark["enter"], end, token))
    holds.sort()
    for (_, end, token), (start, _, later) in zip(holds, holds[1:]):
        assert end < start, f"holders {token} and {later} held at once"
        assert token < later, "the tokens did not grow from holder to holder"
    return [token for _, _, token in holds]


def test_a_killed_holder_gives_the_lock_to_the_next_in_line_and_never_two_at_once(
        master, parties):
    endpoint = master.client_endpoint
    victim = Party(endpoint, "lock", "L", str(TTL_S), "hold")
    parties.append(victim)
    assert victim.next_line()[0] == "held"
    with Client(endpoint, timeout_s=5.0) as c:
        others = [Party(endpoint, "lock", "L", str(TTL_S), "cycle", "3") for _ in range(2)]
        parties.extend(others)
        # both wait in line behind the holder (three keys), then the holder dies
        wait_for(lambda: len(c.range("/locks/L/").entries) == 3, 60, "two waiters queued")
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(30)
        for party in others:
            assert [party.next_line()[0] for _ in range(3)] == ["held"] * 3
            assert party.finish() == 0
        assert c.status()["coordination"]["lease_expiries"] >= 1
        events, marks = lock_history(c, "L")
    victim_token = min(marks)
    order = check_one_at_a_time(events, marks, killed={victim_token})
    assert len(order) == 7 and order[0] == victim_token


def test_a_stopped_holder_that_wakes_after_its_ttl_is_refused_by_the_fence(master, parties):
    endpoint = master.client_endpoint
    stale = Party(endpoint, "lock", "F", str(TTL_S), "hold")
    parties.append(stale)
    word, token = stale.next_line()
    assert word == "held"
    with Client(endpoint, timeout_s=5.0) as c:
        os.kill(stale.proc.pid, signal.SIGSTOP)     # a long pause: no keepalives
        try:
            lock = Lock(c, "F", ttl_s=TTL_S)
            assert lock.acquire(timeout=60)
            assert lock.token > int(token)
        finally:
            os.kill(stale.proc.pid, signal.SIGCONT)
        stale.say("write")
        assert stale.next_line()[0] == "refused"
        assert stale.finish() == 0
        assert lock.is_held() and c.get(f"/hist/F/{token}/late") is None
        lock.release()


def test_waiters_get_the_lock_in_the_order_they_queued_and_a_timeout_leaves_the_line(master):
    with Client(master.client_endpoint, timeout_s=5.0) as c:
        holder = Lock(c, "Q", ttl_s=TTL_S)
        assert holder.acquire(timeout=10)
        impatient = Lock(c.clone(), "Q", ttl_s=TTL_S)
        assert impatient.acquire(timeout=0.3) is False
        assert [e.key for e in c.range("/locks/Q/").entries] == [holder.key]
        got: list[int] = []
        waiters = []
        for i in range(3):
            lock = Lock(c.clone(), "Q", ttl_s=TTL_S)
            thread = threading.Thread(target=lambda lk=lock: (lk.acquire(60),
                                                              got.append(lk.token),
                                                              lk.release()))
            thread.start()
            # queued in this order: the next starts once this one's key exists
            wait_for(lambda n=i: len(c.range("/locks/Q/").entries) == n + 2, 30, "queued")
            waiters.append((lock, thread))
        holder.release()
        for lock, thread in waiters:
            thread.join(60)
            lock._me.client.close()
        impatient._me.client.close()
    assert len(got) == 3 and got == sorted(got)


def test_an_election_moves_to_the_next_candidate_when_the_leader_is_killed(master, parties):
    endpoint = master.client_endpoint
    with Client(endpoint, timeout_s=5.0) as c:
        election = Election(c, "E", ttl_s=TTL_S)
        seen = []
        observer = election.observe(timeout=120)
        assert next(observer) is None
        first = Party(endpoint, "election", "E", str(TTL_S), "first")
        parties.append(first)
        assert first.next_line()[0] == "leading"
        second = Party(endpoint, "election", "E", str(TTL_S), "second")
        parties.append(second)
        seen.append(next(observer))
        wait_for(lambda: len(c.range("/elections/E/").entries) == 2, 60, "two candidates")
        assert election.leader().value == "first"
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(30)
        seen.append(next(observer))
        word, token = second.next_line()
        assert word == "leading" and int(token) == seen[1].token
        assert [s.value for s in seen] == ["first", "second"]
        assert seen[0].token < seen[1].token
        assert second.finish() == 0
        assert next(observer) is None          # it resigned: no candidate left


def test_a_barrier_lets_everyone_through_once_all_parties_are_alive_and_there(master):
    with Client(master.client_endpoint, timeout_s=5.0) as c:
        # one that arrives and dies does not count once its lease has ended
        dead = Barrier(c.clone(), "B", 3, ttl_s=TTL_S)
        dead._me.join(True)
        dead._me._keeper.stop()                # no more keepalives: it expires
        wait_for(lambda: len(c.range("/barriers/B/").entries) == 0, 30,
                 "the silent party's key to expire")
        dead._me.client.close()
        results: dict[int, int] = {}
        threads = []
        for i in range(3):
            barrier = Barrier(c.clone(), "B", 3, ttl_s=TTL_S)
            thread = threading.Thread(target=lambda b=barrier, n=i: results.__setitem__(
                n, b.wait(timeout=60)))
            thread.start()
            threads.append((barrier, thread))
            if i == 1:          # two there and waiting: nobody passes yet
                wait_for(lambda: len(c.range("/barriers/B/").entries) == 2, 30, "two in")
                wait_for(lambda: c.status()["coordination"]["watches_waiting"] >= 2, 30,
                         "both waiting")
                assert c.get("/barriers/B/ready") is None and not results
        for barrier, thread in threads:
            thread.join(60)
            barrier.leave()
            barrier._me.client.close()
    assert sorted(results.values()) == [0, 1, 2]


def test_a_held_lock_and_its_waiter_carry_over_a_kill_9_and_restart_of_the_master(tmp_path):
    with MasterProcess(tmp_path / "data", durability="sync") as master:
        endpoint = master.client_endpoint
        # the holder's keepalive must reach the restarted master within the TTL: a request
        # to the dead one is resent after a client timeout
        with Client(endpoint, timeout_s=1.0) as c, Client(endpoint, timeout_s=1.0) as w:
            holder = Lock(c, "R", ttl_s=4.0)
            assert holder.acquire(timeout=30)
            waiter = Lock(w, "R", ttl_s=4.0)
            got = []
            thread = threading.Thread(target=lambda: got.append(waiter.acquire(timeout=120)))
            thread.start()
            wait_for(lambda: len(c.range("/locks/R/").entries) == 2, 30, "the waiter queued")
            master.kill()
            master.restart(extra_args=("--client-endpoint", endpoint))
            # the holder's lease has a whole TTL from the restart, and its keepalives follow:
            # it still holds once several TTLs passed, and its fenced write is taken
            wait_for(lambda: c.status()["coordination"]["lease_keepalives"] >= 6, 60,
                     "keepalives to the restarted master (several TTLs' worth)")
            assert holder.is_held() and not got
            holder.multi([c.op_put("/after-restart", holder.token)])
            assert c.status()["coordination"]["lease_expiries"] == 0
            holder.release()
            thread.join(60)
            assert got == [True] and waiter.token > c.get("/after-restart")
            waiter.release()


def test_an_election_carries_over_a_promotion_of_the_standby(tmp_path):
    from mwcluster.testing.failover import StandbyProcess

    with MasterProcess(tmp_path / "m", durability="sync") as master, \
            StandbyProcess(tmp_path / "c", master) as standby:
        endpoints = [master.client_endpoint, standby.promote_client_endpoint]
        # a keepalive must reach the new master within the TTL: a request to the killed
        # master takes a client timeout before the next endpoint is tried
        with Client(endpoints, timeout_s=1.0) as c, Client(endpoints, timeout_s=1.0) as o:
            leader = Election(c, "P", ttl_s=4.0)
            assert leader.campaign("old-master-era", timeout=30)
            observer = Election(o, "P").observe(timeout=120)
            assert next(observer).value == "old-master-era"
            txid = c.status()["txid"]
            wait_for(lambda: standby.status()["replica_txid"] >= txid, 30,
                     "the standby to have the campaign")
            standby.promote()
            master.kill()
            # the leader keeps leading on the new master (a whole TTL, then keepalives)
            wait_for(lambda: c.status()["coordination"]["lease_keepalives"] >= 6, 60,
                     "keepalives to the promoted master")
            assert leader.is_leader() and Election(c, "P").leader().token == leader.token
            leader.resign()
            assert next(observer) is None             # seen through the promoted master
        assert standby.terminate() == 0


def test_a_waiters_timeout_ends_while_no_master_answers(tmp_path):
    with MasterProcess(tmp_path / "data") as master:
        endpoint = master.client_endpoint
        with Client(endpoint, timeout_s=1.0) as c, Client(endpoint, timeout_s=1.0) as w:
            holder = Lock(c, "D", ttl_s=TTL_S)
            assert holder.acquire(timeout=30)
            waiter = Lock(w, "D", ttl_s=TTL_S)
            result = []
            thread = threading.Thread(target=lambda: result.append(waiter.acquire(timeout=3)))
            thread.start()
            # queued and watching the holder's key (its put answered), then the master dies
            wait_for(lambda: c.status()["coordination"]["watches_waiting"] == 1, 30,
                     "the waiter to watch the holder's key")
            master.kill()
            thread.join(60)
            assert not thread.is_alive() and result == [False]
