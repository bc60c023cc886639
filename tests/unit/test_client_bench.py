"""`mwcluster bench` against the in-test stub: the run, its JSON, and bounded failure."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import Stub

from mwcluster import errors
from mwcluster.cli import main
from mwcluster.client.bench import BenchConfig, _plan, percentile, run
from mwcluster.wire.protocol import ErrorCode, Op, encode_error

REQUIRED = {"ops_per_s", "p50_ms", "p99_ms", "p999_ms", "errors", "clients", "inflight", "ops",
            "durability", "mix", "seconds", "client_cpu_us"}


def test_bench_json_through_the_cli():
    stub = Stub()
    try:
        r = CliRunner().invoke(main, ["bench", "--master", stub.endpoint, "--clients", "2",
                                      "--inflight", "8", "--ops", "600", "--mix",
                                      "put=90,get=10", "--keys", "20", "--json"],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        result = json.loads(r.output)
        assert REQUIRED <= result.keys()
        assert result["errors"] == 0 and result["completed"] == 600
        assert result["ops_per_s"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
        assert result["p99_ms"] <= result["p999_ms"] <= result["max_ms"]
        assert result["mix"] == "put=90,get=10" and result["durability"] == "async"
        assert result["client_cpu_us"] > 0     # 600 requests cost the clients some CPU
        assert result["master_cpu_us"] is None  # the stub's status says nothing of its CPU
        ops = [req.op for _, req in stub.seen()]
        assert ops.count(1) + ops.count(100) == 600       # plus the warm-up pings
        assert {req.durability for _, req in stub.seen() if req.op == 1} == {1}
    finally:
        stub.close()


def test_bench_table_output():
    stub = Stub()
    try:
        r = CliRunner().invoke(main, ["bench", "--master", stub.endpoint, "--clients", "1",
                                      "--ops", "50", "--durability", "sync"])
        assert r.exit_code == 0, r.output
        assert "ops/s" in r.output and "sync" in r.output
    finally:
        stub.close()


def test_bench_asks_for_replicated_durability_by_its_code():
    stub = Stub()
    try:
        r = CliRunner().invoke(main, ["bench", "--master", stub.endpoint, "--clients", "1",
                                      "--ops", "20", "--durability", "replicated", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["durability"] == "replicated"
        assert {req.durability for _, req in stub.seen() if req.op == 1} == {3}
    finally:
        stub.close()


def test_a_master_that_stops_answering_is_counted_as_errors_within_the_timeout():
    answered = []

    def handler(req, identity):
        if req.op == 110:        # the run's STATUS before and after (the master's CPU)
            return stub.answer(req)
        if req.op == 111 or len(answered) < 10:
            answered.append(req.request_id)
            return stub.answer(req)
        return []

    stub = Stub(handler)
    try:
        result = run(BenchConfig(master=stub.endpoint, clients=1, inflight=4, ops=100,
                                 timeout_s=0.3))
        assert result["completed"] == 10 - 1        # the first answer was the warm-up ping
        assert result["errors"] == result["timed_out"] == 4
    finally:
        stub.close()


def test_no_master_fails_with_a_message():
    with pytest.raises(errors.MwclusterError, match="no answer from the master"):
        run(BenchConfig(master="tcp://127.0.0.1:1", clients=1, ops=10, timeout_s=0.1,
                        connect_timeout_s=0.3))


def test_bad_mix_is_a_usage_error():
    r = CliRunner().invoke(main, ["bench", "--mix", "put=1,drop=2"])
    assert r.exit_code == 2 and "drop=2" in r.output


def test_plan_follows_the_weights_and_percentiles():
    plan = _plan(BenchConfig(mix={"put": 90, "get": 10}), 0, 10_000)
    assert 8500 < plan.count(1) < 9500 and plan.count(1) + plan.count(100) == 10_000
    assert _plan(BenchConfig(mix={"put": 1}), 0, 5) == bytes([1] * 5)
    assert percentile(list(range(1, 1001)), 50) == 500
    assert percentile(list(range(1, 1001)), 99.9) == 999
    assert percentile([], 50) == 0


def test_bench_batch_sends_k_requests_per_message_and_reports_them():
    stub = Stub()
    try:
        r = CliRunner().invoke(main, ["bench", "--master", stub.endpoint, "--clients", "2",
                                      "--inflight", "40", "--batch", "16", "--ops", "500",
                                      "--mix", "put=80,get=20", "--keys", "30", "--json"],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        result = json.loads(r.output)
        assert REQUIRED <= result.keys()
        assert result["errors"] == 0 and result["completed"] == 500
        assert result["batch"] == 16 and result["messages"] >= 500 // 16
        assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["p999_ms"]
        batches = [req for _, req in stub.seen() if req.op == Op.BATCH]
        assert len(batches) == result["messages"]
        assert all(1 <= len(b.args) <= 16 for b in batches)
        subs = [sub for b in batches for sub in b.args]
        assert len(subs) == 500 and {sub[1] for sub in subs} == {1, 100}
        assert {sub[2] for sub in subs if sub[1] == 1} == {1}    # async puts
    finally:
        stub.close()


def test_bench_batch_counts_sub_request_errors_and_refused_batches():
    def handler(req, identity):
        if req.op == Op.BATCH and len(req.args) == 3:     # the last, short batch of each
            return [encode_error(req.request_id, 7, ErrorCode.TOO_LARGE, "refused")]
        return stub.answer(req)

    stub = Stub(handler)
    try:
        result = run(BenchConfig(master=stub.endpoint, clients=1, inflight=8, batch=5,
                                 ops=13, mix={"put": 1}, timeout_s=5))
        assert result["completed"] == 13 and result["errors"] == 3
        assert result["messages"] == 3
    finally:
        stub.close()


def test_bench_batch_is_bounded_by_the_masters_limit():
    with pytest.raises(ValueError, match="batch"):
        run(BenchConfig(master="tcp://127.0.0.1:1", batch=2000))
    r = CliRunner().invoke(main, ["bench", "--batch", "0"])
    assert r.exit_code == 2 and "--batch" in r.output
