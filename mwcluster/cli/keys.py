"""`mwcluster keys`: make keypairs and principals, list them, and tell a running master to
read its principals again (docs/security.md, "Key management"; a checkpoint node or a worker
rereads them at SIGHUP).

    keys new NAME --role ROLE [--role ROLE] [--prefix P] [--dir DIR]
    keys list [--dir DIR] [--json]
    keys reload --master ENDPOINT --key ADMIN.secret --server-key SERVER.toml
"""

from __future__ import annotations

import json

import click

from mwcluster.cli.common import connect, master_option, timeout_option
from mwcluster.errors import MwclusterError
from mwcluster.security.keys import (PRINCIPAL_SUFFIX, ROLES, SECRET_SUFFIX, fingerprint,
                                     new_keys, read_principal)

DEFAULT_DIR = "./mwcluster-keys"
dir_option = click.option("--dir", "directory", default=DEFAULT_DIR, show_default=True,
                          envvar="MWCLUSTER_KEYS_DIR", type=click.Path(file_okay=False),
                          help="Where the key files are (env MWCLUSTER_KEYS_DIR).")


@click.group()
def keys() -> None:
    """CURVE keys and principals: who may talk to the cluster, and in which roles."""


@keys.command("new")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES),
              help="A role of the principal (repeatable).")
@click.option("--prefix", "prefixes", multiple=True,
              help="Limit its writes to keys under this prefix (repeatable).")
@dir_option
@click.option("--force", is_flag=True, help="Replace existing files of this name (a new "
                                             "key: the old one stops working at reload).")
def keys_new(name, roles, prefixes, directory, force) -> None:
    """Write NAME.secret (mode 0600: keep it on the machine that acts as NAME) and NAME.toml
    (the principal: copy it into the principals directory of the servers)."""
    try:
        secret, public = new_keys(directory, name, list(roles), list(prefixes), force=force)
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {secret} (secret, mode 0600) and {public} (principal: roles "
               f"{', '.join(sorted(set(roles)))}"
               f"{'; writes under ' + ', '.join(prefixes) if prefixes else ''})")


@keys.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(directory, as_json) -> None:
    """The principals in DIR (each NAME.toml) and whether this machine holds the secret."""
    from pathlib import Path

    folder = Path(directory)
    if not folder.is_dir():
        raise click.ClickException(f"{folder} does not exist (make keys with `mwcluster "
                                   "keys new NAME --role ROLE --dir DIR`)")
    rows = []
    for path in sorted(folder.glob("*" + PRINCIPAL_SUFFIX)):
        try:
            p = read_principal(path)
        except MwclusterError as exc:
            rows.append({"file": str(path), "error": str(exc)})
            continue
        rows.append({"name": p.name, "roles": sorted(p.roles), "prefixes": list(p.prefixes),
                     "key": fingerprint(p.public_key),
                     "secret_here": (folder / (p.name + SECRET_SUFFIX)).exists()})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no principals in {folder}")
    for row in rows:
        if "error" in row:
            click.echo(f"{row['file']}: {row['error']}", err=True)
            continue
        scope = f"  writes under {', '.join(row['prefixes'])}" if row["prefixes"] else ""
        click.echo(f"{row['name']:<20} {','.join(row['roles']):<22} key {row['key']}"
                   f"{'  (secret here)' if row['secret_here'] else ''}{scope}")


@keys.command("reload")
@master_option
@timeout_option
def keys_reload(master, timeout_s) -> None:
    """Ask a running master to read its principals directory again (needs the admin role;
    the same as `kill -HUP` on its process). A removed principal's next request is refused."""
    with connect(master, timeout_s) as client:
        count = client.reload_principals()
    click.echo(f"the master at {master} allows {count} principals now")
