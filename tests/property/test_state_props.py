"""Property tests of the state machine: random record sequences, replay and snapshot equivalence.

Records are drawn over a small key space (so CAS failures, NotEmpty, subtree deletes and
failing multis are common) and over a few jobs and workers. Task records are drawn as steps
that are turned into records against the current state: usually they name a task in the
right state at the attempt the state expects (so tasks really run, retry, fail and finish),
sometimes any task at any attempt (so stale and wrong reports are tried too). As the master
would, a record that apply refuses is dropped and never logged. Then:

1. `validate()` is empty after every accepted record, and a refused one changes nothing;
2. replaying the accepted records, decoded from their journal encoding, into a fresh State
   gives the same digest and the same image bytes;
3. for a random k, loading the image of the state after k accepted records and applying the
   rest gives the same image bytes and digest as replaying everything, and the same table of
   recent requests (the image carries the table at k; the rest is remembered on top);
4. every record round-trips through encode_record / decode_record.

The steps are one list drawn up front (not drawn one by one while the state evolves): a
failing sequence then shrinks by deleting list elements, which is many times faster.
"""

from __future__ import annotations

from typing import NamedTuple

import msgpack
from helpers import deletes, merges, multis, noops, puts, small_values
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from mwcluster.core import records as r
from mwcluster.core.jobs import ACTIVE_TASK, TaskState, WorkerState
from mwcluster.core.limits import Limits
from mwcluster.core.recent import RecentRequests
from mwcluster.core.state import State
from mwcluster.errors import ApplyError

JOB_IDS = ["j0", "j1", "j2", "j3"]
WORKERS = ["w0", "w1", "w2"]
MAX_TASKS = 3
LIMITS = Limits()
RECENT_LIMIT = 16        # small: the table's two generations turn over within a sequence

# One bug reported (and shrunk) at a time: shrinking several distinct failures of a long
# sequence takes minutes.
SETTINGS = settings(max_examples=100, deadline=None, report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- job and worker records (now_ms is filled in when the step is applied) ----------------

job_ids = st.sampled_from(JOB_IDS)
worker_ids = st.sampled_from(WORKERS)
attempts = st.integers(1, 3)
one_task = st.tuples(small_values, st.sampled_from([{}, {"p": 1}])).map(list)
task_lists = st.builds(lambda count, tasks: tasks[:count],   # st.lists would favour 1 task
                       st.sampled_from([2, MAX_TASKS, 1]),
                       st.lists(one_task, min_size=MAX_TASKS, max_size=MAX_TASKS))
submits = st.builds(r.JobSubmit, job_ids, st.just("job"), st.just("mod:fn"),
                    st.integers(-1, 1), attempts, task_lists, st.just(0))
cancels = st.builds(r.JobCancel, job_ids, st.sampled_from(["", "stop"]), st.just(0))
job_deletes = st.builds(r.JobDelete, job_ids)
registers = st.builds(r.WorkerRegister, worker_ids, st.just("tcp://h:1"), st.integers(1, 2),
                      st.just(0))
losts = st.builds(r.WorkerLost, worker_ids, st.just("timeout"), st.just(0))
leaves = st.builds(r.WorkerLeave, worker_ids, st.just(0))

# "Usually": three times in four (st.booleans() would be half and half).
usually = st.sampled_from([True, True, True, False])
picks = st.integers(0, 255)   # an index (modulo) into what the state holds
outcomes = st.sampled_from([None, "boom", 7, {"out": ["s3://b/k"], "n": 3}])
counters = st.sampled_from([{}, {"rows": 10}, {"rows": 20, "ratio": 0.5}])
fractions = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1])


class TaskStep(NamedTuple):
    """A task record to be made against the state it is applied to."""

    kind: str                 # "assign", "progress", "finish", or "advance": the next
                              # plausible record for an unfinished task, whatever it is
    plausible_task: bool      # pick a task in the right state, or job_id/index as drawn
    task_pick: int
    job_id: str
    index: int
    plausible_attempt: bool   # the attempt the state expects, or `attempt` as drawn
    attempt: int
    plausible_worker: bool    # an active worker with a free slot, or `worker_id` as drawn
    worker_pick: int
    worker_id: str
    progress: float
    counters: dict
    ok: bool
    outcome: object


def task_steps(kind: str):
    return st.builds(TaskStep, st.just(kind), usually, picks, job_ids,
                     st.integers(0, MAX_TASKS - 1), usually, attempts, usually, picks,
                     worker_ids, fractions, counters, usually, outcomes)


NAMESPACE_STEPS = [puts, puts, puts, merges, merges, deletes, deletes, multis, multis, noops]
# Task steps outweigh the rest, so that tasks get through their lifecycle before a cancel or
# a lost worker cuts it short.
JOB_STEPS = ([submits, submits, cancels, job_deletes, registers, registers, losts, leaves]
             + [task_steps("advance")] * 8 + [task_steps("assign")] * 2
             + [task_steps("progress")] * 2 + [task_steps("finish")] * 2)
# Each run uses one mix: both kinds interleaved, or one kind alone (deeper job lifecycles).
MIXES = {"mixed": NAMESPACE_STEPS + JOB_STEPS, "namespace": NAMESPACE_STEPS, "jobs": JOB_STEPS}


def step_lists(mixes: list[str]):
    """Lists of steps of one of `mixes`, about 25 long on average.

    A list of short lists, flattened: plain st.lists averages a handful of elements, too few
    for a task to go through its lifecycle, and a length drawn first (flatmap) makes failing
    examples very slow to shrink, since no step could be deleted without changing it too.
    """
    per_mix = {mix: st.lists(st.lists(st.one_of(*MIXES[mix]), min_size=1, max_size=8),
                             max_size=12).map(lambda chunks: [s for c in chunks for s in c])
               for mix in mixes}
    return st.sampled_from(mixes).flatmap(per_mix.__getitem__)


_WANTED = {"assign": (TaskState.PENDING,), "progress": ACTIVE_TASK, "finish": ACTIVE_TASK,
           "advance": (TaskState.PENDING, *ACTIVE_TASK)}


def _make_task_record(step: TaskStep, state: State, now_ms: int) -> r.Record:
    wanted = _WANTED[step.kind]
    candidates = [(job_id, task.index) for job_id, job in state.jobs.jobs.items()
                  for task in job.tasks if task.state in wanted]
    kind = step.kind
    if kind == "advance":
        if not candidates:
            return r.Noop("nothing to advance")
        job_id, index = candidates[step.task_pick % len(candidates)]
        task = state.jobs.jobs[job_id].tasks[index]
        if task.state is TaskState.PENDING:
            step = step._replace(plausible_attempt=True, plausible_worker=True)
            kind = "assign"
        else:
            step = step._replace(plausible_attempt=True)
            kind = "finish" if step.plausible_worker else "progress"
    elif step.plausible_task and candidates:
        job_id, index = candidates[step.task_pick % len(candidates)]
    else:
        job_id, index = step.job_id, step.index
    attempt = step.attempt
    job = state.jobs.jobs.get(job_id)
    if step.plausible_attempt and job is not None and index < len(job.tasks):
        attempt = job.tasks[index].attempt + (kind == "assign")
    if kind == "assign":
        free = [w.worker_id for w in state.jobs.workers.values()
                if w.state is WorkerState.ACTIVE and len(w.running) < w.slots]
        worker_id = (free[step.worker_pick % len(free)] if step.plausible_worker and free
                     else step.worker_id)
        return r.TaskAssign(job_id, index, worker_id, attempt, now_ms)
    if kind == "progress":
        return r.TaskProgress(job_id, index, attempt, step.progress, step.counters, now_ms)
    return r.TaskFinish(job_id, index, attempt, step.ok, step.outcome, now_ms)


def make_record(step, state: State, now_ms: int) -> r.Record:
    if type(step) is TaskStep:
        return _make_task_record(step, state, now_ms)
    if "now_ms" in type(step)._fields:
        return step._replace(now_ms=now_ms)
    return step


# --- helpers -------------------------------------------------------------------------------

def replay(records, state: State | None = None, recent: RecentRequests | None = None
           ) -> State:
    """Apply the records; with `recent`, remember each under an origin made from its txid,
    as the master does for a client's request."""
    state = state or State()
    for rec in records:
        txid = state.txid + 1
        result = state.apply(txid, rec)
        if recent is not None:
            recent.remember((b"client-%d" % (txid % 3), txid), txid, result)
    return state


def wire_items(recent: RecentRequests) -> list:
    """The table's entries with each result as the wire carries it (a tuple is a list)."""
    return [(origin, txid, msgpack.packb(result)) for origin, (txid, result) in recent.items()]


def assert_same_image(got: bytes, expected: bytes) -> None:
    # Report the first differing offset: a full diff of two images is slow to compute on
    # every failing example while hypothesis shrinks.
    if got != expected:
        at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
                  min(len(got), len(expected)))
        raise AssertionError(f"images differ from byte {at}: {got[at - 20:at + 40]!r} != "
                             f"{expected[at - 20:at + 40]!r}")


def run(steps, checked_apply, fingerprint):
    """Apply the steps' records as the master would; return (state, accepted, tried)."""
    state = State()
    accepted: list[r.Record] = []
    tried: list[r.Record] = []
    for number, step in enumerate(steps):
        rec = make_record(step, state, 1000 + 10 * number)
        note(f"record {number}: {rec!r}")
        tried.append(rec)
        r.check_admission(rec, LIMITS)   # every drawn record is admissible
        before = fingerprint(state)
        try:
            result = checked_apply(state, rec)    # asserts validate() == [] after the apply
        except ApplyError as exc:
            assert fingerprint(state) == before, f"refused {rec!r} changed the state"
            event(f"refused: {type(exc).__name__}")
            continue
        accepted.append(rec)
        event(f"accepted: {type(rec).__name__}")
        if type(rec) is r.TaskFinish:
            event(f"a task finish left the task {result}, "
                  f"the job {state.jobs.jobs[rec.job_id].state.value}")
    return state, accepted, tried


# --- the properties ------------------------------------------------------------------------

@SETTINGS
@given(steps=step_lists(["mixed", "jobs"]), k_pick=st.integers(0, 100))
def test_replay_and_snapshot_plus_replay_equal_the_live_state(steps, k_pick, checked_apply,
                                                             fingerprint):
    state, accepted, tried = run(steps, checked_apply, fingerprint)
    image = state.image_bytes()
    assert state.txid == len(accepted)

    # (4) every record round-trips through its journal encoding
    decoded = [r.decode_record(r.encode_record(rec)) for rec in tried]
    assert decoded == tried
    assert [type(d) for d in decoded] == [type(rec) for rec in tried]

    # (2) journal replay: the decoded records, applied again, rebuild the same state
    replayed = replay([r.decode_record(r.encode_record(rec)) for rec in accepted])
    assert replayed.digest == state.digest
    assert_same_image(replayed.image_bytes(), image)

    # (3) snapshot at k + replay of the rest == replay of everything
    k = min(k_pick, len(accepted))
    note(f"snapshot after {k} of {len(accepted)} accepted records")
    live_recent = RecentRequests(RECENT_LIMIT)
    replay(accepted, recent=live_recent)
    at_k = RecentRequests(RECENT_LIMIT)
    at_k_state = replay(accepted[:k], recent=at_k)
    restored_recent = RecentRequests(RECENT_LIMIT)
    restored = State.from_image(at_k_state.image_chunks(at_k), recent=restored_recent)
    assert restored.txid == k and restored.validate() == []
    assert wire_items(restored_recent) == wire_items(at_k)
    replay(accepted[k:], restored, restored_recent)
    assert restored.digest == state.digest
    assert_same_image(restored.image_bytes(), image)
    assert restored.validate() == []
    assert wire_items(restored_recent) == wire_items(live_recent)


@settings(SETTINGS, max_examples=60)
@given(steps=step_lists(["namespace", "mixed"]))
def test_listings_agree_with_the_keys(steps, checked_apply, fingerprint):
    state, _, _ = run(steps, checked_apply, fingerprint)
    all_keys = [key for key, _ in state.ns.items()]
    assert all_keys == sorted(all_keys)
    for path in ["", "/a", "/a/b", "/b", "/a-b", "/zz"]:
        below = [k for k in all_keys if k.startswith(path + "/")]
        names = state.ns.children(path)
        assert len(names) == len(set(names)), f"children({path!r}) repeats a name: {names}"
        assert set(names) == {k[len(path) + 1:].split("/")[0] for k in below}
        assert state.ns.count_below(path) == len(below)
    for prefix in ["/a", "/a/", "/b", ""]:
        assert state.ns.list_prefix(prefix) == [k for k in all_keys if k.startswith(prefix)]
