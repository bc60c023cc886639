"""`mwcluster master`: run the master process (a thin shell over nodes/master.py).

Options override MWCLUSTER_* environment variables, which override the TOML config file,
which overrides the built-in defaults (mwcluster/config.py, conf/master.toml). SIGTERM and
SIGINT stop it gracefully: no new requests, the journal is drained and fsynced, exit 0.
"""

from __future__ import annotations

import json
import signal
import sys

import click

from mwcluster.errors import MwclusterError


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="TOML config file (see conf/master.toml); default: "
                                 "$MWCLUSTER_CONFIG if set.")
@click.option("--data-dir", default=None, help="Journal, snapshots and epoch live here.")
@click.option("--client-endpoint", default=None,
              help="ROUTER endpoint for requests [tcp://127.0.0.1:5550]; port 0 picks one.")
@click.option("--pub-endpoint", default=None,
              help="PUB endpoint of the log stream [tcp://127.0.0.1:5551]; port 0 picks one.")
@click.option("--durability", type=click.Choice(["async", "sync"]), default=None,
              help="Default durability of mutations [async].")
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics on this port (0: off) [0].")
@click.option("--ready-file", default=None,
              help="Write {client, pub, pid, epoch, metrics_port} as JSON here once serving.")
@click.option("--worker-timeout-s", type=float, default=None,
              help="Mark a worker lost after this long without a word from it [10].")
@click.option("--worker-heartbeat-ms", type=int, default=None,
              help="Heartbeat interval told to workers at register [1000].")
@click.option("--max-assign-per-request", type=int, default=None,
              help="Most tasks one TASK_REQUEST is given [64].")
@click.option("--print-config", is_flag=True,
              help="Print the resolved configuration with the source of each value, and exit.")
def master(config_file, data_dir, client_endpoint, pub_endpoint, durability, metrics_port,
           ready_file, worker_timeout_s, worker_heartbeat_ms, max_assign_per_request,
           print_config) -> None:
    """Run the master: serve requests, keep the journal, publish the log stream."""
    from mwcluster.config import load_master_config

    flags = {"data_dir": data_dir, "client_endpoint": client_endpoint,
             "pub_endpoint": pub_endpoint, "durability": durability,
             "metrics_port": metrics_port, "ready_file": ready_file,
             "worker_timeout_s": worker_timeout_s, "worker_heartbeat_ms": worker_heartbeat_ms,
             "max_assign_per_request": max_assign_per_request}
    try:
        config = load_master_config(config_file, flags=flags)
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    if print_config:
        for key, value in config.to_dict().items():
            click.echo(f"{key} = {json.dumps(value)}    # {config.sources[key]}")
        return
    from mwcluster.nodes.master import Master

    sys.setswitchinterval(config.switch_interval_ms / 1000)
    node = Master(config)
    try:
        node.open()
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None

    def on_signal(signum, _frame):
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.exit(node.run())
