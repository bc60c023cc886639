"""The client's calls without sockets: op builders, reply conversion, typed errors."""

from __future__ import annotations

import msgpack
import pytest

from mwcluster import errors
from mwcluster.client.calls import (ERROR_CLASSES, Calls, Stat, convert_reply, error_from_reply,
                                    op_check, op_delete, op_merge, op_put)
from mwcluster.core.durability import FAST, Durability, wire_code
from mwcluster.core.records import Multi, from_wire
from mwcluster.core.values import encode
from mwcluster.wire.protocol import ErrorCode, Op, ProtocolError, Reply, error_code_for


class Recorder(Calls):
    """Runs nothing: returns what a call would send and the conversion it would apply."""

    def _run(self, op, args, durability, convert):
        return op, args, durability, convert


def test_mutation_arguments_match_the_protocol():
    calls = Recorder()
    op, args, durability, _ = calls.put("/a", {"x": 1})
    assert (op, args, durability) == (Op.PUT, ["/a", encode({"x": 1}), None], 0)
    op, args, durability, _ = calls.put("/a", b"\x00", expected_version=3, durability="sync")
    assert (op, args, durability) == (Op.PUT, ["/a", encode(b"\x00"), 3], 2)
    assert calls.merge("/m", {"k": None}, 0, durability="async")[:3] == (
        Op.MERGE, ["/m", encode({"k": None}), 0], 1)
    assert calls.delete("/d", recursive=True)[:3] == (Op.DELETE, ["/d", True, None], 0)


def test_read_arguments_match_the_protocol():
    calls = Recorder()
    assert calls.get("/a")[:3] == (Op.GET, ["/a"], 0)
    assert calls.stat("/a")[:3] == (Op.STAT, ["/a"], 0)
    assert calls.children("/", 10)[:3] == (Op.CHILDREN, ["/", 10], 0)
    assert calls.list("/p", 5, "/p/1")[:3] == (Op.LIST, ["/p", 5, "/p/1"], 0)
    assert calls.status()[:3] == (Op.STATUS, [], 0)
    assert calls.ping()[:3] == (Op.PING, [], 0)
    assert calls.fetch(7, 4096)[:3] == (Op.FETCH, [7, 4096], 0)


def test_multi_ops_are_records_the_core_accepts():
    ops = [op_put("/a", [1, 2]), op_merge("/b", {"x": 1}, 2), op_delete("/c", True, None),
           op_check("/d", 0)]
    op, args, _, _ = Recorder().multi(ops)
    assert op == Op.MULTI
    # Round trip through msgpack as the master sees it, then the core's own decoder.
    wire = msgpack.unpackb(msgpack.packb(args, use_bin_type=True), raw=False)
    rec = from_wire([5, *wire])
    assert isinstance(rec, Multi) and len(rec.ops) == 4
    assert rec.ops[0].value == encode([1, 2])
    assert Calls.op_put is not None and Calls.op_check("/x", 1) == [4, "/x", 1]


def test_durability_names():
    assert [Durability.parse(d) for d in (None, "default", "async", "sync", 2)] == [0, 0, 1, 2, 2]
    with pytest.raises(ValueError):
        Durability.parse("fast")
    with pytest.raises(ValueError):
        Durability.parse(7)


def _reply(status=0, txid=0, result=None, epoch=3, request_id=9):
    return Reply(request_id, epoch, status, txid, result)


def test_conversions():
    calls = Recorder()
    convert = calls.put("/a", 1)[3]
    assert convert_reply(_reply(txid=42, result=1), convert) == (42, None)
    convert = calls.get("/a")[3]
    assert convert_reply(_reply(result=[encode({"a": b"x"}), 2, 5, 6]), convert) == (
        {"a": b"x"}, None)
    assert convert_reply(_reply(result=None), convert) == (None, None)
    convert = calls.get_with_stat("/a")[3]
    value = encode("hello")
    assert convert_reply(_reply(result=[value, 2, 5, 6]), convert)[0] == (
        "hello", Stat(2, 5, 6, len(value)))
    convert = calls.stat("/a")[3]
    assert convert_reply(_reply(result=[2, 5, 6, 10]), convert)[0] == Stat(2, 5, 6, 10)
    assert convert_reply(_reply(txid=8, result=[1, None]), calls.multi([])[3])[0] == (
        8, [1, None])
    assert convert_reply(_reply(epoch=4), calls.ping()[3])[0] == 4
    assert convert_reply(_reply(result=[9, [[8, 1, b"p"]]]), calls.fetch(8)[3])[0] == (
        9, [(8, 1, b"p")])


def test_a_malformed_result_is_an_error_not_a_crash():
    _, error = convert_reply(_reply(result=[1, 2]), Recorder().stat("/a")[3])
    assert isinstance(error, ProtocolError) and "malformed result" in str(error)


@pytest.mark.parametrize("code", [c for c in ErrorCode if c != ErrorCode.OK])
def test_every_error_code_has_a_typed_exception_with_the_message(code):
    exc = error_from_reply(_reply(status=int(code), result=[code.name.lower(), "what happened"]))
    assert type(exc) is ERROR_CLASSES[code]
    assert isinstance(exc, errors.MwclusterError)
    assert "what happened" in str(exc)
    assert exc.error_code == code and exc.epoch == 3


def test_state_machine_errors_map_back_to_the_code_the_master_sends():
    # The master turns these classes into codes with error_code_for; the client must turn
    # each code back into the same class (or a subclass of it).
    samples = [errors.NoNode("x"), errors.NodeExists("x"), errors.BadVersion("x"),
               errors.NotEmpty("x"), errors.NotAMap("x"), errors.NotFound("x"),
               errors.BadState("x"), errors.MultiFailed(2, errors.NoNode("x")),
               errors.InvalidRecord("x"), errors.JournalUnavailable("x")]
    for exc in samples:
        code = error_code_for(exc)
        assert code != ErrorCode.INTERNAL
        assert issubclass(ERROR_CLASSES[code], type(exc))


def test_multi_failed_keeps_the_index():
    exc = error_from_reply(_reply(status=17, result=[
        "multi_failed", "operation 3 of the multi failed: /a does not exist"]))
    assert isinstance(exc, errors.MultiFailed) and exc.index == 3
    assert "operation 3" in str(exc)


def test_an_unknown_code_is_a_server_error():
    exc = error_from_reply(_reply(status=99, result=["new_thing", "from the future"]))
    assert type(exc) is errors.ServerError and "new_thing: from the future" in str(exc)
    exc = error_from_reply(_reply(status=12, result="not a pair"))
    assert isinstance(exc, errors.BadVersion) and "not a pair" in str(exc)


def test_job_and_worker_calls_match_the_protocol():
    calls = Recorder()
    op, args, durability, _ = calls.submit_job("wc", "mod:fn", ["a", "b"], params={"k": 1},
                                               max_attempts=4, priority=2)
    assert (op, args, durability) == (Op.JOB_SUBMIT, [None, "wc", "mod:fn", 2, 4,
                                                      [["a", {"k": 1}], ["b", {"k": 1}]]], 0)
    assert calls.submit_job("n", "h", [1], job_id="j", durability="sync")[:3] == (
        Op.JOB_SUBMIT, ["j", "n", "h", 0, 3, [[1, {}]]], 2)
    assert calls.cancel_job("j", "why")[:3] == (Op.JOB_CANCEL, ["j", "why"], 0)
    assert calls.delete_job("j")[:3] == (Op.JOB_DELETE, ["j"], 0)
    assert calls.jobs(False)[:3] == (Op.JOB_LIST, [False], 0)
    assert calls.job_status("j")[:3] == (Op.JOB_STATUS, ["j"], 0)
    assert calls.job_tasks("j", 5, 10, "failed")[:3] == (Op.JOB_TASKS, ["j", 5, 10, "failed"], 0)
    assert calls.register_worker("w", 4, "tcp://h:1")[:3] == (
        Op.WORKER_REGISTER, ["w", "tcp://h:1", 4], 0)
    assert calls.worker_heartbeat("w", [("j", 1, 2)])[:3] == (
        Op.WORKER_HEARTBEAT, ["w", [["j", 1, 2]]], 0)
    assert calls.request_tasks("w", 3)[:3] == (Op.TASK_REQUEST, ["w", 3], 2)
    assert calls.report_progress("w", "j", 1, 2, 1, {"n": 3})[:3] == (
        Op.TASK_PROGRESS, ["w", "j", 1, 2, 1.0, {"n": 3}], 0)
    assert calls.finish_task("w", "j", 1, 2, 0, "boom")[:3] == (
        Op.TASK_FINISH, ["w", "j", 1, 2, False, "boom"], 2)
    assert calls.leave_worker("w")[:3] == (Op.WORKER_LEAVE, ["w"], 0)


def test_job_call_conversions():
    from mwcluster.client import Assignment

    convert = Recorder().request_tasks("w", 1)[3]
    got = convert(Reply(1, 1, 0, 9, [["j", 0, 1, "h", "in", {"p": 1}]]))
    assert got == [Assignment("j", 0, 1, "h", "in", {"p": 1})] and got[0].params == {"p": 1}
    assert Recorder().report_progress("w", "j", 0, 1, 0.5)[3](Reply(1, 1, 0, 9, None)) is None
    assert Recorder().leave_worker("w")[3](Reply(1, 1, 0, 9, [])) is None
    assert Recorder().submit_job("n", "h", [1])[3](Reply(1, 1, 0, 9, "job-9")) == "job-9"
    stale = Reply(1, 1, int(ErrorCode.BAD_STATE), 0, ["bad_state", "stale"])
    assert isinstance(convert_reply(stale, convert)[1], errors.BadState)


def test_wire_codes_are_remembered_by_type_and_errors_are_not():
    assert wire_code(1, None) == 1 and wire_code("async", "fast") == 1 | FAST
    for bad in (True, 1.0):                # equal to 1, hashed like it: refused all the same
        with pytest.raises(ValueError, match="durability must be"):
            wire_code(bad, None)
    with pytest.raises(ValueError, match="consistency must be"):
        wire_code("sync", "eventual")
    with pytest.raises(ValueError, match="consistency must be"):
        wire_code("sync", "eventual")      # a refusal is not remembered as an answer
