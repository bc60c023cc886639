"""`mwcluster master`: run the master process (a thin shell over nodes/master/node.py).

Options override MWCLUSTER_* environment variables, which override the TOML config file,
which overrides the built-in defaults (mwcluster/config.py, conf/master.toml). SIGTERM and
SIGINT stop it gracefully: no new requests, the journal is drained and fsynced, exit 0.
"""

from __future__ import annotations

import signal
import sys

import click

from mwcluster.cli.common import (config_file_option, key_option, key_options,
                                  print_config_option, resolve_config)
from mwcluster.config import CHECKPOINT_BY_NAME, MASTER_BY_NAME, load_master_config
from mwcluster.errors import MwclusterError


@click.command()
@config_file_option("conf/master.toml", "MWCLUSTER_CONFIG")
@key_options(MASTER_BY_NAME, "data_dir", "client_endpoint", "pub_endpoint", "durability",
             "metrics_port", "ready_file", "worker_timeout_s", "worker_heartbeat_ms",
             "max_assign_per_request", "peer_master_endpoint", "peer_status_endpoint",
             "key_file", "server_key", "principals_dir", "insecure", "audit_log")
@click.option("--rejoin-as-standby", is_flag=True,
              help="If the peer replaced this master, resynchronise as its standby (this "
                   "node's journal and snapshots are moved aside, kept).")
@key_option(CHECKPOINT_BY_NAME["promote_client_endpoint"], note="With --rejoin-as-standby: ")
@key_option(CHECKPOINT_BY_NAME["promote_pub_endpoint"], note="With --rejoin-as-standby: ")
@click.option("--force", is_flag=True,
              help="Serve even if the peer cannot be reached (it may have taken over: two "
                   "masters until one is fenced).")
@print_config_option
def master(config_file, rejoin_as_standby, promote_client_endpoint, promote_pub_endpoint,
           force, print_config, **flags) -> None:
    """Run the master: serve requests, keep the journal, publish the log stream."""
    config = resolve_config(load_master_config, config_file, flags, print_config)
    if config is None:
        return
    promote = {"promote_client_endpoint": promote_client_endpoint,
               "promote_pub_endpoint": promote_pub_endpoint}
    if any(promote.values()) and not rejoin_as_standby:
        raise click.ClickException("--promote-client-endpoint and --promote-pub-endpoint "
                                   "apply only with --rejoin-as-standby")
    if config.peer_master_endpoint or config.peer_status_endpoint:
        _start_with_peer(config, rejoin_as_standby, force, promote)
    elif rejoin_as_standby:
        raise click.ClickException("--rejoin-as-standby needs the peer: set "
                                   "peer_master_endpoint (--peer-master-endpoint)")
    from mwcluster.nodes.master.node import Master

    sys.setswitchinterval(config.switch_interval_ms / 1000)
    try:
        node = Master(config)
        node.open()
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None

    def on_signal(signum, _frame):
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: node.request_reload())
    sys.exit(node.run())


def _start_with_peer(config, rejoin: bool, force: bool, promote: dict) -> None:
    """Ask the peer before serving (nodes/master/start.py): start fenced, or rejoin as the
    new master's standby (this process then runs a checkpoint node and exits with it)."""
    from mwcluster.core.failover import StartAs
    from mwcluster.nodes.master import start as master_start

    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        decision, peer = master_start.decide_start(config, force=force,
                                                   stop_requested=lambda: stop["now"])
        if stop["now"]:
            sys.exit(0)
        if decision is not StartAs.STANDBY:
            if rejoin:
                raise click.ClickException("--rejoin-as-standby: the peer does not serve as "
                                           "master under a higher epoch; nothing to rejoin")
            return
        if not rejoin:
            master_start.start_fenced(config, int(peer["epoch"]))
            return
        master_start.prepare_rejoin(config, int(peer["epoch"]))
        from mwcluster.cli.checkpoint import run_node
        from mwcluster.nodes.checkpoint.node import CheckpointNode

        node = CheckpointNode(master_start.standby_config(config, peer, promote))
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    run_node(node)
