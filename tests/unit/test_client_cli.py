"""The client commands (put, get, rm, ls, stat, status, bench) against the in-test stub."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import Stub
from hypothesis import given
from hypothesis import strategies as st

from mwcluster.cli import main
from mwcluster.cli.common import from_json, parse_value, to_json
from mwcluster.cli.status import format_status_value, status_rows


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def run(stub, *args, env=None):
    result = CliRunner().invoke(main, [*args, "--master", stub.endpoint, "--timeout", "2"],
                                env=env, catch_exceptions=False)
    return result


def test_put_get_stat_rm_ls(stub):
    r = run(stub, "put", "/a/b", '{"x": [1, 2]}')
    assert r.exit_code == 0 and r.output.strip() == "1"
    assert json.loads(run(stub, "get", "/a/b").output) == {"x": [1, 2]}
    assert run(stub, "put", "/a/s", "not json").exit_code == 0
    assert json.loads(run(stub, "get", "/a/s").output) == "not json"
    assert run(stub, "put", "/a/n", "17", "--sync").exit_code == 0
    assert stub.seen()[-1][1].durability == 2
    assert json.loads(run(stub, "get", "/a/n").output) == 17
    r = run(stub, "put", "/a/raw", '{"$bytes": "00ff"}')
    assert json.loads(run(stub, "get", "/a/raw").output) == {"$bytes": "00ff"}
    assert run(stub, "ls", "/a").output.split() == ["b", "n", "raw", "s"]
    assert run(stub, "ls", "/a/", "--keys", "--limit", "2").output.split() == ["/a/b", "/a/n"]
    st = json.loads(run(stub, "stat", "/a/n", "--json").output)
    assert st == {"key": "/a/n", "version": 1, "create_txid": 1, "modify_txid": 1,
                  "value_bytes": 1}
    assert "version: 1" in run(stub, "stat", "/a/n").output
    assert run(stub, "rm", "/a", "--recursive").exit_code == 0
    assert run(stub, "ls", "/a").output == ""


def test_missing_keys_exit_1(stub):
    r = run(stub, "get", "/nope")
    assert r.exit_code == 1 and "no such key: /nope" in r.output
    r = run(stub, "stat", "/nope")
    assert r.exit_code == 1 and "no such key" in r.output


def test_errors_are_one_line_without_traceback(stub):
    run(stub, "put", "/v", "1")
    r = run(stub, "put", "/v", "2", "--expected-version", "5")
    assert r.exit_code == 1
    assert r.output.strip() == "Error: bad_version: /v is at version 1, not 5"
    r = run(stub, "rm", "/absent")
    assert r.exit_code == 1 and "Traceback" not in r.output and "no_node" in r.output


def test_unreachable_master_is_a_clear_error():
    r = CliRunner().invoke(main, ["get", "/a", "--master", "tcp://127.0.0.1:1",
                                  "--timeout", "0.1"])
    assert r.exit_code == 1
    assert "timeout: no reply within 0.1 s" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["get", "/a", "--master", "nonsense"])
    assert r.exit_code == 1 and "bad --master" in r.output


def test_master_from_the_environment(stub):
    r = CliRunner().invoke(main, ["put", "/e", "1"], env={"MWCLUSTER_MASTER": stub.endpoint})
    assert r.exit_code == 0 and r.output.strip() == "1"


def test_status_json_and_table(stub):
    run(stub, "put", "/s", "1")
    assert json.loads(run(stub, "status", "--json").output) == {"epoch": 7, "txid": 1}
    out = run(stub, "status").output
    assert "epoch" in out and "txid" in out


def test_value_conversions():
    assert parse_value('{"a": {"$bytes": "0a"}}') == {"a": b"\n"}
    assert parse_value("[1, 2") == "[1, 2"
    assert parse_value('"quoted"') == "quoted"
    assert from_json({"$bytes": "zz"}) == {"$bytes": "zz"}      # not hex: kept as a map
    assert to_json({1: b"\x01", b"k": (1, 2)}) == {"1": {"$bytes": "01"}, "6b": [1, 2]}
    assert format_status_value("journal_bytes", 3 * 2**20) == "3.0 MiB (3,145,728)"
    assert format_status_value("loss_window_s", 0.0042) == "4.2 ms"
    assert format_status_value("txid", 123456) == "123456"


def test_status_rows_for_people():
    rows = dict(status_rows({"zeta": 1, "txid": 5, "epoch": 2, "digest": 255,
                             "requests_per_s": 1234.5, "recovery": {"seconds": 0.5},
                             "requests_total": 12345}))
    assert list(rows)[:2] == ["epoch", "txid"]
    assert rows["digest"] == "00000000000000ff"
    assert rows["requests_per_s"] == "1,234.5"
    assert rows["recovery.seconds"] == "0.500"
    assert rows["requests_total"] == "12,345"


_scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text() | st.binary())
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text().filter(lambda k: k != "$bytes"), inner, max_size=4), max_leaves=20)


@given(_values)
def test_json_form_round_trips_every_value_with_string_keys(value):
    assert from_json(json.loads(json.dumps(to_json(value)))) == value


def test_importing_the_package_does_not_load_zmq():
    code = ("import sys, mwcluster; assert 'zmq' not in sys.modules; "
            "from mwcluster import Client; assert 'zmq' in sys.modules; print(Client.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "Client", out.stderr


def _commands(group, path=()):
    import click

    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_help_page_is_clean_and_names_each_option_once(recwarn):
    """click warns (on every --help) when a command declares an option twice: one of the two
    could never be set."""
    for path, command in _commands(main):
        result = CliRunner().invoke(main, [*path, "--help"], catch_exceptions=False)
        assert result.exit_code == 0, (path, result.output)
        names = [opt for param in command.params for opt in getattr(param, "opts", ())]
        assert len(names) == len(set(names)), (path, names)
    assert [str(w.message) for w in recwarn] == []


def test_node_options_show_the_defaults_config_declares():
    from mwcluster.cli.master import master
    from mwcluster.config import MASTER_BY_NAME

    helps = {param.name: param.help for param in master.params}
    for name in ("data_dir", "client_endpoint", "worker_timeout_s", "durability"):
        key = MASTER_BY_NAME[name]
        assert helps[name] == f"{key.help} [{key.default}]"
