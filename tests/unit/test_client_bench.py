"""`mwcluster bench` against the in-test stub: the run, its JSON, and bounded failure."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mwcluster import errors
from mwcluster.bench import BenchConfig, _plan, percentile, run
from mwcluster.cli import main
from test_client_socket import Stub

REQUIRED = {"ops_per_s", "p50_ms", "p99_ms", "p999_ms", "errors", "clients", "inflight", "ops",
            "durability", "mix", "seconds"}


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


def test_a_master_that_stops_answering_is_counted_as_errors_within_the_timeout():
    answered = []

    def handler(req, identity):
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
