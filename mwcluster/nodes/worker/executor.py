"""Where a worker's slot runs a handler: in a child process of its own (`process`, the default:
CPU-bound Python handlers use every core instead of sharing one GIL) or in the slot's thread
(`thread`: I/O-bound handlers, no process per slot).

Process mode, per slot:

    handler thread (in the worker) ──(name, task)──▶ child process (forkserver)
                                   ◀──("progress", p, counters) ... ("done", ok, outcome)──

- Children come from a forkserver that imported the handler modules once (preload), so a
  fresh child costs a fork, not an interpreter start; a child serves one attempt after
  another until it has to be replaced.
- A child that dies (a segfault, `os._exit`, the kernel's OOM killer) fails the attempt with
  a message naming the exit code or signal; the slot starts a fresh child for the next one.
- An attempt no longer this worker's (cancelled, past its timeout: the worker machine decides,
  given to another worker, the worker stopping) has its child stopped: SIGTERM, then SIGKILL
  after GRACE_S.
- `memory_mb` caps the child's address space (RLIMIT_AS): a handler that needs more fails
  with MemoryError instead of dragging the machine down.
- A child asks for SIGKILL when its parent (the forkserver, which ends with the worker) dies,
  so a worker killed with SIGKILL leaves no handler running behind it.

The thread executor is the worker's own loop (nodes/worker/node.py): `report()` returns False
once the attempt is no longer this worker's (timed out included) and the handler is expected
to stop; a thread cannot be stopped, so until it returns it keeps its slot.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from typing import Any, Callable

GRACE_S = 2.0            # SIGTERM, then SIGKILL after this long
POLL_S = 0.05            # how often a slot looks at cancellation and its deadline
PROGRESS_EVERY_S = 0.05  # a child sends at most one progress report this often


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_main(conn, modules: list[str], memory_mb: int) -> None:
    """The child's loop: one attempt after another until the pipe closes or says None."""
    _die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the worker decides when to stop
    if memory_mb:
        import resource

        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from mwcluster.nodes.worker.exchange import check_counters, run_handler
    from mwcluster.worker import REGISTRY, Task, load_handler_modules

    load_handler_modules(modules)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        name, task_input, params, job_id, index, attempt = msg
        fn = REGISTRY.get(name)
        if fn is None:
            conn.send(("done", False, f"no handler named {name!r} in this worker's handler "
                       f"modules ({', '.join(REGISTRY.names()) or 'none'})"))
            continue
        last = [0.0]

        def report(progress: float, **counters: Any) -> bool:
            check_counters(counters)
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or progress >= 1:
                last[0] = now
                conn.send(("progress", min(1.0, max(0.0, float(progress))), counters))
            return True

        conn.send(("done", *run_handler(fn, Task(task_input, params, job_id, index, attempt),
                                        report)))


class ProcessSlot:
    """One slot's child process, owned by the slot's handler thread."""

    def __init__(self, context, modules: list[str], memory_mb: int = 0) -> None:
        self._ctx = context
        self._modules = list(modules)
        self._memory_mb = memory_mb
        self._proc = None
        self._conn = None
        self.started = 0           # children started (1 + the ones that replaced others)

    def start(self) -> None:
        """Have the child ready (the worker does this at start, so its first task does not
        wait for the forkserver and the child to come up)."""
        self._ensure()

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_child_main, args=(child, self._modules,
                                                           self._memory_mb), daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.started += 1

    def run(self, start, current: Callable[[], bool],
            on_progress: Callable[[float, dict], Any]) -> tuple[bool, Any]:
        """Run one attempt (a worker_machine.Start) in the child; (ok, result or error). Once
        `current()` is False (the attempt was cancelled, timed out, given to another worker,
        or the worker is stopping) the child is stopped."""
        self._ensure()
        params = start.params if start.params is not None else {}
        try:
            self._conn.send((start.handler, start.input, params, start.job_id, start.index,
                             start.attempt))
        except (OSError, ValueError) as exc:
            return self._died(f"could not be given the task ({exc})")
        while True:
            if not current():
                self._stop()
                return False, ("the attempt is no longer this worker's (cancelled, timed out, "
                               "given to another worker, or the worker is stopping): its "
                               "process was stopped")
            try:
                ready = self._conn.poll(POLL_S)
                msg = self._conn.recv() if ready else None
            except (EOFError, OSError):
                return self._died("closed its pipe")
            if msg is None:
                if not self._proc.is_alive():
                    return self._died("exited")
                continue
            if msg[0] == "progress":
                on_progress(msg[1], msg[2])
                continue
            return msg[1], msg[2]

    def _died(self, how: str) -> tuple[bool, str]:
        proc = self._proc
        proc.join(GRACE_S)
        code = proc.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            why = f"was killed by {name}" + (" (the kernel's OOM killer, or a kill -9?)"
                                              if -code == signal.SIGKILL else "")
        else:
            why = f"{how} with exit code {code}"
        self._discard()
        return False, (f"the handler's process {why} while running the task; the worker "
                       "goes on with a fresh process")

    def _stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(GRACE_S)
            if proc.is_alive():
                proc.kill()
                proc.join(GRACE_S)
        self._discard()

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        """End the child: asked first, stopped if it does not go."""
        if self._proc is None:
            return
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        self._proc.join(0.5)
        self._stop()


def process_context(modules: list[str]):
    """The multiprocessing context of process slots: a forkserver that imported the handler
    modules once (each child is a fork of it: no threads, no inherited sockets)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mwcluster.worker", "msgpack", *modules])
    return context

