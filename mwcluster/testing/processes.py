"""Test helpers shipped with the package: a real master in a child process.

`MasterProcess` starts `python -m mwcluster.cli master` on random 127.0.0.1 ports (port 0:
the master resolves the real endpoints and writes them to its ready file), waits for the ready
file with a deadline, and always stops the child (context manager). The child's stderr goes
to a file that is shown when it fails to start or dies.

    with MasterProcess(tmp_path / "data", durability="sync") as master:
        sock.connect(master.client_endpoint)
        ...
        assert master.terminate() == 0
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

__all__ = ["PACKAGE_ROOT", "MasterProcess", "MasterStartError", "RawDealer", "child_env",
           "wait_for"]

# the directory holding the mwcluster package: children import this very copy of it
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's environment) with PACKAGE_ROOT first on PYTHONPATH."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, out.get("PYTHONPATH")) if p)
    return out


def wait_for(condition: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> None:
    """Wait until `condition()` is true, checking every millisecond; fail the test with
    `what` after `timeout_s`. Tests synchronise with this, never with a bare sleep."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s} s: {what or condition}")
        pause.wait(0.001)


class MasterStartError(RuntimeError):
    """The master child did not become ready (it exited, or the deadline passed)."""


class MasterProcess:
    """A master in a child process, on random ports of 127.0.0.1."""

    def __init__(self, data_dir: str | os.PathLike[str], *, durability: str = "async",
                 extra_args: tuple[str, ...] | list[str] = (), env: dict[str, str] | None = None,
                 start_timeout_s: float = 30.0, keys=None) -> None:
        self.data_dir = Path(data_dir)
        self.durability = durability
        # testing.keys.ClusterKeys: serve with CURVE, the cluster's server key
        self.keys = keys
        self.extra_args = tuple(extra_args) + (tuple(keys.server_args()) if keys else ())
        self.start_timeout_s = start_timeout_s
        self._env = env
        self._tmp: str | None = None
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self.info: dict = {}

    # --- what the ready file said ------------------------------------------------------

    @property
    def client_endpoint(self) -> str:
        return self.info["client"]

    @property
    def pub_endpoint(self) -> str:
        return self.info["pub"]

    @property
    def epoch(self) -> int:
        return self.info["epoch"]

    @property
    def metrics_port(self) -> int | None:
        return self.info.get("metrics_port")

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the master was not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    # --- lifecycle ---------------------------------------------------------------------

    def command(self, ready_file: Path) -> list[str]:
        return [sys.executable, "-m", "mwcluster.cli", "master",
                "--data-dir", str(self.data_dir), "--durability", self.durability,
                "--client-endpoint", "tcp://127.0.0.1:0", "--pub-endpoint", "tcp://127.0.0.1:0",
                "--ready-file", str(ready_file), *self.extra_args]

    def start(self) -> MasterProcess:
        """Start the child and wait until it serves; MasterStartError (with its stderr) if it
        exits first or does not get ready before the deadline."""
        if self._proc is not None:
            raise RuntimeError("the master was started already")
        self._tmp = tempfile.mkdtemp(prefix="mwcluster-master-")
        ready = Path(self._tmp) / "ready.json"
        self._stderr = open(Path(self._tmp) / "stderr.log", "w+b")
        self._proc = subprocess.Popen(self.command(ready), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=self._stderr,
                                      env=child_env(self._env))
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while not ready.exists():
                if time.monotonic() > deadline:
                    raise MasterStartError(f"the master did not get ready within "
                                           f"{self.start_timeout_s} s{self._stderr_tail()}")
                try:
                    code = self._proc.wait(timeout=0.02)   # a short wait that sees an exit
                except subprocess.TimeoutExpired:
                    continue
                raise MasterStartError(f"the master exited with code {code} before it was "
                                       f"ready{self._stderr_tail()}")
            self.info = json.loads(ready.read_text())
        except BaseException:
            self.stop()
            raise
        return self

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait for the exit, return the exit code (SIGKILL after the timeout)."""
        return self._signal(signal.SIGTERM, timeout_s)

    def interrupt(self, timeout_s: float = 30.0) -> int:
        return self._signal(signal.SIGINT, timeout_s)

    def kill(self) -> int:
        """SIGKILL: a crash. Returns the (negative) exit code."""
        return self._signal(signal.SIGKILL, 30.0)

    def _signal(self, signum: int, timeout_s: float) -> int:
        proc = self._proc
        if proc is None:
            raise RuntimeError("the master was not started")
        if proc.poll() is None:
            proc.send_signal(signum)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                raise MasterStartError(f"the master did not exit within {timeout_s} s after "
                                       f"signal {signum}{self._stderr_tail()}") from None
        self._cleanup()
        return proc.returncode

    def restart(self, extra_args: tuple[str, ...] | None = None, *,
                env: dict[str, str] | None = None):
        """Start again on the same data directory after a stop or a kill (with other
        `extra_args`, or environment `env`, if given); the endpoints are read afresh from
        the new ready file."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("the process is still running: stop or kill it first")
        if extra_args is not None:
            self.extra_args = tuple(extra_args)
        if env is not None:
            self._env = env
        self._proc = None
        self.info = {}
        return self.start()

    def stop(self) -> None:
        """Stop the child whatever its state (SIGTERM, then SIGKILL) and remove temp files."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        self._cleanup()

    def stderr_text(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return self._stderr_saved
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    _stderr_saved = ""

    def _stderr_tail(self, limit: int = 4000) -> str:
        text = self.stderr_text()
        return f"; its stderr ends with:\n{text[-limit:]}" if text else " (no stderr output)"

    def _cleanup(self) -> None:
        if self._stderr is not None and not self._stderr.closed:
            self._stderr_saved = self.stderr_text()
            self._stderr.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> MasterProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class RawDealer:
    """A bare DEALER speaking the wire protocol, for tests that must not depend on the client:
    it sends exactly the frames it is given and shows every reply as it came."""

    def __init__(self, endpoint: str, *, client_id: bytes | None = None,
                 timeout_s: float = 10.0, credentials=None) -> None:
        import zmq

        self._zmq = zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if credentials is not None:          # security.curve.Credentials: CURVE
            credentials.apply(self.sock)
        self.sock.connect(endpoint)
        self.client_id = client_id or os.urandom(16)
        self.timeout_s = timeout_s
        self.next_request_id = 1

    def send(self, op: int, args: list | tuple = (), durability: int = 0, *,
             request_id: int | None = None, client_id: bytes | None = None) -> int:
        from mwcluster.wire.protocol import encode_request

        if request_id is None:
            request_id = self.next_request_id
            self.next_request_id += 1
        self.sock.send(encode_request(client_id or self.client_id, request_id, op, list(args),
                                      durability))
        return request_id

    def send_frames(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def recv(self, timeout_s: float | None = None) -> Any:
        """The next reply (a wire.protocol.Reply), or None when none came in time."""
        from mwcluster.wire.protocol import decode_reply

        timeout = self.timeout_s if timeout_s is None else timeout_s
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return decode_reply(self.sock.recv())

    def call(self, op: int, args: list | tuple = (), durability: int = 0, *,
             request_id: int | None = None, client_id: bytes | None = None,
             timeout_s: float | None = None) -> Any:
        """Send one request and return its reply; AssertionError on a timeout or when another
        reply comes first."""
        rid = self.send(op, args, durability, request_id=request_id, client_id=client_id)
        reply = self.recv(timeout_s)
        if reply is None:
            raise AssertionError(f"no reply to request {rid} (op {op}) in time")
        if reply.request_id != rid:
            raise AssertionError(f"expected the reply to request {rid}, got {reply}")
        return reply

    def status(self) -> dict:
        from mwcluster.wire.protocol import Op

        reply = self.call(Op.STATUS)
        assert reply.status == 0, reply
        return reply.result

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    def __enter__(self) -> RawDealer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProcStat(NamedTuple):
    state: str            # R, S, D, Z...
    ppid: int
    cpu_s: float          # utime + stime


def proc_table() -> dict[int, ProcStat]:
    """Every process /proc shows (one gone meanwhile is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the name: state ppid ... utime (14th field of the line) stime (15th)
        out[int(name)] = ProcStat(fields[0], int(fields[1]),
                                  (int(fields[11]) + int(fields[12])) / tick)
    return out


def descendants(pid: int, *, zombies: bool = False) -> dict[int, ProcStat]:
    """Every descendant of `pid` now in /proc (without zombies unless asked)."""
    children: dict[int, list[int]] = {}
    table = proc_table()
    for child, stat in table.items():
        children.setdefault(stat.ppid, []).append(child)
    out: dict[int, ProcStat] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in out and (zombies or table[child].state != "Z"):
                out[child] = table[child]
                todo.append(child)
    return out
