"""`mwcluster put/get/rm/ls/stat`: the namespace of a running master (a thin shell over the
Client). An error is one line on stderr and exit status 1, as is a missing key for `get` and
`stat`.
"""

from __future__ import annotations

import json
import sys

import click

from mwcluster.cli.common import (connect, consistency_option, dumps, master_option, parse_value,
                                  standby_option, timeout_option)


@click.command()
@click.argument("key")
@click.argument("value")
@click.option("--expected-version", type=click.IntRange(0), default=None,
              help="Only if KEY is at this version (0: only if it does not exist).")
@click.option("--sync", is_flag=True, help="Reply only once the write is fsynced.")
@consistency_option
@master_option
@timeout_option
def put(key: str, value: str, expected_version: int | None, sync: bool,
        consistency: str | None, master: str, timeout_s: float) -> None:
    """Set KEY to VALUE (JSON, or a plain string); print the txid it was logged at."""
    with connect(master, timeout_s, consistency=consistency) as client:
        txid = client.put(key, parse_value(value), expected_version=expected_version,
                          durability="sync" if sync else None)
    click.echo(txid)


@click.command()
@click.argument("key")
@consistency_option
@standby_option
@master_option
@timeout_option
def get(key: str, consistency: str | None, standby: str | None, master: str,
        timeout_s: float) -> None:
    """Print the value of KEY as JSON; exit 1 if KEY does not exist."""
    with connect(master, timeout_s, consistency=consistency, standby=standby) as client:
        found = client.get_with_stat(key)
    if found is None:
        click.echo(f"Error: no such key: {key}", err=True)
        sys.exit(1)
    click.echo(dumps(found[0]))


@click.command()
@click.argument("key")
@click.option("--recursive", "-r", is_flag=True, help="Also delete every key below KEY.")
@click.option("--expected-version", type=click.IntRange(1), default=None)
@consistency_option
@master_option
@timeout_option
def rm(key: str, recursive: bool, expected_version: int | None, consistency: str | None,
       master: str, timeout_s: float) -> None:
    """Delete KEY; print the txid it was logged at."""
    with connect(master, timeout_s, consistency=consistency) as client:
        txid = client.delete(key, recursive=recursive, expected_version=expected_version)
    click.echo(txid)


@click.command()
@click.argument("prefix", default="/")
@click.option("--keys", "as_keys", is_flag=True,
              help="List every key starting with the string PREFIX instead of the names "
                   "directly below the path PREFIX.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Print at most N.")
@consistency_option
@standby_option
@master_option
@timeout_option
def ls(prefix: str, as_keys: bool, limit: int | None, consistency: str | None,
       standby: str | None, master: str, timeout_s: float) -> None:
    """List the names below PREFIX (default "/"), one per line."""
    with connect(master, timeout_s, consistency=consistency, standby=standby) as client:
        if as_keys:
            for count, key in enumerate(client.iter_keys(prefix), 1):
                click.echo(key)
                if limit is not None and count >= limit:
                    break
        else:
            for name in client.children(prefix, limit):
                click.echo(name)


@click.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@consistency_option
@standby_option
@master_option
@timeout_option
def stat(key: str, as_json: bool, consistency: str | None, standby: str | None, master: str,
         timeout_s: float) -> None:
    """Print the version, txids and size of KEY; exit 1 if KEY does not exist."""
    with connect(master, timeout_s, consistency=consistency, standby=standby) as client:
        found = client.stat(key)
    if found is None:
        click.echo(f"Error: no such key: {key}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"key": key, **found._asdict()}))
    else:
        for name, value in found._asdict().items():
            click.echo(f"{name:>12}: {value}")


# The status fields people look at first, in this order; the rest follow by name.
