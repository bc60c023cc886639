"""The worker's decisions, driven in memory with a fake clock (no sockets, no threads)."""

from __future__ import annotations

from mwcluster.core.worker_machine import (Drop, Exit, Heartbeat, Leave, Note, Register,
                                           RequestTasks, SendFinish, SendProgress, Start,
                                           WorkerMachine)


def only(instructions, kind):
    return [i for i in instructions if isinstance(i, kind)]


def registered(slots=2, now=0, tasks=(), **kwargs) -> WorkerMachine:
    m = WorkerMachine("w1", slots, **kwargs)
    assert only(m.start(now), Register) == [Register(slots)]
    m.on_registered({"epoch": 1, "tasks": list(tasks)}, now)
    return m


def assign(m, now, *items):
    return m.on_assignments([(job, index, attempt, "h", {"i": index}, {})
                             for job, index, attempt in items], now)


def test_start_registers_then_asks_for_as_many_tasks_as_free_slots():
    m = WorkerMachine("w1", 3)
    assert only(m.start(0), Register) == [Register(3)]
    out = m.on_registered({"epoch": 4, "tasks": [], "heartbeat_ms": 1000,
                           "worker_timeout_ms": 10_000}, 0)
    assert only(out, RequestTasks) == [RequestTasks(3)]
    assert m.epoch == 4 and m.registered


def test_no_second_request_until_the_first_is_answered_and_idle_pause_after_empty():
    m = WorkerMachine("w1", 2, idle_poll_ms=200, heartbeat_ms=10_000)
    m.start(0)
    m.on_registered({"epoch": 1, "tasks": []}, 0)
    assert only(m.tick(50), RequestTasks) == []          # the first is still unanswered
    assert m.on_assignments([], 60) == []
    assert only(m.tick(259), RequestTasks) == []         # the idle pause
    assert only(m.tick(260), RequestTasks) == [RequestTasks(2)]


def test_assignments_start_tasks_and_fill_slots():
    m = registered(slots=2, heartbeat_ms=10_000)
    out = assign(m, 10, ("j", 0, 1), ("j", 1, 1))
    assert only(out, Start) == [Start("j", 0, 1, "h", {"i": 0}, {}),
                                Start("j", 1, 1, "h", {"i": 1}, {})]
    assert m.free_slots() == 0
    assert only(m.tick(10_000 - 1), RequestTasks) == []   # no slot free


def test_a_repeated_assignment_is_not_started_twice():
    m = registered(slots=2)
    assign(m, 0, ("j", 0, 1))
    assert only(assign(m, 1, ("j", 0, 1)), Start) == []


def test_progress_is_coalesced_to_one_report_per_interval_with_the_newest_values():
    m = registered(slots=1, progress_interval_ms=500, heartbeat_ms=100_000)
    assign(m, 0, ("j", 0, 1))
    first = m.on_progress("j", 0, 1, 0.1, {"rows": 1}, 0)
    assert first == [SendProgress("j", 0, 1, 0.1, {"rows": 1})]   # the first goes at once
    sent = []
    for t in range(1, 1500):                                      # a report every ms
        sent += m.on_progress("j", 0, 1, t / 1500, {"rows": t}, t)
        sent += only(m.tick(t), SendProgress)
    times = [s.counters["rows"] for s in sent]
    assert times == [500, 1000]             # one per 500 ms, each with the newest values
    assert m.counters["progress_coalesced"] > 1000
    assert only(m.tick(1999), SendProgress) == [SendProgress("j", 0, 1, 1499 / 1500,
                                                             {"rows": 1499})]
    assert only(m.tick(5000), SendProgress) == []                 # nothing new


def test_done_sends_the_finish_and_frees_the_slot_after_the_reply():
    m = registered(slots=1, heartbeat_ms=100_000)
    assign(m, 0, ("j", 0, 1))
    m.on_progress("j", 0, 1, 0.5, {}, 10)
    m.on_progress("j", 0, 1, 1.0, {"rows": 9}, 11)          # held by the coalescing
    out = m.on_done("j", 0, 1, True, {"words": 3}, 20)
    sends = [i for i in out if isinstance(i, (SendProgress, SendFinish))]
    assert sends == [SendProgress("j", 0, 1, 1.0, {"rows": 9}),   # the newest counters first
                     SendFinish("j", 0, 1, True, {"words": 3})]
    assert all(m.still_wanted(i) for i in sends)
    assert only(out, RequestTasks) == []             # the unreported finish holds the slot
    assert only(m.tick(30), SendProgress) == []       # progress after done is not sent
    out = m.on_finish_reply("j", 0, 1, "succeeded", 40)
    assert only(out, RequestTasks) == [RequestTasks(1)]


def test_a_failing_handler_reports_a_failure_with_its_message():
    m = registered(slots=1)
    assign(m, 0, ("j", 0, 1))
    out = m.on_done("j", 0, 1, False, "ValueError: bad shard", 5)
    assert only(out, SendFinish) == [SendFinish("j", 0, 1, False, "ValueError: bad shard")]
    assert m.counters["tasks_failed"] == 1


def test_a_stale_progress_reply_drops_the_task_and_later_reports_are_ignored():
    m = registered(slots=1, heartbeat_ms=100_000)
    assign(m, 0, ("j", 0, 1))
    out = m.on_progress_stale("j", 0, 1, "attempt 1 is not current", 10)
    assert only(out, Drop) == [Drop("j", 0, 1, "attempt 1 is not current")]
    assert m.on_progress("j", 0, 1, 0.9, {}, 2000) == []
    # The dropped handler still holds its slot until it returns; its result is discarded.
    assert m.free_slots() == 0
    out = m.on_done("j", 0, 1, True, "late", 3000)
    assert only(out, SendFinish) == [] and m.free_slots() == 1
    assert only(m.tick(3000), RequestTasks) == [RequestTasks(1)]


def test_heartbeat_carries_running_and_unreported_attempts_and_cancel_drops():
    m = registered(slots=3, heartbeat_ms=1000)
    assign(m, 0, ("a", 0, 1), ("a", 1, 2), ("b", 5, 1))
    m.on_done("a", 1, 2, True, 1, 10)                  # finished, reply not yet seen
    beats = only(m.tick(1000), Heartbeat)
    assert beats == [Heartbeat([["a", 0, 1], ["a", 1, 2], ["b", 5, 1]])]
    out = m.on_heartbeat_reply({"known": True, "epoch": 1,
                                "cancel": [["b", 5, 1], ["a", 1, 2]]}, 1001)
    assert only(out, Drop) == [Drop("b", 5, 1, "cancelled by the master")]
    assert ("a", 1) not in m.outbox                     # its result is discarded too
    assert only(m.tick(2000), Heartbeat) == [Heartbeat([["a", 0, 1]])]


def test_unknown_worker_in_a_heartbeat_reply_re_registers():
    m = registered()
    out = m.on_heartbeat_reply({"known": False, "epoch": 1, "cancel": []}, 5)
    assert only(out, Register) == [Register(2)] and not m.registered


def test_a_new_epoch_re_registers_and_reconciles_with_the_masters_list():
    m = registered(slots=3, heartbeat_ms=1000)
    assign(m, 0, ("j", 0, 1), ("j", 1, 1), ("j", 2, 1))
    m.on_progress("j", 0, 1, 0.4, {"rows": 4}, 10)
    m.on_done("j", 2, 1, True, "r2", 20)               # its finish got no answer yet
    out = m.on_heartbeat_reply({"known": True, "epoch": 2, "cancel": []}, 30)
    assert only(out, Register) == [Register(3)]
    # The master (restarted) still has j/0 and j/2 on this worker, not j/1; and j/7, which
    # this worker never heard of (it was restarted with the same id).
    out = m.on_registered({"epoch": 2, "tasks": [["j", 0, 1], ["j", 2, 1], ["j", 7, 3]]}, 40)
    assert only(out, Drop) == [Drop("j", 1, 1, "the master no longer has this attempt on "
                                               "this worker")]
    finishes = only(out, SendFinish)
    assert SendFinish("j", 2, 1, True, "r2") in finishes      # the unreported result, again
    assert [f for f in finishes if f.index == 7][0].ok is False   # so it goes back to pending
    assert only(out, SendProgress) == [SendProgress("j", 0, 1, 0.4, {"rows": 4})]  # again


def test_unreachable_master_registers_again_and_keeps_reporting_running_tasks():
    m = registered(slots=1, progress_interval_ms=100, heartbeat_ms=100_000)
    assign(m, 0, ("j", 0, 1))
    out = m.on_unreachable("TASK_PROGRESS", 10)
    assert only(out, Register) == [Register(1)]
    assert m.on_unreachable("TASK_PROGRESS", 11) == []   # one registration at a time
    assert m.on_progress("j", 0, 1, 0.7, {"rows": 7}, 20) == []   # held while disconnected
    assert m.tick(500) == []
    out = m.on_registered({"epoch": 1, "tasks": [["j", 0, 1]]}, 600)
    assert only(out, SendProgress) == [SendProgress("j", 0, 1, 0.7, {"rows": 7})]
    assert only(out, Drop) == []


def test_heartbeat_interval_never_exceeds_a_third_of_the_worker_timeout():
    m = WorkerMachine("w1", 1, heartbeat_ms=5000)
    m.start(0)
    m.on_registered({"epoch": 1, "tasks": [], "worker_timeout_ms": 3000}, 0)
    assert m.heartbeat_ms == 1000


def test_graceful_stop_waits_for_running_tasks_then_leaves():
    m = registered(slots=2, heartbeat_ms=100_000)
    assign(m, 0, ("j", 0, 1))
    out = m.request_stop(100, timeout_ms=5000)
    assert only(out, Leave) == [] and only(out, RequestTasks) == []
    m.on_done("j", 0, 1, True, 1, 200)
    assert only(m.tick(201), Leave) == []               # the finish is not yet reported
    out = m.on_finish_reply("j", 0, 1, "succeeded", 300)
    assert only(out, Leave) == [Leave()]
    assert only(m.on_left(301), Exit) == [Exit(0)]


def test_graceful_stop_abandons_running_tasks_at_the_deadline():
    m = registered(slots=2, heartbeat_ms=100_000)
    assign(m, 0, ("j", 0, 1), ("j", 1, 1))
    m.request_stop(0, timeout_ms=1000)
    assert only(m.tick(999), Leave) == []
    out = m.tick(1000)
    assert only(out, Leave) == [Leave()]
    assert any("abandoning 2" in n.message for n in only(out, Note))
    # their handlers are told to stop before the worker leaves (a process gets SIGTERM)
    assert only(out, Drop) == [Drop("j", 0, 1, "the worker is stopping"),
                               Drop("j", 1, 1, "the worker is stopping")]
    assert out.index(only(out, Drop)[-1]) < out.index(Leave())
    assert m.tick(1001) == []                           # leave once


def test_stop_while_the_master_is_unreachable_exits_without_leave():
    m = registered(slots=1)
    assign(m, 0, ("j", 0, 1))
    m.on_unreachable("HEARTBEAT", 5)
    out = m.request_stop(10, timeout_ms=0)
    assert only(out, Leave) == [] and only(out, Exit) == [Exit(0)]


def test_next_wakeup_covers_heartbeat_progress_and_requests():
    m = registered(slots=1, heartbeat_ms=1000, progress_interval_ms=300)
    assert m.next_wakeup_ms() == 1000           # the heartbeat; the first request is out
    assign(m, 0, ("j", 0, 1))
    m.on_progress("j", 0, 1, 0.1, {}, 100)
    m.on_progress("j", 0, 1, 0.2, {}, 150)
    assert m.next_wakeup_ms() == 400                    # the coalesced report
    m.tick(400)
    assert m.next_wakeup_ms() == 1000                   # the heartbeat


def test_the_masters_heartbeat_interval_is_used_unless_one_was_configured():
    m = WorkerMachine("w1", 1, heartbeat_ms=None)
    m.start(0)
    m.on_registered({"epoch": 1, "tasks": [], "heartbeat_ms": 250}, 0)
    assert m.heartbeat_ms == 250
    m = WorkerMachine("w1", 1, heartbeat_ms=400)
    m.start(0)
    m.on_registered({"epoch": 1, "tasks": [], "heartbeat_ms": 250}, 0)
    assert m.heartbeat_ms == 400


def test_instructions_made_stale_by_an_earlier_reply_of_their_batch_are_not_wanted():
    m = registered(slots=2, progress_interval_ms=100, heartbeat_ms=1000)
    assign(m, 0, ("j", 0, 1), ("j", 1, 1))
    m.on_progress("j", 0, 1, 0.1, {}, 0)
    m.on_progress("j", 0, 1, 0.2, {}, 50)                 # held
    m.on_done("j", 1, 1, True, "r", 60)
    batch = m.tick(1000)                                  # heartbeat, then the held report
    progress = only(batch, SendProgress)
    assert only(batch, Heartbeat) and progress
    assert all(m.still_wanted(i) for i in batch)
    # The heartbeat's reply says the worker is unknown: it registers again and the master
    # lists nothing, so both attempts are dropped; the rest of the batch must not be sent.
    m.on_heartbeat_reply({"known": False, "epoch": 1, "cancel": []}, 1001)
    m.on_registered({"epoch": 1, "tasks": []}, 1002)
    assert not any(m.still_wanted(i) for i in progress)
    assert not m.still_wanted(SendFinish("j", 1, 1, True, "r"))


def test_an_attempt_past_its_timeout_is_failed_and_its_handler_told_to_stop():
    m = registered(slots=1, heartbeat_ms=100_000, task_timeout_ms=500)
    assign(m, 0, ("j", 0, 1))
    assert m.next_wakeup_ms() <= 500                  # the owner wakes up for the deadline
    assert only(m.tick(499), Drop) == []
    out = m.tick(500)
    assert only(out, Drop) == [Drop("j", 0, 1, "timed out")]
    [finish] = only(out, SendFinish)
    assert (finish.ok, "timed out after 0.5 s" in finish.outcome) == (False, True)
    assert m.counters["tasks_timed_out"] == 1 and m.counters["tasks_failed"] == 1
    assert m.free_slots() == 0                        # the handler has not returned yet
    assert only(m.tick(600), Drop) == []              # failed once, not again
    m.on_finish_reply("j", 0, 1, "pending", 700)
    assert m.free_slots() == 0                        # ... it still holds the slot
    out = m.on_done("j", 0, 1, True, "late", 800)
    assert only(out, SendFinish) == [] and m.free_slots() == 1


def test_a_jobs_own_timeout_and_executor_hint_override_the_workers():
    m = registered(slots=3, heartbeat_ms=100_000, task_timeout_ms=10_000)
    out = m.on_assignments([("a", 0, 1, "h", None, {}, {"timeout_s": 0.2,
                                                         "executor": "thread"}),
                            ("b", 0, 1, "h", None, {}, {}),
                            ("c", 0, 1, "h", None, {})], 0)       # from a master before options
    assert [s.executor for s in only(out, Start)] == ["thread", "", ""]
    assert only(m.tick(200), Drop) == [Drop("a", 0, 1, "timed out")]
    assert only(m.tick(9_999), Drop) == []
    assert sorted(d.job_id for d in only(m.tick(10_000), Drop)) == ["b", "c"]


def test_a_timeout_while_unregistered_is_reported_after_registration():
    m = registered(slots=1, heartbeat_ms=100_000, task_timeout_ms=300)
    assign(m, 0, ("j", 0, 1))
    m.on_unreachable("Heartbeat", 100)
    assert m.next_wakeup_ms() == 300                  # deadlines count while unregistered
    out = m.tick(300)
    assert only(out, Drop) and not only(out, SendFinish)
    out = m.on_registered({"epoch": 1, "tasks": [["j", 0, 1]]}, 400)
    [finish] = only(out, SendFinish)
    assert not finish.ok and "timed out" in finish.outcome


def test_a_task_that_times_out_twice_here_holds_a_slot_per_handler_still_running():
    m = registered(slots=2, heartbeat_ms=100_000, task_timeout_ms=100)
    assign(m, 0, ("j", 0, 1))
    m.tick(100)                                         # attempt 1 times out, keeps running
    m.on_finish_reply("j", 0, 1, "pending", 110)
    assign(m, 120, ("j", 0, 2))                         # the master retries it here
    out = m.tick(220)
    assert only(out, Drop) == [Drop("j", 0, 2, "timed out")]
    m.on_finish_reply("j", 0, 2, "failed", 230)
    assert m.free_slots() == 0 and len(m.zombies) == 2  # two handlers still run
    assert only(m.on_done("j", 0, 1, True, None, 300), SendFinish) == []
    assert m.free_slots() == 1
    m.on_done("j", 0, 2, True, None, 310)
    assert m.free_slots() == 2


def test_a_sub_millisecond_timeout_is_still_a_limit():
    m = registered(slots=1, heartbeat_ms=100_000)
    m.on_assignments([("j", 0, 1, "h", None, {}, {"timeout_s": 0.0004})], 0)
    assert only(m.tick(1), Drop) == [Drop("j", 0, 1, "timed out")]
