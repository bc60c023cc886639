"""Task handlers for tests and examples of the executors (`--handlers mwcluster.testing.handlers`):
each does one thing a real handler may do, bounded in time.

    testing.echo    returns its input, reporting progress 0.5 first
    testing.sleep   sleeps params["s"] seconds (at most 60), reporting every 50 ms
    testing.exit    ends its process with os._exit(params["code"])
    testing.kill    its process sends itself SIGKILL
    testing.stubborn  ignores SIGTERM, then sleeps like testing.sleep
    testing.hog     allocates params["mb"] MiB
    testing.pid     returns the pid of the process it runs in
    testing.spin    pure-Python CPU work: params["n"] loop iterations (at most 10**9)
"""

from __future__ import annotations

import os
import signal
import time

from mwcluster.worker import handler


@handler("testing.echo")
def echo(task, report):
    report(0.5, seen=1)
    return task.input


@handler("testing.sleep")
def sleep(task, report):
    seconds = min(60.0, float(task.params.get("s", 1.0)))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not report(1 - (deadline - time.monotonic()) / seconds):
            return None                       # no longer this worker's: stop early
        time.sleep(0.05)
    return seconds


@handler("testing.exit")
def exit_now(task, report):
    os._exit(int(task.params.get("code", 3)))


@handler("testing.kill")
def kill_self(task, report):
    os.kill(os.getpid(), signal.SIGKILL)


@handler("testing.stubborn")
def stubborn(task, report):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return sleep(task, report)


@handler("testing.hog")
def hog(task, report):
    block = bytearray(int(task.params.get("mb", 100)) << 20)
    return len(block)


@handler("testing.pid")
def pid(task, report):
    return os.getpid()


@handler("testing.spin")
def spin(task, report):
    total = 0
    for i in range(min(int(task.params.get("n", 1_000_000)), 10 ** 9)):
        total += i * i % 7
    return total
