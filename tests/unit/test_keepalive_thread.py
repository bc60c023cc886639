"""KeepAlive (client/watching.py) with a stand-in client: NOT_FOUND marks the lease lost, an
unreachable master is tried again at the next round, and an unexpected failure of the thread
marks the lease lost too (a holder must not believe a lease renewed that nobody renews)."""

from __future__ import annotations

import threading

from mwcluster import errors
from mwcluster.client.calls import Lease
from mwcluster.client.watching import KeepAlive
from mwcluster.testing import wait_for


class Stub:
    def __init__(self, answers: list) -> None:
        self.answers = answers
        self.closed = threading.Event()

    def keepalive_once(self, lease):
        answer = self.answers.pop(0) if self.answers else 1.0
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        self.closed.set()


def run(answers: list) -> tuple[KeepAlive, Stub, list]:
    stub = Stub(answers)
    told = []
    keeper = KeepAlive(lambda: stub, Lease(7, 3.0), interval_s=0.001, on_lost=told.append)
    return keeper, stub, told


def test_not_found_marks_the_lease_lost_after_a_timeout_is_tried_again():
    keeper, stub, told = run([errors.RequestTimeout("away"), 1.0,
                              errors.NotFound("lease 7 does not exist")])
    assert keeper.lost.wait(30)
    assert isinstance(keeper.error, errors.NotFound) and told == [keeper.error]
    assert keeper.sent == 1 and stub.closed.wait(30)


def test_an_unexpected_failure_marks_the_lease_lost_and_stops_the_thread():
    keeper, stub, told = run([1.0, ValueError("a bug")])
    assert keeper.lost.wait(30)
    assert isinstance(keeper.error, ValueError) and told == [keeper.error]
    assert stub.closed.wait(30)
    wait_for(lambda: not keeper.running(), 30, "the keepalive thread to end")
