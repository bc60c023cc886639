"""`mwcluster checkpoint`: run the checkpoint node (a thin shell over nodes/checkpoint/node.py).

Options override MWCLUSTER_CHECKPOINT_* environment variables, which override the TOML config
file, which overrides the built-in defaults (mwcluster/config.py, conf/checkpoint.toml).
SIGTERM and SIGINT stop it cleanly (a checkpoint in progress is abandoned and its temporary
file removed; finished snapshots stay), exit 0. `--once` joins, catches up with the master's
durable txid, writes one checkpoint and exits (0, or 1 if the checkpoint failed).
"""

from __future__ import annotations

import json
import signal
import sys
from typing import NoReturn

import click

from mwcluster.errors import MwclusterError


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="TOML config file (see conf/checkpoint.toml); default: "
                                 "$MWCLUSTER_CHECKPOINT_CONFIG if set.")
@click.option("--data-dir", default=None, help="The node's snapshots live here.")
@click.option("--master", default=None,
              help="The master's ROUTER endpoint [tcp://127.0.0.1:5550].")
@click.option("--subscribe", default=None,
              help="The master's PUB endpoint (log stream) [tcp://127.0.0.1:5551].")
@click.option("--period-s", type=float, default=None,
              help="Checkpoint at least this often, in seconds [60].")
@click.option("--txns", type=int, default=None,
              help="...or after this many records, whichever first [100000].")
@click.option("--keep-snapshots", type=int, default=None, help="Local snapshots kept [2].")
@click.option("--status-endpoint", default=None,
              help="Answer STATUS on this ROUTER endpoint (port 0 picks one) [none].")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics on this port (0: off) [0].")
@click.option("--ready-file", default=None,
              help="Write {status, pid, data_dir, metrics_port} as JSON here once running.")
@click.option("--promote-client-endpoint", default=None,
              help="ROUTER endpoint to serve on as master once promoted [none: no promotion].")
@click.option("--promote-pub-endpoint", default=None,
              help="PUB endpoint of the log stream once promoted [none].")
@click.option("--promote-data-dir", default=None,
              help="Master data directory once promoted [DATA_DIR/master].")
@click.option("--promote-durability", type=click.Choice(["async", "sync"]), default=None,
              help="Default durability once promoted [the old master's; sync if it cannot "
                   "be asked].")
@click.option("--failover", type=click.Choice(["manual", "auto"]), default=None,
              help="auto: also promote itself when the master is silent and a client votes "
                   "[manual].")
@click.option("--failover-timeout-s", type=float, default=None,
              help="Auto failover: the master's silence needed, in seconds [3].")
@click.option("--once", is_flag=True,
              help="Catch up with the master, write one checkpoint, exit.")
@click.option("--print-config", is_flag=True,
              help="Print the resolved configuration with the source of each value, and exit.")
def checkpoint(config_file, data_dir, master, subscribe, period_s, txns, keep_snapshots,
               status_endpoint, metrics_port, ready_file, promote_client_endpoint,
               promote_pub_endpoint, promote_data_dir, promote_durability, failover,
               failover_timeout_s, once, print_config) -> None:
    """Follow the master's log stream and write snapshots of the replica."""
    from mwcluster.config import load_checkpoint_config

    flags = {"data_dir": data_dir, "master": master, "subscribe": subscribe,
             "period_s": period_s, "txns": txns, "keep_snapshots": keep_snapshots,
             "status_endpoint": status_endpoint, "metrics_port": metrics_port,
             "ready_file": ready_file, "promote_client_endpoint": promote_client_endpoint,
             "promote_pub_endpoint": promote_pub_endpoint, "promote_data_dir": promote_data_dir,
             "promote_durability": promote_durability,
             "failover": failover, "failover_timeout_s": failover_timeout_s}
    try:
        config = load_checkpoint_config(config_file, flags=flags)
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    if print_config:
        for key, value in config.to_dict().items():
            click.echo(f"{key} = {json.dumps(value)}    # {config.sources[key]}")
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
    sys.exit(master.run())
