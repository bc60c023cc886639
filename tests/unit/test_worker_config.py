"""The worker's configuration layering and the handler registry."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mwcluster.errors import ConfigError
from mwcluster.worker import Registry, load_handler_modules
from mwcluster.config import WORKER_KEYS, load_worker_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "worker.toml"


def test_conf_worker_toml_documents_every_key_with_its_default():
    data = tomllib.loads(CONF.read_text())
    assert data == {key.name: key.default for key in WORKER_KEYS}


def test_layers_defaults_file_env_flags(tmp_path):
    conf = tmp_path / "w.toml"
    conf.write_text('[worker]\nslots = 3\nheartbeat_ms = 700\nworker_id = "from-file"\n')
    env = {"MWCLUSTER_WORKER_HEARTBEAT_MS": "400", "MWCLUSTER_SLOTS": "99"}
    config = load_worker_config(conf, env=env, flags={"worker_id": "from-flag", "slots": None})
    assert (config.slots, config.heartbeat_ms, config.worker_id) == (3, 400, "from-flag")
    assert config.sources["heartbeat_ms"] == "environment variable MWCLUSTER_WORKER_HEARTBEAT_MS"
    assert config.sources["master"] == "default"


def test_resolved_fills_in_the_id_and_the_slots():
    config = load_worker_config(env={}).resolved()
    assert config.slots >= 1 and config.worker_id.rsplit("-", 1)[1].isdigit()


@pytest.mark.parametrize("flags, words", [
    ({"slots": -1}, ["slots", "0..4096"]),
    ({"master": "localhost:5550"}, ["master", "ZeroMQ endpoint"]),
    ({"heartbeat_ms": "soon"}, ["heartbeat_ms", "not an integer"]),
])
def test_bad_values_name_the_key_and_what_is_allowed(flags, words):
    with pytest.raises(ConfigError) as info:
        load_worker_config(env={}, flags=flags)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_registry_refuses_a_second_function_under_a_taken_name():
    reg = Registry()
    reg.register("a", print)
    reg.register("a", print)                      # the same function again is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", len)
    assert reg.names() == ["a"] and "a" in reg


def test_a_handler_module_that_cannot_be_imported_says_which():
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        load_handler_modules(["no_such_module_xyz"])


def test_the_worker_command_prints_its_config_and_refuses_a_missing_handler_module():
    from click.testing import CliRunner

    from mwcluster.cli import main

    runner = CliRunner()
    shown = runner.invoke(main, ["worker", "--print-config", "--slots", "3", "--id", "w9"],
                          env={})
    assert shown.exit_code == 0, shown.output
    assert 'slots = 3    # option --slots' in shown.output
    assert 'worker_id = "w9"' in shown.output
    missing = runner.invoke(main, ["worker", "--handlers", "no_such_module_xyz"], env={})
    assert missing.exit_code == 1 and "no_such_module_xyz" in missing.output


def test_a_handler_module_that_raises_on_import_says_so(tmp_path, monkeypatch):
    (tmp_path / "broken_handlers_xyz.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="broken_handlers_xyz.*RuntimeError: no config"):
        load_handler_modules(["broken_handlers_xyz"])
