"""A job's compact tasks (core/tasks.py): the submit's digest equals the per-task hashes, a
task gets an object only when a record changes it (reads do not keep one), the garbage
collector is not handed an object per task, and the pending set behaves as a sorted set."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from mwcluster.core.digest import MASK
from mwcluster.core.job_stats import Sums
from mwcluster.core.jobs import TaskState
from mwcluster.core.records import JobCancel, JobSubmit, TaskAssign, WorkerRegister
from mwcluster.core.state import State
from mwcluster.core.tasks import PendingSet, Task, submitted
from mwcluster.errors import InvalidRecord

# values as msgpack gives them back (lists, str keys), which is what records hold after a
# decode; large and negative integers and floats change the encoding's length
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(
    allow_nan=False), st.text(max_size=40), st.binary(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)
pairs = st.lists(st.tuples(values, st.dictionaries(st.text(max_size=8), values, max_size=3))
                 .map(list), max_size=300)


def _fresh_sum(job_id: str, task_pairs: list) -> int:
    return sum(Task(job_id, i, inp, par).hash() for i, (inp, par) in enumerate(task_pairs)) \
        & MASK


@settings(max_examples=60, deadline=None)
@given(job_id=st.text(min_size=1, max_size=20), task_pairs=pairs)
def test_the_submitted_digest_is_the_sum_of_the_fresh_tasks_hashes(job_id, task_pairs):
    tasks, digest = submitted(job_id, task_pairs)
    assert digest == _fresh_sum(job_id, task_pairs)
    assert len(tasks) == len(task_pairs) and tasks.validate() == []
    for i, (inp, par) in enumerate(task_pairs):
        assert tasks.at(i).to_dict() == Task(job_id, i, inp, par).to_dict()


def test_the_digest_holds_past_every_index_width():
    task_pairs = [[i, {}] for i in range(70_000)]      # indexes of 1, 2, 3 and 5 bytes
    assert submitted("big", task_pairs)[1] == _fresh_sum("big", task_pairs)


def test_a_malformed_pair_is_refused_before_anything_changes(state, checked_apply,
                                                              assert_refused):
    checked_apply(state, WorkerRegister("w", "", 1, 0))
    for bad in ([[1, {}], [2]], [[1, {}], [2, {}, 3]], [[1, {}], "ab"]):
        assert_refused(state, JobSubmit("j", "j", "h", 0, 1, bad, 0), InvalidRecord)


def test_a_task_gets_its_object_only_when_a_record_changes_it(state, checked_apply):
    checked_apply(state, WorkerRegister("w", "", 2, 0))
    checked_apply(state, JobSubmit("j", "j", "h", 0, 1, [[f"in-{i}", {"i": i}]
                                                         for i in range(1000)], 0))
    job = state.jobs.jobs["j"]
    assert job.tasks.untouched() == 1000
    # reads keep nothing: iteration, slices, at(), the summary, the kept sums, the image
    assert [t.index for t in job.tasks] == list(range(1000))
    assert [t.input for t in job.tasks[10:13]] == ["in-10", "in-11", "in-12"]
    assert job.tasks.at(7).params == {"i": 7} and job.tasks.at(7).state is TaskState.PENDING
    assert job.summary()["progress"] == 0.0 and Sums(job).started_ms is None
    loaded = State.from_image(state.image_chunks())
    assert loaded.digest == state.digest and loaded.validate() == []
    assert job.tasks.untouched() == 1000
    checked_apply(state, TaskAssign("j", 500, "w", 1, 1))
    assert job.tasks.untouched() == 999
    assert job.tasks[500] is job.tasks[500] is job.tasks.at(500)     # kept from now on
    assert job.tasks[500].state is TaskState.ASSIGNED
    checked_apply(state, JobCancel("j", "stop", 2))      # validate: digest, counts, pending
    assert job.tasks.untouched() == 0
    assert {t.state for t in job.tasks} == {TaskState.CANCELLED}
    expected = Task("j", 5, "in-5", {"i": 5})
    expected.state, expected.finished_ms = TaskState.CANCELLED, 2
    assert job.tasks[5].to_dict() == expected.to_dict()
    assert job.tasks[500].to_dict()["worker"] == "w" and job.tasks[500].finished_ms == 2


def test_a_submit_leaves_no_object_per_task_for_the_garbage_collector(state, checked_apply):
    rec = JobSubmit("j", "j", "h", 0, 1, [[i, {"p": "x"}] for i in range(20_000)], 0)
    gc.collect()
    before = len(gc.get_objects())
    checked_apply(state, rec)
    del rec
    gc.collect()
    assert len(gc.get_objects()) - before < 100       # an object per task would be 20,000


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "discard", "iter"]),
                              st.integers(0, 70)), max_size=60),
       size=st.integers(0, 40), pending=st.booleans())
def test_the_pending_set_behaves_as_a_sorted_set(ops, size, pending):
    got = PendingSet(size, pending)
    model = set(range(size)) if pending else set()
    for op, index in ops:
        if op == "add":
            got.add(index)
            model.add(index)
        elif op == "discard":
            got.discard(index)
            model.discard(index)
        else:   # a partial walk moves the lowest-index hint: it must stay right
            walk = iter(got)
            assert [next(walk, None) for _ in range(index % 3)] == \
                (sorted(model) + [None] * 3)[:index % 3]
        assert list(got) == sorted(model) and len(got) == len(model)
        assert bool(got) == bool(model) and (index in got) == (index in model)


def test_walks_and_rows_across_decoding_chunks_match_the_task_objects(state, checked_apply):
    checked_apply(state, WorkerRegister("w", "", 10, 0))
    checked_apply(state, JobSubmit("j", "j", "h", 0, 2, [[[i, "x"], {"i": i}]
                                                         for i in range(3000)], 0))
    for index in (0, 1023, 1024, 2047, 2999):
        checked_apply(state, TaskAssign("j", index, "w", 1, 1))
    tasks = state.jobs.jobs["j"].tasks
    walked = list(tasks)
    assert [t.index for t in walked] == list(range(3000))
    assert [t.input for t in walked[1020:1030]] == [[i, "x"] for i in range(1020, 1030)]
    assert all(walked[i] is tasks[i] for i in (0, 1023, 1024, 2047, 2999))
    assert [t.to_dict() for t in tasks[1000:1100:7]] == \
        [tasks.at(i).to_dict() for i in range(1000, 1100, 7)]
    assert tasks.rows() == [t.row() for t in walked]
    assert tasks.untouched() == 2995
