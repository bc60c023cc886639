"""Master configuration layering and validation, and the epoch file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mwcluster.config import MASTER_KEYS, load_master_config
from mwcluster.errors import ConfigError, CorruptionError
from mwcluster.storage import epoch as epochs

CONF = Path(__file__).resolve().parents[2] / "conf" / "master.toml"


def test_defaults_without_any_source():
    cfg = load_master_config(None, env={})
    assert cfg.client_endpoint == "tcp://127.0.0.1:5550"
    assert cfg.pub_endpoint == "tcp://127.0.0.1:5551"
    assert cfg.durability == "async" and cfg.metrics_port == 0
    assert set(cfg.sources.values()) == {"default"}


def test_conf_master_toml_documents_every_key_with_its_default():
    data = tomllib.loads(CONF.read_text())
    assert set(data) == {k.name for k in MASTER_KEYS}
    for key in MASTER_KEYS:
        assert data[key.name] == key.default, key.name
    assert load_master_config(CONF, env={}).to_dict() == load_master_config(None, env={}) \
        .to_dict()


def test_layering_file_then_env_then_flags(tmp_path):
    conf = tmp_path / "m.toml"
    conf.write_text('durability = "sync"\nsegment_bytes = 1048576\nheartbeat_interval_s = 2\n'
                    'metrics_port = 9000\n')
    env = {"MWCLUSTER_SEGMENT_BYTES": "2_097_152", "MWCLUSTER_METRICS_PORT": "9001",
           "MWCLUSTER_MASTER": "tcp://elsewhere:1"}   # another command's variable: ignored
    cfg = load_master_config(conf, env=env, flags={"metrics_port": 9002, "durability": None})
    assert cfg.durability == "sync" and cfg.sources["durability"] == f"config file {conf}"
    assert cfg.segment_bytes == 2 << 20
    assert cfg.sources["segment_bytes"] == "environment variable MWCLUSTER_SEGMENT_BYTES"
    assert cfg.heartbeat_interval_s == 2.0 and type(cfg.heartbeat_interval_s) is float
    assert cfg.metrics_port == 9002 and cfg.sources["metrics_port"] == "option --metrics-port"


def test_config_file_from_the_environment(tmp_path):
    conf = tmp_path / "m.toml"
    conf.write_text("[master]\nkeep_snapshots = 5\n")
    assert load_master_config(None, env={"MWCLUSTER_CONFIG": str(conf)}).keep_snapshots == 5


@pytest.mark.parametrize("text,needles", [
    ("durabilty = 'sync'", ["unknown key 'durabilty'", "known keys", "durability"]),
    ("segment_bytes = 'big'", ["segment_bytes", "from config file", "an integer"]),
    ("durability = 'fast'", ["durability", "async or sync"]),
    ("metrics_port = 70000", ["metrics_port", "0..65535"]),
    ("client_endpoint = '127.0.0.1:1'", ["client_endpoint", "ZeroMQ endpoint"]),
    ("heartbeat_interval_s = true", ["heartbeat_interval_s", "a number"]),
    ("this is not toml", ["not valid TOML"]),
])
def test_bad_config_file_names_key_source_and_what_is_allowed(tmp_path, text, needles):
    conf = tmp_path / "bad.toml"
    conf.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_master_config(conf, env={})
    for needle in needles:
        assert needle in str(info.value)


def test_bad_environment_and_flag_values():
    with pytest.raises(ConfigError, match="MWCLUSTER_KEEP_SNAPSHOTS.*an integer"):
        load_master_config(None, env={"MWCLUSTER_KEEP_SNAPSHOTS": "two"})
    with pytest.raises(ConfigError, match="keep_snapshots.*>= 1"):
        load_master_config(None, env={"MWCLUSTER_KEEP_SNAPSHOTS": "0"})
    with pytest.raises(ConfigError, match="option --metrics-port"):
        load_master_config(None, env={}, flags={"metrics_port": -1})
    with pytest.raises(ConfigError, match="cannot read"):
        load_master_config("/nonexistent/master.toml", env={})


def test_epoch_starts_at_one_and_grows_at_every_start(tmp_path):
    assert epochs.read_epoch(tmp_path) == 0
    assert [epochs.next_epoch(tmp_path) for _ in range(3)] == [1, 2, 3]
    assert epochs.read_epoch(tmp_path) == 3
    assert not (tmp_path / "epoch.tmp").exists()


def test_a_damaged_epoch_file_stops_the_start(tmp_path):
    epochs.write_epoch(tmp_path, 5)
    path = tmp_path / epochs.FILE_NAME
    raw = bytearray(path.read_bytes())
    raw[12] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match="checksum"):
        epochs.read_epoch(tmp_path)
    path.write_bytes(b"short")
    with pytest.raises(CorruptionError, match="5 bytes"):
        epochs.next_epoch(tmp_path)


def test_worker_keys_layer_and_are_checked():
    cfg = load_master_config(None, env={"MWCLUSTER_WORKER_TIMEOUT_S": "2.5"},
                             flags={"max_assign_per_request": 16, "worker_heartbeat_ms": None})
    assert (cfg.worker_timeout_s, cfg.worker_heartbeat_ms, cfg.max_assign_per_request) == \
        (2.5, 1000, 16)
    assert cfg.sources["worker_timeout_s"] == "environment variable MWCLUSTER_WORKER_TIMEOUT_S"
    for flags in ({"worker_timeout_s": 0.0}, {"worker_heartbeat_ms": 5},
                  {"max_assign_per_request": 0}):
        with pytest.raises(ConfigError, match=next(iter(flags))):
            load_master_config(None, env={}, flags=flags)
