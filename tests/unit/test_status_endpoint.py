"""The status endpoint served from a thread of its own (nodes/status_endpoint.StatusThread),
as the worker runs it: STATUS reads whatever dict the owner last put in place, malformed
requests get error replies and the thread keeps serving, and stop() closes the socket.
Real sockets on 127.0.0.1, random ports."""

from __future__ import annotations

import threading

import zmq

from mwcluster.nodes.status_endpoint import StatusThread
from mwcluster.testing import RawDealer
from mwcluster.wire.protocol import ErrorCode, Op


class Owner:
    """Stands for the owner thread: replaces its status dict whole."""

    def __init__(self) -> None:
        self.snap = {"n": 0}
        self.epoch = 3


def test_status_ping_malformed_requests_and_stop():
    owner = Owner()
    ctx = zmq.Context()
    server = StatusThread(ctx, "tcp://127.0.0.1:0", lambda: owner.snap, lambda: owner.epoch,
                          role="worker", poll_ms=20).start()
    try:
        with RawDealer(server.endpoint, timeout_s=10) as dealer:
            reply = dealer.call(Op.STATUS)
            assert (reply.status, reply.epoch, reply.result) == (0, 3, {"n": 0})
            owner.snap = {"n": 1}                 # the owner publishes a new dict
            assert dealer.status() == {"n": 1}
            assert dealer.call(Op.PING).result is None
            put = dealer.call(Op.PUT, ["/k", b"\x01", None])
            assert put.status == ErrorCode.UNKNOWN_OP
            assert "a worker answers only STATUS and PING" in put.result[1]
            dealer.send_frames(b"\xc1 not msgpack")
            bad = dealer.recv(10)
            assert bad is not None and bad.status == ErrorCode.BAD_REQUEST
            assert bad.request_id == 0
            dealer.send_frames(b"two", b"frames")
            assert dealer.recv(10).status == ErrorCode.BAD_REQUEST
            assert dealer.status() == {"n": 1}      # still serving after the bad ones
    finally:
        assert server.stop(timeout_s=10)
    assert_closed(ctx)


def assert_closed(ctx: zmq.Context) -> None:
    """Context.term() returns only once every socket of the context is closed."""
    term = threading.Thread(target=ctx.term, daemon=True)
    term.start()
    term.join(10)
    assert not term.is_alive(), "a socket of the context is still open"


def test_a_status_function_that_fails_is_answered_internal_and_the_thread_serves_on():
    calls = []

    def status():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return {"ok": True}

    ctx = zmq.Context()
    server = StatusThread(ctx, "tcp://127.0.0.1:0", status, lambda: 0, role="worker",
                          poll_ms=20).start()
    try:
        with RawDealer(server.endpoint, timeout_s=10) as dealer:
            failed = dealer.call(Op.STATUS)
            assert failed.status == ErrorCode.INTERNAL and "a bug" in failed.result[1]
            assert dealer.status() == {"ok": True}
    finally:
        assert server.stop(timeout_s=10)
    assert_closed(ctx)


def test_stop_before_start_closes_the_socket():
    ctx = zmq.Context()
    server = StatusThread(ctx, "tcp://127.0.0.1:0", dict, lambda: 0, role="worker")
    assert server.stop()
    assert_closed(ctx)
