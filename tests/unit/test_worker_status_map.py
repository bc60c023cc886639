"""A worker's status map from its machine (core/worker_status.py), with explicit times: what
the owner thread copies, and the ages the readers compute from it."""

from __future__ import annotations

import copy

from mwcluster.core import worker_status as ws
from mwcluster.core.worker_machine import WorkerMachine


def shell(**over) -> ws.Shell:
    base = dict(master_endpoint="tcp://127.0.0.1:5550", started_at_ms=1_000,
                last_exchange_at_ms=None, requests_timed_out=0, requests_refused=0,
                status_endpoint="tcp://127.0.0.1:5560", metrics_port=None, pid=42)
    base.update(over)
    return ws.Shell(**base)


def running_machine() -> WorkerMachine:
    m = WorkerMachine("w1", 3, heartbeat_ms=1000, progress_interval_ms=500)
    m.start(1_000)
    m.on_registered({"epoch": 7, "tasks": []}, 1_100)
    m.on_assignments([("job-1", 0, 1, "wc", "in-0", {}), ("job-1", 4, 2, "wc", "in-4", {})],
                     1_200)
    m.on_progress("job-1", 4, 2, 0.25, {"rows": 10}, 1_300)
    m.on_progress("job-1", 4, 2, 0.5, {"rows": 20}, 1_400)     # coalesced (held)
    return m


def test_the_snapshot_holds_registration_slots_tasks_and_counters():
    m = running_machine()
    snap = ws.snapshot(m, shell(last_exchange_at_ms=1_250, requests_timed_out=3), 1_500)
    assert snap["worker_id"] == "w1" and snap["role"] == "worker" and snap["pid"] == 42
    assert snap["registered"] and not snap["registering"] and not snap["stopping"]
    assert snap["epoch"] == 7 and snap["master_endpoint"] == "tcp://127.0.0.1:5550"
    assert (snap["slots"], snap["free_slots"], snap["tasks_running"]) == (3, 1, 2)
    assert snap["tasks_started"] == 2 and snap["tasks_succeeded"] == 0
    assert snap["progress_sent"] == 1 and snap["progress_coalesced"] == 0
    assert snap["registrations"] == 1 and snap["requests_timed_out"] == 3
    first, second = snap["tasks"]
    assert (first["job_id"], first["index"], first["attempt"]) == ("job-1", 0, 1)
    assert first["progress"] is None and first["counters"] == {}
    assert (second["index"], second["attempt"], second["handler"]) == (4, 2, "wc")
    assert second["progress"] == 0.5 and second["counters"] == {"rows": 20}


def test_render_turns_the_times_into_ages_and_leaves_the_snapshot_alone():
    m = running_machine()
    snap = ws.snapshot(m, shell(last_exchange_at_ms=1_250), 1_500)
    before = copy.deepcopy(snap)
    out = ws.render(snap, 3_500)
    assert snap == before
    assert out["uptime_s"] == 2.5 and out["last_exchange_age_s"] == 2.25
    assert out["snapshot_age_s"] == 2.0
    first, second = out["tasks"]
    assert first["running_s"] == 2.3 and first["last_progress_age_s"] is None
    assert second["running_s"] == 2.3 and second["last_progress_age_s"] == 2.1
    assert not any(k.endswith("_at_ms") for k in out)
    assert not any(k.endswith("_at_ms") for task in out["tasks"] for k in task)
    # later readers see older ages from the same snapshot, never a changed one
    assert ws.render(snap, 4_500)["uptime_s"] == 3.5


def test_the_machine_moving_on_does_not_change_a_published_snapshot():
    m = running_machine()
    snap = ws.snapshot(m, shell(), 1_500)
    before = copy.deepcopy(snap)
    m.on_progress("job-1", 4, 2, 0.75, {"rows": 30}, 2_000)
    m.on_done("job-1", 0, 1, True, "r", 2_100)
    m.on_finish_reply("job-1", 0, 1, "succeeded", 2_200)
    assert snap == before
    after = ws.snapshot(m, shell(), 2_300)
    assert after["tasks_succeeded"] == 1 and after["tasks_running"] == 1
    assert after["tasks"][0]["progress"] == 0.75


def test_counters_of_drops_failures_reconnects_and_an_abandoning_stop():
    m = running_machine()
    m.on_done("job-1", 0, 1, False, "boom", 2_000)
    m.on_heartbeat_reply({"known": True, "cancel": [["job-1", 4, 2]], "epoch": 7}, 2_100)
    assert m.on_unreachable("Heartbeat", 2_200)
    m.on_registered({"epoch": 8, "tasks": []}, 2_300)
    m.on_assignments([("job-2", 0, 1, "wc", None, {})], 2_400)
    m.request_stop(2_500, 0)
    snap = ws.render(ws.snapshot(m, shell(), 2_600), 2_600)
    assert snap["tasks_failed"] == 1 and snap["tasks_dropped"] == 1
    assert snap["reconnects"] == 1 and snap["registrations"] == 2 and snap["epoch"] == 8
    assert snap["tasks_abandoned"] == 1 and snap["stopping"]
    assert snap["dropped_handlers_running"] == 1      # the cancelled handler has not returned


def test_before_the_first_snapshot_a_reader_gets_a_starting_status():
    assert ws.render({}, 10) == {"role": "worker", "starting": True}
