"""What the benchmarks measure mwcluster against, on the same machine in the same run:

- `RedisPeer`: a fresh redis-server (AOF on, appendfsync everysec, no RDB saves) on a random
  127.0.0.1 port, loaded by redis-benchmark; its server's and its client's CPU come from
  /proc and from the client's rusage. Only where both programs are installed
  (`apt-get install redis-server redis-tools`); `RedisPeer.available()` says.
- `FloorServer`: a bare pyzmq ROUTER in a child process that does nothing but what any
  server speaking our protocol must: receive a frame, unpack it to find the request id, pack
  an ok reply, send it. What mwcluster's master costs above it is what its work costs.

Every run is bounded in count and in time.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mwcluster.testing import wait_for

TICK_S = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S


class RedisPeer:
    def __init__(self, directory: Path, max_seconds: float = 60.0) -> None:
        self.directory = Path(directory)
        self.max_seconds = max_seconds
        self.port = free_port()
        self._proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("redis-server") and shutil.which("redis-benchmark"))

    def __enter__(self) -> RedisPeer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ready() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(ready, 10.0, "redis-server to listen")
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)

    def set_bench(self, clients: int, pipeline: int, ops: int) -> dict:
        """redis-benchmark SET with 64-byte values over 10,000 keys: requests/s, and the
        server's and the client's CPU per SET in microseconds."""
        cmd = [shutil.which("redis-benchmark"), "-h", "127.0.0.1", "-p", str(self.port),
               "-t", "set", "-c", str(clients), "-P", str(pipeline), "-n", str(ops), "-d",
               "64", "-r", "10000", "--csv", "-q"]
        server0 = process_cpu_s(self._proc.pid)
        out = tempfile.TemporaryFile()
        bench = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.max_seconds
        while True:
            pid, status, usage = os.wait4(bench.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                bench.kill()
                _, status, usage = os.wait4(bench.pid, 0)
                raise RuntimeError(f"redis-benchmark did not finish within "
                                   f"{self.max_seconds} s")
            time.sleep(0.05)       # polling a child's exit, not synchronising a test
        bench.returncode = os.waitstatus_to_exitcode(status)
        server_s = process_cpu_s(self._proc.pid) - server0
        out.seek(0)
        text = out.read().decode()
        rate = None
        for line in text.splitlines():
            fields = [f.strip('"') for f in line.split(",")]
            if fields and fields[0] == "SET":
                rate = float(fields[1])
        if rate is None or bench.returncode:
            raise RuntimeError(f"redis-benchmark failed ({bench.returncode}): {text[-300:]}")
        return {"ops_s": rate, "server_cpu_us": server_s / ops * 1e6,
                "client_cpu_us": (usage.ru_utime + usage.ru_stime) / ops * 1e6}


FLOOR_CODE = r"""
import sys, zmq, msgpack
from mwcluster.wire.protocol import encode_reply
ctx = zmq.Context()
sock = ctx.socket(zmq.ROUTER)
sock.setsockopt(zmq.SNDHWM, 0)
sock.setsockopt(zmq.RCVHWM, 0)
port = sock.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
recv, send, unpackb, more = sock.recv, sock.send, msgpack.unpackb, zmq.SNDMORE
while True:
    ident = recv()
    frame = recv()
    send(ident, more)
    send(encode_reply(unpackb(frame)[2], 1, 0, 0, None))
"""


class FloorServer:
    """The bare pyzmq server (module docstring), in a child process."""

    def __enter__(self) -> FloorServer:
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p))
        self._proc = subprocess.Popen([sys.executable, "-c", FLOOR_CODE], env=env,
                                      stdout=subprocess.PIPE, text=True)
        self.endpoint = f"tcp://127.0.0.1:{int(self._proc.stdout.readline())}"
        self.pid = self._proc.pid
        return self

    def __exit__(self, *exc) -> None:
        self._proc.kill()
        self._proc.wait(timeout=10)
        self._proc.stdout.close()
