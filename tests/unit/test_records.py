"""Records: the journal encoding of every type, what decoding refuses, and admission limits."""

from __future__ import annotations

import msgpack
import pytest

from mwcluster.core import records as r
from mwcluster.core.limits import Limits
from mwcluster.core.values import encode
from mwcluster.errors import ApplyError, InvalidRecord, MwclusterError

LIMITS = Limits()

MULTI = r.Multi((
    r.Put("/m/a", encode(1), None),
    r.Merge("/m/b", encode({"x": 1}), 0),
    r.Delete("/m/c", True, 3),
    r.Check("/m/d", 2),
    r.Attach("/m/a", 9),
))

# One admissible sample of every record type, with every field set to something non-default.
SAMPLES = [
    r.Put("/a/b", encode({"v": [1, 2]}), None),
    r.Put("/a/b", encode("x"), 7),
    r.Merge("/a/b", encode({"k": None}), None),
    r.Delete("/a", True, None),
    r.Delete("/a/b", False, 2),
    r.Check("/a/b", 0),
    MULTI,
    r.Noop("checkpoint marker"),
    r.Noop(""),
    r.JobSubmit("job-1", "nightly etl", "etl.handlers:run", -5, 3,
                [["s3://bucket/part-0", {}], [{"rows": [1, 2]}, {"mode": "fast"}]], 1_700_000),
    r.JobSubmit("job-2", "nightly etl", "etl.handlers:run", 0, 1, [[1, {}]], 1_700_000,
                {"timeout_s": 90.5, "executor": "thread"}),
    r.JobCancel("job-1", "operator asked", 1_700_001),
    r.JobDelete("job-1"),
    r.WorkerRegister("w-1", "tcp://10.0.0.7:5555", 4, 1_700_002),
    r.WorkerLost("w-1", "heartbeat timeout", 1_700_003),
    r.WorkerLeave("w-1", 1_700_004),
    r.TaskAssign("job-1", 1, "w-1", 2, 1_700_005),
    r.TaskProgress("job-1", 1, 2, 0.25, {"rows": 10, "ratio": 0.5}, 1_700_006),
    r.TaskProgress("job-1", 1, 2, 1, {}, 1_700_006),
    r.TaskFinish("job-1", 1, 2, True, {"out": ["s3://x"], "n": 3}, 1_700_007),
    r.TaskFinish("job-1", 1, 2, False, "Traceback: boom", 1_700_008),
    r.Attach("/a/b", 41),
    r.Multi((r.Put("/e/1", encode("me"), 0), r.Attach("/e/1", 41))),
    r.LeaseGrant(10_000),
    r.LeaseRevoke(41, "expired"),
]

# The codes are part of the journal format: they never change and are never reused.
CODES = {
    r.Put: 1, r.Merge: 2, r.Delete: 3, r.Check: 4, r.Multi: 5, r.Noop: 9, r.JobSubmit: 10,
    r.JobCancel: 11, r.JobDelete: 12, r.WorkerRegister: 20, r.WorkerLost: 21,
    r.WorkerLeave: 22, r.TaskAssign: 30, r.TaskProgress: 31, r.TaskFinish: 32, r.Attach: 6,
    r.LeaseGrant: 40, r.LeaseRevoke: 41,
}


def test_the_samples_cover_every_record_type():
    assert {type(rec) for rec in SAMPLES} == set(r.RECORD_TYPES.values())
    assert {type(op) for op in MULTI.ops} == set(r.MULTI_MEMBERS)


def test_codes_are_the_documented_ones():
    assert {cls: cls.CODE for cls in r.RECORD_TYPES.values()} == CODES
    assert r.RECORD_TYPES == {code: cls for cls, code in CODES.items()}


@pytest.mark.parametrize("rec", SAMPLES, ids=lambda rec: type(rec).__name__)
def test_encode_decode_round_trip(rec):
    payload = r.encode_record(rec)
    decoded = r.decode_record(payload)
    assert decoded == rec
    assert type(decoded) is type(rec)
    assert r.decode_record(memoryview(payload)) == rec
    assert r.encode_record(decoded) == payload


@pytest.mark.parametrize("rec", SAMPLES, ids=lambda rec: type(rec).__name__)
def test_encoding_is_the_documented_array(rec):
    raw = msgpack.unpackb(r.encode_record(rec), raw=False, strict_map_key=False)
    assert raw[0] == CODES[type(rec)]
    assert raw == r.to_wire(rec)
    if type(rec) is not r.Multi:
        fields = list(rec)
        if type(rec) is r.JobSubmit and not rec.options:
            fields = fields[:-1]             # written without the options it does not have
        assert raw[1:] == [list(f) if type(f) is tuple else f for f in fields]


def test_multi_members_decode_as_their_types():
    decoded = r.decode_record(r.encode_record(MULTI))
    assert [type(op) for op in decoded.ops] == [r.Put, r.Merge, r.Delete, r.Check, r.Attach]
    assert type(decoded.ops) is tuple


def test_values_stay_bytes_and_strings_stay_strings():
    rec = r.decode_record(r.encode_record(r.Put("/k", b"\xa1x")))
    assert type(rec.key) is str and type(rec.value) is bytes


# --- what decode_record refuses ------------------------------------------------------------

def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _put(*fields):
    return _pack([1, *fields])


MALFORMED = {
    "not msgpack": b"\xc1",
    "empty payload": b"",
    "truncated": r.encode_record(SAMPLES[0])[:-3],
    "trailing garbage": r.encode_record(SAMPLES[0]) + b"\x00",
    "a map": _pack({"code": 1}),
    "an int": _pack(1),
    "a string": _pack("put"),
    "empty array": _pack([]),
    "unknown code": _pack([99, "x"]),
    "unassigned code 6": _pack([6]),
    "negative code": _pack([-1]),
    "code as str": _pack(["1", "/a", encode(1), None]),
    "code as bool": _pack([True, "/a", encode(1), None]),
    "code as float": _pack([1.0, "/a", encode(1), None]),
    "too few fields": _put("/a", encode(1)),
    "too many fields": _put("/a", encode(1), None, 5),
    "no fields": _pack([1]),
    "Put key as bytes": _put(b"/a", encode(1), None),
    "Put value as str": _pack([1, "/a", "not bytes", None]),
    "Put expected as str": _put("/a", encode(1), "1"),
    "Put expected as bool": _put("/a", encode(1), True),
    "Put expected as float": _put("/a", encode(1), 1.0),
    "Delete recursive as int": _pack([3, "/a", 1, None]),
    "Delete recursive as nil": _pack([3, "/a", None, None]),
    "Check expected as nil": _pack([4, "/a", None]),
    "Noop note as nil": _pack([9, None]),
    "JobSubmit priority as bool": _pack([10, "j", "n", "h", True, 1, [["i", {}]], 0]),
    "JobSubmit tasks as map": _pack([10, "j", "n", "h", 0, 1, {"0": ["i", {}]}, 0]),
    "JobSubmit now as float": _pack([10, "j", "n", "h", 0, 1, [["i", {}]], 1.5]),
    "JobDelete id as int": _pack([12, 7]),
    "WorkerRegister slots as str": _pack([20, "w", "addr", "4", 0]),
    "TaskAssign index as float": _pack([30, "j", 1.0, "w", 1, 0]),
    "TaskAssign attempt as bool": _pack([30, "j", 0, "w", True, 0]),
    "TaskProgress progress as str": _pack([31, "j", 0, 1, "0.5", {}, 0]),
    "TaskProgress progress as bool": _pack([31, "j", 0, 1, False, {}, 0]),
    "TaskProgress counters as list": _pack([31, "j", 0, 1, 0.5, [], 0]),
    "TaskFinish ok as int": _pack([32, "j", 0, 1, 1, None, 0]),
    "Multi ops as map": _pack([5, {}]),
    "Multi ops as nil": _pack([5, None]),
    "Noop inside Multi": _pack([5, [[1, "/a", encode(1), None], [9, "x"]]]),
    "JobDelete inside Multi": _pack([5, [[12, "j"]]]),
    "Multi inside Multi": _pack([5, [[5, [[1, "/a", encode(1), None]]]]]),
    "unknown code inside Multi": _pack([5, [[77]]]),
    "bad member fields inside Multi": _pack([5, [[1, "/a", "str value", None]]]),
    "member not an array inside Multi": _pack([5, ["/a"]]),
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_decode_record_refuses_malformed_payloads(payload):
    with pytest.raises(InvalidRecord):
        r.decode_record(payload)


def test_decode_errors_name_the_problem():
    with pytest.raises(InvalidRecord, match="unknown record code 99"):
        r.decode_record(_pack([99]))
    with pytest.raises(InvalidRecord, match=r"Put takes 3 fields \(key, value, expected_version\)"):
        r.decode_record(_put("/a"))
    with pytest.raises(InvalidRecord, match="Delete.recursive must be bool, not int"):
        r.decode_record(_pack([3, "/a", 1, None]))
    with pytest.raises(InvalidRecord, match="Noop is not allowed inside a multi"):
        r.decode_record(_pack([5, [[9, "x"]]]))


def test_invalid_record_is_an_apply_error():
    assert issubclass(InvalidRecord, ApplyError)
    assert issubclass(InvalidRecord, MwclusterError)


def test_a_job_submit_from_before_job_options_reads_as_one_without_options():
    """Journals written before jobs had options hold 8 elements (10 with the origin)."""
    old = [10, "j", "n", "h", 0, 1, [["i", {}]], 5]
    assert r.decode_payload(_pack(old)) == (r.JobSubmit("j", "n", "h", 0, 1, [["i", {}]], 5,
                                                        {}), None)
    rec, origin = r.decode_payload(_pack(old + [b"client", 7]))
    assert rec.options == {} and origin == (b"client", 7)
    new = r.JobSubmit("j", "n", "h", 0, 1, [["i", {}]], 5, {"timeout_s": 2})
    assert r.decode_payload(r.encode_record(new, (b"c", 1))) == (new, (b"c", 1))
    # a job without options is written as before options existed, for older nodes
    assert r.encode_record(r.JobSubmit(*old[1:])) == _pack(old)
    assert r.encode_record(r.JobSubmit(*old[1:]), (b"client", 7)) == _pack(old + [b"client", 7])


# --- admission -----------------------------------------------------------------------------

@pytest.mark.parametrize("rec", SAMPLES, ids=lambda rec: type(rec).__name__)
def test_admission_accepts_the_samples_and_returns_their_encoding(rec):
    assert r.check_admission(rec, LIMITS) == r.encode_record(rec)


def _submit(**fields):
    base = dict(job_id="j", name="n", handler="h", priority=0, max_attempts=1,
                tasks=[["in", {}]], now_ms=0)
    base.update(fields)
    return r.JobSubmit(**base)


REFUSED = [
    # namespace records
    ("key too long", r.Put("/abcdefgh", encode(1)), Limits(max_key_chars=8), "limit is 8"),
    ("relative key", r.Put("a", encode(1)), LIMITS, "invalid key"),
    ("trailing slash", r.Delete("/a/"), LIMITS, "invalid key"),
    ("dot component", r.Check("/a/./b", 1), LIMITS, "invalid key"),
    ("merge key", r.Merge("/a/..", encode({})), LIMITS, "invalid key"),
    ("key not a str", r.Put(None, encode(1)), LIMITS, "key must be str"),
    ("value too large", r.Put("/a", encode("x" * 20)), Limits(max_value_bytes=10),
     "limit is 10"),
    ("patch too large", r.Merge("/a", encode({"x": "y" * 20})), Limits(max_value_bytes=10),
     "limit is 10"),
    ("value not msgpack", r.Put("/a", b"\xc1"), LIMITS, "well-formed"),
    ("value with trailing bytes", r.Put("/a", encode(1) + b"\x01"), LIMITS, "well-formed"),
    ("patch not msgpack", r.Merge("/a", b"\x81"), LIMITS, "well-formed"),
    ("value not bytes", r.Put("/a", "text"), LIMITS, "value must be bytes"),
    ("negative expected", r.Put("/a", encode(1), -1), LIMITS, "expected_version"),
    ("negative expected on delete", r.Delete("/a", False, -2), LIMITS, "expected_version"),
    ("negative expected on check", r.Check("/a", -1), LIMITS, "expected_version"),
    ("bool expected", r.Put("/a", encode(1), True), LIMITS, "must be opt_int"),
    ("int recursive", r.Delete("/a", 1), LIMITS, "must be bool"),
    # multis
    ("empty multi", r.Multi(()), LIMITS, "at least one"),
    ("multi too large", r.Multi(tuple(r.Check(f"/k{i}", 0) for i in range(3))),
     Limits(max_multi_ops=2), "limit is 2"),
    ("noop in multi", r.Multi((r.Noop("x"),)), LIMITS, "not allowed inside a multi"),
    ("job in multi", r.Multi((r.Put("/a", encode(1)), r.JobDelete("j"))), LIMITS,
     "not allowed inside a multi"),
    ("multi in multi", r.Multi((r.Multi((r.Put("/a", encode(1)),)),)), LIMITS,
     "not allowed inside a multi"),
    ("bad key in multi", r.Multi((r.Put("/a", encode(1)), r.Delete("b"))), LIMITS,
     "invalid key"),
    ("big value in multi", r.Multi((r.Put("/a", encode("x" * 20)),)),
     Limits(max_value_bytes=10), "limit is 10"),
    ("ops not a sequence", r.Multi(None), LIMITS, "must be list"),
    # jobs
    ("no tasks", _submit(tasks=[]), LIMITS, "at least one task"),
    ("too many tasks", _submit(tasks=[["i", {}]] * 3), Limits(max_tasks_per_job=2),
     "limit is 2"),
    ("task not a pair", _submit(tasks=[["i"]]), LIMITS, "task 0 must be"),
    ("task a triple", _submit(tasks=[["i", {}], ["i", {}, 3]]), LIMITS, "task 1 must be"),
    ("task params not a map", _submit(tasks=[["i", []]]), LIMITS, "params a map"),
    ("task a str", _submit(tasks=["ab"]), LIMITS, "task 0 must be"),
    ("tasks a map", _submit(tasks={"a": 1}), LIMITS, "must be list"),
    ("max_attempts 0", _submit(max_attempts=0), LIMITS, "max_attempts"),
    ("max_attempts negative", _submit(max_attempts=-1), LIMITS, "max_attempts"),
    ("empty job id", _submit(job_id=""), LIMITS, "job id"),
    ("job id too long", _submit(job_id="j" * 9), Limits(max_name_chars=8), "1..8"),
    ("job id with newline", _submit(job_id="a\nb"), LIMITS, "printable"),
    ("empty job name", _submit(name=""), LIMITS, "job name"),
    ("handler with control char", _submit(handler="h\x00"), LIMITS, "handler"),
    ("priority a bool", _submit(priority=False), LIMITS, "must be int"),
    ("unknown job option", _submit(options={"retries": 3}), LIMITS,
     "unknown job option 'retries'"),
    ("timeout_s zero", _submit(options={"timeout_s": 0}), LIMITS, "timeout_s=0"),
    ("timeout_s a str", _submit(options={"timeout_s": "1m"}), LIMITS, "timeout_s='1m'"),
    ("timeout_s a bool", _submit(options={"timeout_s": True}), LIMITS, "timeout_s=True"),
    ("executor unknown", _submit(options={"executor": "gpu"}), LIMITS, "executor='gpu'"),
    ("options not a map", _submit(options=[]), LIMITS, "must be map"),
    ("record too large", _submit(tasks=[["x" * 200, {}]]), Limits(max_record_bytes=100),
     "limit is 100"),
    # workers
    ("zero slots", r.WorkerRegister("w", "addr", 0, 0), LIMITS, "at least one slot"),
    ("negative slots", r.WorkerRegister("w", "addr", -1, 0), LIMITS, "at least one slot"),
    ("empty worker id", r.WorkerRegister("", "addr", 1, 0), LIMITS, "worker id"),
    ("lost: empty worker id", r.WorkerLost("", "why", 0), LIMITS, "worker id"),
    ("leave: worker id not printable", r.WorkerLeave("w\x1b", 0), LIMITS, "worker id"),
    # task reports
    ("progress below 0", r.TaskProgress("j", 0, 1, -0.1, {}, 0), LIMITS, "within 0..1"),
    ("progress above 1", r.TaskProgress("j", 0, 1, 1.0001, {}, 0), LIMITS, "within 0..1"),
    ("progress 2 as int", r.TaskProgress("j", 0, 1, 2, {}, 0), LIMITS, "within 0..1"),
    ("progress nan", r.TaskProgress("j", 0, 1, float("nan"), {}, 0), LIMITS, "within 0..1"),
    ("counter value a str", r.TaskProgress("j", 0, 1, 0.5, {"a": "x"}, 0), LIMITS,
     "counters"),
    ("counter value a bool", r.TaskProgress("j", 0, 1, 0.5, {"a": True}, 0), LIMITS,
     "counters"),
    ("counter name an int", r.TaskProgress("j", 0, 1, 0.5, {1: 2}, 0), LIMITS, "counters"),
    ("counter value nil", r.TaskProgress("j", 0, 1, 0.5, {"a": None}, 0), LIMITS, "counters"),
    ("ok not a bool", r.TaskFinish("j", 0, 1, 1, None, 0), LIMITS, "must be bool"),
    # what cannot be encoded must be refused here, not fail in apply or in the journal
    ("now_ms beyond 64 bits", r.TaskAssign("j", 0, "w", 1, 2**64), LIMITS, "cannot be encoded"),
    ("expected beyond 64 bits", r.Put("/a", encode(1), 2**64), LIMITS, "cannot be encoded"),
    ("priority beyond 64 bits", _submit(priority=-(2**63) - 1), LIMITS, "cannot be encoded"),
    ("counter beyond 64 bits", r.TaskProgress("j", 0, 1, 0.5, {"n": 2**70}, 0), LIMITS,
     "cannot be encoded"),
    ("task input not encodable", _submit(tasks=[[object(), {}]]), LIMITS, "cannot be encoded"),
    ("task params not encodable", _submit(tasks=[["i", {"s": {1}}]]), LIMITS,
     "cannot be encoded"),
    ("outcome not encodable", r.TaskFinish("j", 0, 1, True, object(), 0), LIMITS,
     "cannot be encoded"),
    ("lone surrogate in a reason", r.JobCancel("j", "\ud800", 0), LIMITS, "cannot be encoded"),
    ("lone surrogate in an address", r.WorkerRegister("w", "\udfff", 1, 0), LIMITS,
     "cannot be encoded"),
]


@pytest.mark.parametrize("rec,limits,match", [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_admission_refuses(rec, limits, match):
    with pytest.raises(InvalidRecord, match=match):
        r.check_admission(rec, limits)


def test_admission_limits_are_inclusive():
    assert r.check_admission(r.Put("/abcdefg", encode(1)), Limits(max_key_chars=8))
    value = encode("x" * 5)
    assert r.check_admission(r.Put("/a", value), Limits(max_value_bytes=len(value)))
    three = r.Multi(tuple(r.Check(f"/k{i}", 0) for i in range(3)))
    assert r.check_admission(three, Limits(max_multi_ops=3))
    big = _submit(tasks=[["x" * 50, {}]])
    size = len(r.encode_record(big))
    assert r.check_admission(big, Limits(max_record_bytes=size))
    with pytest.raises(InvalidRecord, match=f"record is {size} bytes"):
        r.check_admission(big, Limits(max_record_bytes=size - 1))
    for progress in (0, 0.0, 1, 1.0):
        assert r.check_admission(r.TaskProgress("j", 0, 1, progress, {}, 0), LIMITS)


def test_admission_does_not_apply_to_decoding():
    # A record admitted under a larger limit must still decode (and replay) after the limit
    # is lowered: decoding checks shapes and types only.
    rec = r.Put("/" + "k" * 50, encode("v" * 100))
    with pytest.raises(InvalidRecord):
        r.check_admission(rec, Limits(max_key_chars=10, max_value_bytes=10))
    assert r.decode_record(r.encode_record(rec)) == rec


def test_a_wire_mutation_becomes_the_record_of_its_kind():
    """A PUT/MERGE/DELETE/MULTI request becomes the record [op, *args]; every other wire
    operation is answered by the master's own code, whatever number it has."""
    from mwcluster.wire.protocol import RECORD_MUTATIONS, Op

    samples = {Op.PUT: ["/a", encode(1), None], Op.MERGE: ["/a", encode({"x": 1}), None],
               Op.DELETE: ["/a", False, None], Op.MULTI: [[[int(r.RecordKind.CHECK), "/a", 0]]]}
    for op, kind in RECORD_MUTATIONS.items():
        rec = r.from_wire([int(op), *samples[op]])
        assert type(rec).CODE is kind
