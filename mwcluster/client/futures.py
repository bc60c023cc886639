"""The futures of requests in flight on a Client (client/connection.py drives the socket
and hands them their replies): one request's Future, and a BATCH message's BatchFuture whose
reply is handed out to the futures of its requests."""

from __future__ import annotations

from typing import Any, Callable

from mwcluster.client.calls import convert_reply, error_from_reply
from mwcluster.wire.protocol import ErrorCode, Op, ProtocolError, Reply

__all__ = ["BatchFuture", "Future"]


class Future:
    """The result of a request sent and not yet answered. `result()` waits for it (driving
    the client's socket) and returns the result or raises the request's error."""

    __slots__ = ("_client", "_convert", "_owner", "request_id", "op", "frame", "sent_ns",
                 "_done", "_value", "_error", "sub")

    def __init__(self, client: Any, request_id: int, op: int, frame: bytes,
                 convert: Callable[[Reply], Any], owner: Any = None):
        # client: the Client whose socket it waits on (its _wait_for); owner: the Pipeline
        # that sent it, or None
        self._client = client
        self._convert = convert
        self._owner = owner
        self.request_id = request_id
        self.op = op
        self.frame = frame
        self.sent_ns = 0           # when it was sent, or queued for a batch
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self.sub: tuple | None = None   # (request_id, op, durability, args) while queued

    def done(self) -> bool:
        return self._done

    def result(self) -> Any:
        if not self._done:
            self._wait()
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self) -> BaseException | None:
        if not self._done:
            self._wait()
        return self._error

    def _wait(self) -> None:
        owner = self._owner
        if owner is not None and owner._queue:
            owner.flush()
        self._client._wait_for(self)

    def _set_reply(self, reply: Reply) -> None:
        self._value, self._error = convert_reply(reply, self._convert)
        self._finish()

    def _set_error(self, error: BaseException) -> None:
        self._error = error
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self.frame = b""
        self.sub = None
        if self._owner is not None:
            self._owner._inflight -= 1


class BatchFuture:
    """A BATCH message in flight: one frame and request id for many requests. Its reply is
    handed out to the futures of its requests, in order; an error reply to the batch itself
    (it was refused whole) becomes every request's error."""

    __slots__ = ("request_id", "op", "frame", "sent_ns", "_done", "futures")

    _convert = staticmethod(lambda reply: reply.result)

    def __init__(self, request_id: int, frame: bytes, futures: list[Future]):
        self.request_id = request_id
        self.op = Op.BATCH
        self.frame = frame
        self.sent_ns = 0
        self._done = False
        self.futures = futures

    def _set_reply(self, reply: Reply) -> None:
        futures = self.futures
        if reply.status:
            self._set_error(error_from_reply(reply))
            return
        subs = reply.result
        if type(subs) is not list or len(subs) != len(futures):
            self._set_error(ProtocolError(
                ErrorCode.BAD_REQUEST, f"malformed BATCH result from the master for request "
                f"{reply.request_id}: expected {len(futures)} sub-replies"))
            return
        epoch = reply.epoch
        for future, sub in zip(futures, subs):
            if type(sub) is list and len(sub) == 4 and sub[0] == future.request_id:
                future._set_reply(Reply(sub[0], epoch, sub[1], sub[2], sub[3]))
            else:
                future._set_error(ProtocolError(
                    ErrorCode.BAD_REQUEST, f"malformed sub-reply from the master for request "
                    f"{future.request_id}: {sub!r:.200}", future.request_id))
        self._finish()

    def _set_error(self, error: BaseException) -> None:
        for future in self.futures:
            if not future._done:
                future._set_error(error)
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self.frame = b""
