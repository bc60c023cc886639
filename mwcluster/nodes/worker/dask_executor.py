"""The `dask` executor: a worker's slots run their handlers on an existing Dask cluster
(`--executor dask --dask-scheduler tcp://HOST:PORT`). The master stays the durable record: the
Dask scheduler only holds the attempts running now, so losing it loses nothing the master
knows; the attempts it was running fail and the master retries them by their job's rules.

    handler thread (one per slot)     Client (its loop thread)      a Dask worker's thread
    run(start): submit _on_dask  ──▶  scheduler  ───────────────▶   import the handler
      (pure=False, one key per                                       modules (once per
      attempt)                                                       process), look the
    box.get(POLL_S) ─▶ on_progress ◀─ event on the runner's topic ◀─ handler up in REGISTRY,
    the future done: (ok, outcome) ◀──────────────────────────────── call it (run_handler)

- Progress: Dask events on this runner's topic, at most one per PROGRESS_EVERY_S per attempt,
  the newest sent when the handler returns (ahead of its result, on the same streams).
  report() returns False once the Dask task is unwanted (cancelled, its Dask worker closing):
  the attempt then fails whatever the handler returns.
- An attempt no longer this worker's has its future cancelled and run() returns at once; a
  handler that never calls report() keeps its Dask thread until it returns.
- A keeper thread watches the connection. A subscription belongs to one connection: after
  Dask's own reconnect the keeper subscribes again; a Client that lost its scheduler is
  closed and a fresh one made once the scheduler's port answers (a Client whose connection
  fails leaves its loop thread behind: hence the probe). Attempts wait up to
  WAIT_FOR_SCHEDULER_S for a connection.
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import time
import uuid
from typing import Any, Callable

from mwcluster.errors import ConfigError
from mwcluster.nodes.worker.exchange import MAX_ERROR_CHARS, check_counters, run_handler
from mwcluster.nodes.worker.executor import POLL_S, PROGRESS_EVERY_S
from mwcluster.worker import REGISTRY, Task, load_handler_modules

try:
    import distributed
    from distributed.comm import parse_address, parse_host_port
except ImportError as exc:
    raise ConfigError(f"the dask executor needs dask.distributed, which cannot be imported "
                      f"({exc}): pip install 'mwcluster[dask]'") from None

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0      # a Client's connection (Dask's own reconnection window too)
WAIT_FOR_SCHEDULER_S = 30.0   # an attempt waits this long for a lost scheduler to be back
RESULT_TIMEOUT_S = 30.0       # fetching a finished task's result from its Dask worker
KEEP_EVERY_S = 0.5            # the keeper looks at the connection and the cluster's size
PROBE_TIMEOUT_S = 1.0         # a TCP connect to the scheduler's port before a fresh Client
CLOSE_TIMEOUT_S = 5.0
NOT_OURS = "the attempt is no longer this worker's (cancelled, timed out, or the worker is "

# --- the Dask side: runs in a Dask worker's thread ---------------------------------------------

_loaded: set[str] = set()
_load_lock = threading.Lock()


def _wanted(worker: Any, key: str) -> bool:
    """Whether the Dask worker still wants this task run (not cancelled, not closing)."""
    try:
        ts = worker.state.tasks.get(key)
        return (worker.status.name in ("running", "paused") and ts is not None
                and ts.state in ("executing", "long-running"))
    except AttributeError:     # internals of another distributed version: assume so
        return True


def _on_dask(modules: list[str], topic: str, key: str, name: str, task_input: Any,
             params: dict, job_id: str, index: int, attempt: int) -> tuple[bool, Any]:
    """One attempt on a Dask worker: (ok, result or error), like the other executors."""
    with _load_lock:
        todo = [m for m in modules if m not in _loaded]
        try:
            load_handler_modules(todo)
        except ConfigError as exc:
            return False, f"on the Dask worker: {exc}"[:MAX_ERROR_CHARS]
        _loaded.update(todo)
    fn = REGISTRY.get(name)
    if fn is None:
        return False, (f"no handler named {name!r} on the Dask worker (handler modules "
                       f"{', '.join(modules) or 'none'}; it has {', '.join(REGISTRY.names())})")
    worker = distributed.get_worker()
    last: dict[str, Any] = {"sent_s": 0.0, "unsent": None, "stopped": False}

    def report(progress: float, **counters: Any) -> bool:
        check_counters(counters)
        if not _wanted(worker, key):
            last["stopped"] = True
            return False
        msg = {"key": key, "progress": min(1.0, max(0.0, float(progress))),
               "counters": counters}
        now = time.monotonic()
        if now - last["sent_s"] >= PROGRESS_EVERY_S or msg["progress"] >= 1:
            last["sent_s"], last["unsent"] = now, None
            worker.log_event(topic, msg)
        else:
            last["unsent"] = msg
        return True

    ok, outcome = run_handler(fn, Task(task_input, params, job_id, index, attempt), report)
    if last["stopped"]:
        return False, ("the Dask cluster stopped the task before it finished (its Dask task "
                       "was cancelled, or its Dask worker is closing)")
    if last["unsent"] is not None:
        worker.log_event(topic, last["unsent"])
    return ok, outcome


# --- the worker side -----------------------------------------------------------------------------

def _quietly(call: Callable, **kwargs: Any) -> None:
    """A cancel or a close: when it fails, the scheduler went and what it held with it."""
    try:
        call(**kwargs)
    except Exception as exc:
        log.debug("%s: %s", call, exc)


class DaskRunner:
    """The worker's connection to a Dask cluster; run() is called from every handler thread."""

    def __init__(self, scheduler: str, handler_modules: list[str]) -> None:
        self.scheduler = scheduler
        self._modules = list(handler_modules)
        self._token = uuid.uuid4().hex[:12]
        self._topic = f"mwcluster-progress-{self._token}"
        self._numbers = itertools.count(1)
        self._boxes: dict[str, queue.SimpleQueue] = {}    # key -> a running attempt's reports
        self._conn: tuple[Any, Any] = (None, None)        # (Client, the comm it subscribed on)
        self._size = (0, 0)                               # Dask workers, their threads
        self._closing = threading.Event()
        try:
            self._adopt(self._client())
        except Exception as exc:
            raise ConfigError(f"cannot connect to the Dask scheduler at {scheduler} within "
                              f"{CONNECT_TIMEOUT_S:g} s ({exc!r}): check that it runs, that "
                              "this host reaches its address and port, and that its dask "
                              "version is this worker's") from None
        self._keeper = threading.Thread(target=self._keep, name="dask-keeper", daemon=True)
        self._keeper.start()

    def _client(self):
        return distributed.Client(self.scheduler, timeout=CONNECT_TIMEOUT_S,
                                  set_as_default=False, asynchronous=False)

    def _adopt(self, client: Any) -> None:
        try:
            client.subscribe_topic(self._topic, self._on_event)
            self._refresh_size(client)
        except BaseException:
            _quietly(client.close, timeout=CLOSE_TIMEOUT_S)
            raise
        self._conn = (client, client.scheduler_comm)

    def _on_event(self, event: tuple) -> None:
        """On the Client's loop thread: hand a progress report to its attempt's run()."""
        msg = event[1]
        box = self._boxes.get(msg.get("key")) if isinstance(msg, dict) else None
        if box is not None:
            box.put((msg["progress"], msg["counters"]))

    def _connected(self) -> Any:
        """The Client, when it is connected and subscribed on its current connection."""
        client, comm = self._conn
        ok = client is not None and client.status == "running" and client.scheduler_comm is comm
        return client if ok else None

    def _refresh_size(self, client: Any) -> None:
        info = client.scheduler_info(n_workers=0)      # totals only: one small round trip
        self._size = (int(info.get("n_workers", 0)), int(info.get("total_threads", 0)))

    def _keep(self) -> None:
        while not self._closing.wait(KEEP_EVERY_S):
            try:
                self._check()
            except Exception as exc:          # the keeper goes on whatever one look raised
                log.warning("the Dask scheduler at %s: %r", self.scheduler, exc)

    def _check(self) -> None:
        client, comm = self._conn
        if client is not None and client.status == "running":
            if client.scheduler_comm is comm:
                self._refresh_size(client)
            else:                                    # Dask reconnected by itself
                self._adopt(client)
                log.info("the Dask scheduler at %s is connected again", self.scheduler)
            return
        if client is not None:      # lost: closed here, so that its loop thread ends too
            log.warning("the Dask scheduler at %s is lost; reconnecting", self.scheduler)
            self._conn = (None, None)
            _quietly(client.close, timeout=CLOSE_TIMEOUT_S)
        if not self._probe():
            return
        self._adopt(self._client())      # close() joins the keeper, then closes it
        log.info("the Dask scheduler at %s is connected again (a new Dask client)",
                 self.scheduler)

    def _probe(self) -> bool:
        """Whether the scheduler's TCP port accepts a connection (other schemes: assume so)."""
        scheme, location = parse_address(self.scheduler)
        try:
            if scheme == "tcp":
                socket.create_connection(parse_host_port(location), PROBE_TIMEOUT_S).close()
        except OSError:
            return False
        return True

    def run(self, start, current: Callable[[], bool],
            on_progress: Callable[[float, dict], Any]) -> tuple[bool, Any]:
        """Run one attempt (a worker_machine.Start) on the Dask cluster: (ok, result or why)."""
        deadline = time.monotonic() + WAIT_FOR_SCHEDULER_S
        while (client := self._connected()) is None:
            if not current():
                return False, NOT_OURS + "stopping); the Dask scheduler was not connected"
            if time.monotonic() >= deadline or self._closing.is_set():
                return False, (f"the Dask cluster at {self.scheduler} is unreachable (its "
                               f"scheduler was not connected for {WAIT_FOR_SCHEDULER_S:g} s)")
            self._closing.wait(POLL_S)
        key = (f"mwcluster-{start.job_id}-{start.index}-{start.attempt}-{self._token}"
               f"{next(self._numbers)}")
        box: queue.SimpleQueue = queue.SimpleQueue()
        self._boxes[key] = box
        future = None
        try:
            future = client.submit(_on_dask, self._modules, self._topic, key, start.handler,
                                   start.input, {} if start.params is None else start.params,
                                   start.job_id, start.index, start.attempt, key=key,
                                   pure=False)
            future.add_done_callback(lambda _future: box.put(None))    # wakes _follow
            return self._follow(future, box, current, on_progress)
        except Exception as exc:       # a comm error, a closed client: the cluster lost it
            return self._lost(f"{type(exc).__name__}: {exc}")
        finally:
            self._boxes.pop(key, None)
            if future is not None:
                future.release()       # the scheduler forgets the key

    def _follow(self, future: Any, box: queue.SimpleQueue, current: Callable[[], bool],
                on_progress: Callable[[float, dict], Any]) -> tuple[bool, Any]:
        while True:
            if not current():
                threading.Thread(target=_quietly, args=(future.cancel,), daemon=True,
                                 kwargs={"reason": "no longer this worker's"}).start()
                return False, NOT_OURS + "stopping): its Dask task was cancelled"
            try:
                item = box.get(timeout=POLL_S)
            except queue.Empty:
                item = None
            if item is not None:
                on_progress(*item)
                continue
            status = future.status
            if status == "pending":
                continue
            if status == "finished":
                try:
                    ok, outcome = future.result(timeout=RESULT_TIMEOUT_S)
                except Exception as exc:
                    return self._lost(f"its result could not be fetched: "
                                      f"{type(exc).__name__}: {exc}")
                return bool(ok), outcome       # its reports came first: all relayed
            if status == "error":
                return False, self._error_message(future)
            return self._lost(f"its Dask future is {status}: the scheduler connection was "
                              "lost, or the scheduler restarted")

    def _error_message(self, future: Any) -> str:
        """Not the handler's error (run_handler caught that): KilledWorker, an import..."""
        exc = future.exception(timeout=RESULT_TIMEOUT_S)
        hint = (" (do its Dask workers have mwcluster and the handler modules installed?)"
                if isinstance(exc, ImportError) else "")
        return (f"the Dask cluster at {self.scheduler} failed the task: "
                f"{type(exc).__name__}: {exc}{hint}")[:MAX_ERROR_CHARS]

    def _lost(self, why: str) -> tuple[bool, str]:
        return False, (f"the Dask cluster at {self.scheduler} lost the task ({why}); the "
                       "worker reconnects, and the master retries the task by its job's "
                       "rules")[:MAX_ERROR_CHARS]

    def status(self) -> dict:
        """For the worker's status map: what the keeper last saw; never blocks."""
        connected = self._connected() is not None
        workers, threads = self._size if connected else (0, 0)
        return {"scheduler": self.scheduler, "connected": connected,
                "dask_workers": workers, "dask_threads": threads}

    def close(self) -> None:
        """Stop the keeper and close the Client (attempts still running fail)."""
        self._closing.set()
        self._keeper.join(CONNECT_TIMEOUT_S + CLOSE_TIMEOUT_S)
        client, self._conn = self._conn[0], (None, None)
        if client is not None:
            _quietly(client.close, timeout=CLOSE_TIMEOUT_S)
