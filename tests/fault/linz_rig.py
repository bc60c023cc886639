"""A recorded history of concurrent clients against a master killed with SIGKILL in a loop,
for the linearizability checker (mwcluster/testing/linearizability.py).

Client threads, each with its own Client, run a seeded mix of get / put / compare-and-set /
multi on a few keys and record every call: invocation and completion times on one monotonic
clock, the result, or an unknown outcome when the call got no answer (the Client gave up
after its retries, or was refused as unavailable). A read with no answer is left out (it
changed nothing); a mutation with no answer may or may not have taken effect. Meanwhile the
loop waits until the clients have completed a seeded number of calls, kills the master with
SIGKILL and restarts it on the same data directory and endpoints. Half of the runs (seeded)
instead carry the crash point `flush.torn:N` (storage/crashpoints.py): the master kills
itself in the middle of its N-th flush, so the records of that flush, applied in memory and
maybe read by a client with consistency "fast", are lost. In `replicated` mode a checkpoint
node follows the master throughout and every call asks for replicated durability.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mwcluster import Client, errors
from mwcluster.client import op_check, op_put
from mwcluster.testing import MasterProcess, wait_for
from mwcluster.testing.checkpoint import CheckpointProcess
from mwcluster.storage.crashpoints import CRASH_ENV
from mwcluster.testing.linearizability import Event

KEYS = ("/linz/k0", "/linz/k1", "/linz/k2")
# refusals that are answers (the checker's codes); anything else is an unknown outcome
REFUSALS = {errors.BadVersion: "bad_version", errors.NoNode: "no_node",
            errors.NodeExists: "node_exists", errors.MultiFailed: "multi_failed"}


@dataclass
class History:
    events: list[Event] = field(default_factory=list)
    completed: int = 0
    unknown: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)
            if event.ret is None:
                self.unknown += 1
            else:
                self.completed += 1


def _refusal(exc: BaseException) -> str | None:
    for cls, code in REFUSALS.items():
        if isinstance(exc, cls):
            return code
    return None


class LinzClient(threading.Thread):
    def __init__(self, index: int, endpoint: str, history: History, stop: threading.Event,
                 ready: threading.Event, seed: int, durability: str | None,
                 consistency: str | None) -> None:
        super().__init__(name=f"linz-client-{index}", daemon=True)
        self.index = index
        self.endpoint = endpoint
        self.history = history
        self.stop_flag = stop
        self.ready = ready          # set while the master serves (and, replicated, is followed)
        self.rng = random.Random(seed * 1000 + index)
        self.durability = durability
        self.consistency = consistency
        self.versions = dict.fromkeys(KEYS, 0)   # the last version this client saw per key
        self.seq = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with Client(self.endpoint, timeout_s=1.0, retries=6, client_id=f"linz-{self.index}",
                        durability=self.durability, consistency=self.consistency) as client:
                while not self.stop_flag.is_set():
                    self.one(client)
        except BaseException as exc:      # reported by the test, never a silent thread death
            self.failure = exc

    def _value(self) -> str:
        self.seq += 1
        return f"c{self.index}-{self.seq}"

    def one(self, client: Client) -> None:
        rng = self.rng
        key = rng.choice(KEYS)
        roll = rng.random()
        if roll < 0.4:
            op = ("get", key)
            call = lambda: client.get_with_stat(key)          # noqa: E731
        elif roll < 0.6:
            value = self._value()
            op = ("put", key, value, None)
            call = lambda: client.put(key, value)              # noqa: E731
        elif roll < 0.9:
            value = self._value()
            expected = self.versions[key]
            op = ("put", key, value, expected)
            call = lambda: client.put(key, value, expected)    # noqa: E731
        else:
            other = rng.choice([k for k in KEYS if k != key])
            value = self._value()
            expected = self.versions[key]
            if expected:
                subs = (("check", key, expected), ("put", other, value, None))
                ops = [op_check(key, expected), op_put(other, value)]
            else:
                subs = (("put", key, value, 0), ("put", other, value, None))
                ops = [op_put(key, value, 0), op_put(other, value)]
            op = ("multi", subs)
            call = lambda: client.multi(ops)                   # noqa: E731
        started = time.monotonic()
        try:
            got = call()
        except errors.MwclusterError as exc:
            code = _refusal(exc)
            ended = time.monotonic()
            if code is not None:
                self.history.add(Event(self.index, started, ended, op, ("error", code)))
            elif op[0] != "get":
                self.history.add(Event(self.index, started, None, op, None))
            if code is None:
                # no answer: wait for the master to serve again rather than pile up unknown
                # outcomes while it restarts (each makes the checker's search wider)
                self.ready.wait(60)
            return
        ended = time.monotonic()
        if op[0] == "get":
            if got is None:
                result = ("none",)
                self.versions[key] = 0
            else:
                value, stat = got
                result = ("value", value, stat.version, stat.modify_txid)
                self.versions[key] = stat.version
        elif op[0] == "multi":
            result = ("ok", got[0])
        else:
            result = ("ok", got)
        self.history.add(Event(self.index, started, ended, op, result))


class KillLoop:
    """A master (sync durability; with `replicated`, a checkpoint node following it) on ipc
    endpoints that survive restarts, clients recording one History, and a kill -9 loop."""

    def __init__(self, tmp_path: Path, mode: str, seed: int, *, clients: int = 4,
                 consistency: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.mode = mode
        self.rng = random.Random(seed)
        self.seed = seed
        self.endpoints = ("--client-endpoint", f"ipc://{tmp_path}/c.sock",
                          "--pub-endpoint", f"ipc://{tmp_path}/p.sock")
        self.master = MasterProcess(tmp_path / "master", durability="sync",
                                    extra_args=self.endpoints)
        self.node: CheckpointProcess | None = None
        self.history = History()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.n_clients = clients
        self.consistency = consistency
        self.clients: list[LinzClient] = []
        self.kills = 0
        self.torn_kills = 0              # of which the master died in a torn flush
        self.torn_run = False

    def __enter__(self) -> KillLoop:
        try:
            self.master.start()
            if self.mode == "replicated":
                self.node = CheckpointProcess(self.tmp_path / "node", self.master)
                self.node.start()
            self._wait_served()
            durability = "replicated" if self.mode == "replicated" else None
            self.clients = [LinzClient(i, self.master.client_endpoint, self.history,
                                       self.stop, self.ready, self.seed, durability,
                                       self.consistency)
                            for i in range(self.n_clients)]
            for client in self.clients:
                client.start()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_served(self) -> None:
        """Wait until the master serves (in replicated mode: and knows its standby follows);
        then let clients that got no answer go on."""
        if self.mode == "replicated":
            wait_for(lambda: self.master_status().get("standby_follows"),
                     what="the checkpoint node says hello", timeout_s=30)
        self.ready.set()

    def master_status(self) -> dict:
        with Client(self.master.client_endpoint, timeout_s=2.0, retries=0) as client:
            return client.status()

    def cycle(self) -> None:
        """One run of the master: until it tore a flush and died (a run started with the
        crash point), or until the clients completed a seeded number of calls and it was
        killed; then restart it, with or without a crash point for the next run."""
        if self.torn_run:
            wait_for(lambda: self.master.returncode is not None or self._client_failed(),
                     what="the master dies in a torn flush", timeout_s=60)
            self.torn_kills += 1
        else:
            target = self.history.completed + self.rng.randint(30, 120)
            wait_for(lambda: self.history.completed >= target or self._client_failed(),
                     what=f"{target} calls completed", timeout_s=60)
        self.ready.clear()
        self.master.kill()
        self.kills += 1
        self.torn_run = self.rng.random() < 0.5
        env = dict(os.environ)
        if self.torn_run:
            env[CRASH_ENV] = f"flush.torn:{self.rng.randint(20, 120)}"
        self.master.restart(env=env)
        self._wait_served()

    def _client_failed(self) -> bool:
        return any(c.failure is not None for c in self.clients)

    def finish(self) -> None:
        """Stop the clients once they completed a last stretch of calls; raise a client's
        own failure if one had one."""
        target = self.history.completed + 30
        wait_for(lambda: self.history.completed >= target or self._client_failed(),
                 what="the last calls completed", timeout_s=60)
        self.stop.set()
        for client in self.clients:
            client.join(timeout=60)
            if client.is_alive():
                raise AssertionError(f"{client.name} did not stop")
            if client.failure is not None:
                raise client.failure

    def close(self) -> None:
        self.stop.set()
        self.ready.set()
        for client in self.clients:
            client.join(timeout=30)
        if self.node is not None:
            self.node.stop()
        self.master.stop()

    def __exit__(self, *exc) -> None:
        self.close()
