"""The worker process: one owner thread with the connection to the master, handler threads.

    owner thread (run())                              handler threads (`slots` of them)
    ─────────────────────                              ─────────────────────────────────
    Client (DEALER) ◀──▶ master                        take a Start from `work`
    WorkerMachine: events in, instructions out          call the handler(task, report)
    executes instructions: register, heartbeat,  ◀──    report(): newest values on the handle,
      request tasks, progress, finish, leave      events   one "progress" event if none waits
    Start ──▶ `work` queue ──────────────────────▶      return / raise: one "done" event

Only the owner thread touches the Client and the machine; handler threads only read their
task, write their handle (under its lock) and put events on the `events` queue. The owner
waits on that queue until the machine's next deadline (heartbeat, a coalesced report, the
next request), so it wakes for work and never polls.

When a request goes unanswered after the Client's own retries (the master is down or
restarting), the machine asks to register again; registration is retried with one tenacity
policy (exponential backoff with jitter, bounded at 5 s between tries) until it succeeds or
the worker is asked to stop. Handler threads keep running meanwhile, and their reports wait.

Handler threads are daemon threads, so that a stop that abandons a handler still running is
not held up by it: at the stop deadline the worker leaves (WORKER_LEAVE: the master requeues
the task) and the process exits.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from typing import Any, Callable

import tenacity

from mwcluster.core import worker_machine as wm
from mwcluster.errors import (BadRequest, ConfigError, MwclusterError, RequestTimeout,
                              ShuttingDown, UnknownOp)
from mwcluster.nodes.worker import exchange
from mwcluster.nodes.worker.observe import CountingClient, ObservedWorker
from mwcluster.storage.fsutil import write_file_atomic
from mwcluster.worker import Registry, Task
from mwcluster.config import WorkerConfig

log = logging.getLogger(__name__)

# Registration after the master was unreachable: retried until it works or the worker stops.
RECONNECT_POLICY = tenacity.Retrying(
    wait=tenacity.wait_exponential(multiplier=0.1, max=5.0) + tenacity.wait_random(0, 0.2),
    retry=tenacity.retry_if_exception_type((RequestTimeout, ShuttingDown)),
    reraise=True,
)

_STOP = ("stop",)


class TaskHandle:
    """What a handler thread shares with the owner thread about one attempt."""

    __slots__ = ("key", "attempt", "lock", "latest", "notified", "current")

    def __init__(self, key: tuple[str, int], attempt: int) -> None:
        self.key = key
        self.attempt = attempt
        self.lock = threading.Lock()
        self.latest: tuple[float, dict] | None = None
        self.notified = False
        self.current = True


def worker_credentials(cfg: WorkerConfig):
    """The worker's CURVE credentials from its config (None: plain); ConfigError when only
    half of them is given."""
    from mwcluster.security.curve import Credentials

    if not cfg.key_file and not cfg.server_key:
        return None
    if not cfg.key_file or not cfg.server_key:
        raise ConfigError("a worker with CURVE needs both key_file (its own secret "
                           "key) and server_key (the master's public key)")
    return Credentials.load(cfg.key_file, cfg.server_key, env={})


class WorkerNode:
    def __init__(self, config: WorkerConfig, registry: Registry, *,
                 client_factory: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config.resolved()
        self.registry = registry
        # CURVE (docs/security.md): its own key and the master's; ConfigError at once
        self.credentials = worker_credentials(self.config)
        self._client_factory = client_factory or self._real_client
        self._clock = clock
        cfg = self.config
        # The master's heartbeat interval unless this worker was configured with its own.
        heartbeat_ms = None if cfg.sources.get("heartbeat_ms") == "default" else cfg.heartbeat_ms
        self.machine = wm.WorkerMachine(cfg.worker_id, cfg.slots, heartbeat_ms=heartbeat_ms,
                                        progress_interval_ms=cfg.progress_interval_ms,
                                        idle_poll_ms=cfg.idle_poll_ms,
                                        task_timeout_ms=math.ceil(cfg.task_timeout_s * 1000))
        if cfg.executor == "dask" and not cfg.dask_scheduler:
            raise ConfigError("executor = dask needs dask_scheduler, the Dask scheduler's "
                              "address (--dask-scheduler tcp://HOST:PORT)")
        self.dask = None             # dask_executor.DaskRunner, made at run()
        self._process_slots = False  # a handler thread has made its ProcessSlot
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.work: queue.SimpleQueue = queue.SimpleQueue()
        self.handles: dict[tuple[str, int], TaskHandle] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.busy = 0                # slots running a handler now (status)
        self._client: Any = None
        self._ready_written = False
        self.observed = ObservedWorker(self, self._now_ms)   # status endpoint and metrics
        self._advertise = True       # send the status endpoint at register (the master takes it)
        self.exit_code: int | None = None

    def _real_client(self):
        from mwcluster.client import Client

        # several endpoints (the master, the standby's promote endpoint): the Client follows
        # the highest epoch and moves on from a fenced or replaced master (docs/failover.md)
        endpoints = [e.strip() for e in self.config.master.split(",")]
        standby = [e.strip() for e in self.config.standby_status.split(",") if e.strip()]
        return Client(endpoints, timeout_s=self.config.request_timeout_s, retries=2,
                      standby_status=standby, credentials=self.credentials,
                      client_id=f"worker:{self.config.worker_id}"[:64])

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- lifecycle -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Safe from a signal handler or any thread."""
        self._stop.set()
        self.events.put(_STOP)

    def run(self) -> int:
        """The owner loop; returns the exit code once the worker has left (or given up)."""
        cfg = self.config
        log.info("worker %s: %d slots, handlers %s, master %s", cfg.worker_id, cfg.slots,
                 ", ".join(self.registry.names()) or "(none)", cfg.master)
        self.observed.start()        # a bind failure ends the start here, nothing running
        if cfg.executor == "dask":   # a scheduler that cannot be reached ends the start too
            from mwcluster.nodes.worker.dask_executor import DaskRunner

            try:
                self.dask = DaskRunner(cfg.dask_scheduler, cfg.handler_modules())
            except BaseException:
                self.observed.stop()
                raise
        for n in range(cfg.slots):
            thread = threading.Thread(target=self._handler_loop, name=f"handler-{n}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        observed = self.observed
        try:
            self._client = CountingClient(self._client_factory(), self._now_ms)
            pending = list(self.machine.start(self._now_ms()))
            observed.publish()
            while self.exit_code is None:
                self._execute(pending)
                observed.publish()
                if self.exit_code is not None:
                    break
                pending = self._wait_events()
                pending += self.machine.tick(self._now_ms())
        finally:
            for _ in self._threads:
                self.work.put(None)
            self._join_handlers()
            if self._client is not None:
                self._client.close()
            if self.dask is not None:
                self.dask.close()
            observed.stop()
        return self.exit_code

    def _join_handlers(self) -> None:
        """Give the handler threads a bounded time to end: a slot told to stop its process
        sends SIGTERM, then SIGKILL after executor.GRACE_S; a thread stuck in a handler that
        does not look at report() is left behind (a daemon: it does not hold the exit)."""
        from mwcluster.nodes.worker.executor import GRACE_S

        deadline = time.monotonic() + (GRACE_S + 1.0 if self._process_slots else 1.0)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _wait_events(self) -> list:
        machine = self.machine
        wake = machine.next_wakeup_ms()
        timeout = 0.5 if wake is None else max(0.0, (wake - self._now_ms()) / 1000)
        out: list = []
        try:
            event = self.events.get(timeout=min(timeout, 0.5))
        except queue.Empty:
            return out
        while True:
            out += self._on_event(event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return out

    def _on_event(self, event: tuple) -> list:
        machine = self.machine
        now = self._now_ms()
        kind = event[0]
        if kind == "progress":
            handle: TaskHandle = event[1]
            with handle.lock:
                latest, handle.notified = handle.latest, False
            if latest is None:
                return []
            return machine.on_progress(handle.key[0], handle.key[1], handle.attempt,
                                       latest[0], latest[1], now)
        if kind == "done":
            _, handle, ok, outcome = event
            if self.handles.get(handle.key) is handle:
                del self.handles[handle.key]
            return machine.on_done(handle.key[0], handle.key[1], handle.attempt, ok, outcome,
                                   now)
        if kind == "stop":
            return machine.request_stop(now, int(self.config.stop_timeout_s * 1000))
        raise AssertionError(f"unknown event {event!r}")

    # --- executing instructions ------------------------------------------------------------------

    def _execute(self, instructions: list) -> None:
        todo = list(instructions)
        machine = self.machine
        while todo and self.exit_code is None:
            instruction = todo.pop(0)
            if not machine.still_wanted(instruction):
                continue
            more = self._one(instruction)
            if more:
                todo[0:0] = more

    def _one(self, ins) -> list:
        machine, client, wid = self.machine, self._client, self.config.worker_id
        kind = type(ins)
        if kind is wm.Note:
            log.log(ins.level, "%s", ins.message)
            return []
        if kind is wm.Start:
            handle = TaskHandle((ins.job_id, ins.index), ins.attempt)
            self.handles[handle.key] = handle
            self.work.put((handle, ins))
            return []
        if kind is wm.Drop:
            handle = self.handles.get((ins.job_id, ins.index))
            if handle is not None and handle.attempt == ins.attempt:
                with handle.lock:
                    handle.current = False
            return []
        if kind is wm.Exit:
            self.exit_code = ins.code
            return []
        if kind is wm.Register:
            return self._register(ins)
        name, args, kwargs = exchange.call_of(ins, wid)
        try:
            result, error = getattr(client, name)(*args, **kwargs), None
        except MwclusterError as exc:
            result, error = None, exc
        return exchange.outcome(machine, ins, result, error, self._now_ms())

    def _register(self, ins: wm.Register) -> list:
        cfg = self.config
        address = f"{os.uname().nodename}:{os.getpid()}"
        policy = RECONNECT_POLICY.copy(
            stop=lambda _state: self._stop.is_set(),
            sleep=lambda seconds: self._stop.wait(seconds),
            before_sleep=lambda state: log.warning(
                "worker %s: the master at %s does not answer (%s); retrying", cfg.worker_id,
                cfg.master, state.outcome.exception()))
        self.observed.publish()      # the status shows "registering" while this lasts
        try:
            reply = policy(self._register_call, cfg.worker_id, ins.slots, address)
        except (RequestTimeout, ShuttingDown):
            # Asked to stop while the master was unreachable.
            return self.machine.on_register_abandoned(self._now_ms())
        except MwclusterError as exc:
            return exchange.registered(self.machine, None, exc, self._now_ms())
        out = exchange.registered(self.machine, reply, None, self._now_ms())
        self._write_ready()
        return out

    def _register_call(self, worker_id: str, slots: int, address: str) -> dict:
        """WORKER_REGISTER, naming this worker's status endpoint when it has one, so that the
        master's STATUS lists it. A master older than that field refuses the fourth arg
        (bad_request): register without it from then on."""
        endpoint = self.observed.status_endpoint if self._advertise else None
        if not endpoint:
            return self._client.register_worker(worker_id, slots, address)
        try:
            return self._client.register_worker(worker_id, slots, address,
                                                status_endpoint=endpoint)
        except BadRequest as exc:
            if isinstance(exc, UnknownOp):
                raise
            log.warning("worker %s: the master does not take a status endpoint at register "
                        "(%s); registering without it", worker_id, exc)
            self._advertise = False
            return self._client.register_worker(worker_id, slots, address)

    def _write_ready(self) -> None:
        if self._ready_written or not self.config.ready_file:
            return
        write_file_atomic(self.config.ready_file, json.dumps(
            {"worker_id": self.config.worker_id, "pid": os.getpid(), "slots": self.config.slots,
             "master": self.config.master, "status_endpoint": self.observed.status_endpoint,
             "metrics_port": self.observed.metrics_port}).encode(), durable=False)
        self._ready_written = True

    # --- handler threads -------------------------------------------------------------------------

    def _handler_loop(self) -> None:
        slot: list = []              # this slot's executor.ProcessSlot, made when first needed
        try:
            if self.config.executor == "process":
                self._process_slot(slot).start()      # ready before the first task comes
            while True:
                item = self.work.get()
                if item is None:
                    return
                handle, start = item
                if not handle.current:        # dropped (timed out, cancelled) while queued
                    self.events.put(("done", handle, False, "dropped before it started"))
                    continue
                self.busy += 1
                try:
                    ok, outcome = self._call(handle, start, slot)
                finally:
                    self.busy -= 1
                self.events.put(("done", handle, ok, outcome))
        finally:
            for made in slot:
                made.close()

    def _process_slot(self, slot: list):
        if not slot:
            from mwcluster.nodes.worker.executor import ProcessSlot, process_context

            modules = self.config.handler_modules()
            slot.append(ProcessSlot(process_context(modules), modules,
                                    self.config.task_memory_mb))
            self._process_slots = True
        return slot[0]

    def _call(self, handle: TaskHandle, start: wm.Start, slot: list) -> tuple[bool, Any]:
        """Run one attempt where it belongs: on the Dask cluster (a dask worker), else where
        the job's executor hint says, else where the worker's executor says."""
        cfg = self.config
        events = self.events

        def report(progress: float, **counters: Any) -> bool:
            exchange.check_counters(counters)
            with handle.lock:
                if not handle.current:
                    return False
                handle.latest = (min(1.0, max(0.0, float(progress))), counters)
                if handle.notified:
                    return True
                handle.notified = True
            events.put(("progress", handle))
            return True

        def relay(progress: float, counters: dict) -> None:
            report(progress, **counters)

        def current() -> bool:                # False once a Drop reached the handle
            return handle.current

        if self.dask is not None:             # the Dask workers import the handler modules
            return self.dask.run(start, current, relay)
        fn = self.registry.get(start.handler)
        if fn is None:
            return False, (f"no handler named {start.handler!r} on worker "
                           f"{cfg.worker_id} (it has: "
                           f"{', '.join(self.registry.names()) or 'none'}; start it with "
                           "--handlers MODULE)")
        if (start.executor or cfg.executor) == "process":   # in the slot's child process
            return self._process_slot(slot).run(start, current, relay)
        task = Task(start.input, start.params if start.params is not None else {},
                    start.job_id, start.index, start.attempt)
        return exchange.run_handler(fn, task, report)
