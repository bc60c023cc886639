"""`mwcluster checkpoint`: run the checkpoint node (a thin shell over nodes/checkpoint/node.py).

Options override MWCLUSTER_CHECKPOINT_* environment variables, which override the TOML config
file, which overrides the built-in defaults (mwcluster/config.py, conf/checkpoint.toml).
SIGTERM and SIGINT stop it cleanly (a checkpoint in progress is abandoned and its temporary
file removed; finished snapshots stay), exit 0. `--once` joins, catches up with the master's
durable txid, writes one checkpoint and exits (0, or 1 if the checkpoint failed).
"""

from __future__ import annotations

import signal
import sys
from typing import NoReturn

import click

from mwcluster.cli.common import (config_file_option, key_options, print_config_option,
                                  resolve_config)
from mwcluster.config import CHECKPOINT_BY_NAME, load_checkpoint_config
from mwcluster.errors import MwclusterError


@click.command()
@config_file_option("conf/checkpoint.toml", "MWCLUSTER_CHECKPOINT_CONFIG")
@key_options(CHECKPOINT_BY_NAME, "data_dir", "master", "subscribe", "period_s", "txns",
             "keep_snapshots", "status_endpoint", "metrics_port", "ready_file",
             "promote_client_endpoint", "promote_pub_endpoint", "promote_data_dir",
             "promote_durability", "audit_log", "failover", "failover_timeout_s",
             "key_file", "server_key", "principals_dir", "insecure")
@click.option("--once", is_flag=True,
              help="Catch up with the master, write one checkpoint, exit.")
@print_config_option
def checkpoint(config_file, once, print_config, **flags) -> None:
    """Follow the master's log stream and write snapshots of the replica."""
    config = resolve_config(load_checkpoint_config, config_file, flags, print_config)
    if config is None:
        return
    from mwcluster.nodes.checkpoint.node import CheckpointNode

    run_node(CheckpointNode(config, once=once))


def run_node(node) -> NoReturn:
    """Open and run a CheckpointNode until it stops; if it was promoted, run the master it
    became in this process (docs/failover.md) until that stops; exit with its code."""

    def on_signal(signum, _frame):
        node.request_stop()
        if node.promoted_master is not None:
            node.promoted_master.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: node.reload_principals())
    try:
        node.open()
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    code = node.run()
    master = node.promoted_master
    if master is None:
        sys.exit(code)
    sys.setswitchinterval(master.config.switch_interval_ms / 1000)

    def on_master_signal(signum, _frame):
        master.request_stop()

    signal.signal(signal.SIGTERM, on_master_signal)
    signal.signal(signal.SIGINT, on_master_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: master.request_reload())
    sys.exit(master.run())
