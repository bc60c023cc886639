"""The checkpoint node's configuration: conf/checkpoint.toml documents every key with its
default; defaults < file < MWCLUSTER_CHECKPOINT_* < flags; bad values name key and source;
the master's keys are untouched; the CLI resolves the same layers."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mwcluster.cli import main
from mwcluster.config import (CHECKPOINT_KEYS, MASTER_KEYS, load_checkpoint_config,
                              load_master_config)
from mwcluster.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf" / "checkpoint.toml"


def test_conf_checkpoint_toml_documents_every_key_with_its_default():
    data = tomllib.loads(CONF.read_text())
    assert set(data) == {k.name for k in CHECKPOINT_KEYS}
    for key in CHECKPOINT_KEYS:
        assert data[key.name] == key.default, key.name
    assert load_checkpoint_config(CONF, env={}).to_dict() == \
        load_checkpoint_config(None, env={}).to_dict()


def test_defaults():
    cfg = load_checkpoint_config(None, env={})
    assert (cfg.period_s, cfg.txns, cfg.keep_snapshots) == (60.0, 100_000, 2)
    assert cfg.master == "tcp://127.0.0.1:5550" and cfg.subscribe == "tcp://127.0.0.1:5551"
    assert set(cfg.sources.values()) == {"default"}


def test_layering_file_then_env_then_flags(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[checkpoint]\nperiod_s = 30\ntxns = 5000\nkeep_snapshots = 3\n")
    env = {"MWCLUSTER_CHECKPOINT_TXNS": "7000", "MWCLUSTER_CHECKPOINT_PERIOD_S": "20",
           "MWCLUSTER_TXNS": "1",                  # not the checkpoint node's variable
           "MWCLUSTER_DATA_DIR": "/master/only"}
    cfg = load_checkpoint_config(conf, env=env, flags={"period_s": 10.0, "txns": None})
    assert cfg.keep_snapshots == 3 and cfg.sources["keep_snapshots"] == f"config file {conf}"
    assert cfg.txns == 7000
    assert cfg.sources["txns"] == "environment variable MWCLUSTER_CHECKPOINT_TXNS"
    assert cfg.period_s == 10.0 and cfg.sources["period_s"] == "option --period-s"
    assert cfg.data_dir == "./mwcluster-checkpoint"
    cfg = load_checkpoint_config(None, env={"MWCLUSTER_CHECKPOINT_CONFIG": str(conf)})
    assert cfg.txns == 5000


def test_the_masters_config_ignores_the_checkpoint_variables():
    env = {"MWCLUSTER_CHECKPOINT_DATA_DIR": "/elsewhere"}
    assert load_master_config(None, env=env).data_dir == "./mwcluster-data"
    assert "txns" not in {k.name for k in MASTER_KEYS}


@pytest.mark.parametrize("text,needles", [
    ("perod_s = 1", ["unknown key 'perod_s'", "period_s"]),
    ("txns = 0", ["txns", ">= 1"]),
    ("period_s = 'soon'", ["period_s", "a number"]),
    ("master = '127.0.0.1:5550'", ["master", "ZeroMQ endpoint"]),
])
def test_bad_values_name_the_key_and_the_source(tmp_path, text, needles):
    conf = tmp_path / "bad.toml"
    conf.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_checkpoint_config(conf, env={})
    for needle in needles:
        assert needle in str(info.value)


def test_the_cli_prints_the_resolved_config(tmp_path):
    result = CliRunner().invoke(main, ["checkpoint", "--print-config", "--txns", "42",
                                       "--data-dir", str(tmp_path)],
                                env={"MWCLUSTER_CHECKPOINT_PERIOD_S": "9"})
    assert result.exit_code == 0, result.output
    assert "txns = 42    # option --txns" in result.output
    assert "period_s = 9.0    # environment variable MWCLUSTER_CHECKPOINT_PERIOD_S" in \
        result.output
    bad = CliRunner().invoke(main, ["checkpoint", "--print-config", "--txns", "0"])
    assert bad.exit_code != 0 and "txns" in bad.output
