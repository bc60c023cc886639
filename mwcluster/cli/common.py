"""What the commands that talk to a running master share: the --master and --timeout options,
`connect` (a Client whose errors become one line and exit status 1), and values to and from
JSON. Values go in as JSON (or, when VALUE is not JSON, as a string) and come out as JSON;
byte strings, which JSON lacks, are written `{"$bytes": "<hex>"}` both ways.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

from mwcluster.config import Key
from mwcluster.core.durability import CONSISTENCIES
from mwcluster.errors import MwclusterError
from mwcluster.wire.protocol import DEFAULT_CLIENT_ENDPOINT

def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"mwcluster.{param.name}"] = value
    return value


def credentials_options(fn):
    """--key and --server-key (env MWCLUSTER_KEY, MWCLUSTER_SERVER_KEY): CURVE for every
    connection the command makes; read back with `cli_credentials()`."""
    fn = click.option("--server-key", "server_key", envvar="MWCLUSTER_SERVER_KEY",
                      expose_value=False, callback=_remember, metavar="KEY",
                      help="The server's public key: Z85, or its principal's .toml file "
                           "(env MWCLUSTER_SERVER_KEY).")(fn)
    return click.option("--key", "key_file", envvar="MWCLUSTER_KEY", expose_value=False,
                        callback=_remember, metavar="FILE",
                        help="This client's secret key file, NAME.secret (env "
                             "MWCLUSTER_KEY): connect with CURVE (docs/security.md).")(fn)


def cli_credentials():
    """The command's CURVE credentials (--key/--server-key or their environment variables),
    or None; a bad key file is one line and exit status 1."""
    from mwcluster.security.curve import Credentials

    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    try:
        return Credentials.load(meta.get("mwcluster.key_file"), meta.get("mwcluster.server_key"))
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None


def master_option(fn):
    """--master ENDPOINT, with --key and --server-key."""
    fn = credentials_options(fn)
    return click.option(
        "--master", default=DEFAULT_CLIENT_ENDPOINT, show_default=True,
        envvar="MWCLUSTER_MASTER", metavar="ENDPOINT",
        help="The master's client endpoint (env MWCLUSTER_MASTER); several separated by "
             "commas are tried in turn.")(fn)
timeout_option = click.option(
    "--timeout", "timeout_s", type=click.FloatRange(0.01), default=3.0, show_default=True,
    help="Seconds to wait for each reply before retrying once on a new connection.")
consistency_option = click.option(
    "--consistency", type=click.Choice(CONSISTENCIES), default=None,
    help="strong (the default): the answer waits until what it shows is durable at the "
         "request's level; fast: answer at once, maybe showing a write a crash erases "
         "(docs/durability.md).")
standby_option = click.option(
    "--standby", default=None, metavar="ENDPOINT", envvar="MWCLUSTER_STANDBY",
    help="Read from this checkpoint node's status endpoint (env MWCLUSTER_STANDBY), the "
         "master when the standby is behind.")


@contextmanager
def connect(master: str, timeout_s: float, *, consistency: str | None = None,
            standby: str | None = None) -> Iterator[Any]:
    """A Client for one command; errors become a one-line message and exit status 1."""
    from mwcluster.client import Client

    try:
        with Client(master.split(",") if "," in master else master, timeout_s=timeout_s,
                    retries=1, consistency=consistency,
                    read_from="standby" if standby else "master", standby=standby,
                    credentials=cli_credentials()) as client:
            yield client
    except MwclusterError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from None
    except ValueError as exc:      # a malformed endpoint (zmq reports it as a ValueError)
        raise click.ClickException(f"bad --master {master!r}: {exc}") from None


# --- options of the node commands, from the config keys ----------------------------------

_CLICK_TYPES = {int: int, float: float, str: str, bool: bool}


def key_option(key: Key, *decls: str, note: str = "", **extra: Any):
    """A click option that sets config key `key` (a flag, the top layer of the config): its
    help and shown default are the key's own, declared once in config.py (after `note`). Its
    value is None when the flag is not given, so the lower layers (environment, file,
    default) decide."""
    decls = decls or (f"--{key.name.replace('_', '-')}",)
    if key.kind is bool:
        extra.setdefault("is_flag", True)      # --insecure: None when not given
    elif "multiple" not in extra:
        extra.setdefault("type", click.Choice(key.choices) if key.choices
                         else _CLICK_TYPES[key.kind])
    shown = "" if key.default == "" else f" [{key.default}]"   # the help says what empty means
    return click.option(*decls, key.name, default=None, help=f"{note}{key.help}{shown}",
                        **extra)


def key_options(by_name: dict[str, Key], *names: str):
    """key_option for each of `names` (keys of `by_name`), in that order."""
    def decorate(fn):
        for name in reversed(names):
            fn = key_option(by_name[name])(fn)
        return fn
    return decorate


def config_file_option(documented: str, env_var: str):
    """--config FILE: the TOML file of a node command (the layer below the environment)."""
    return click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                        default=None, help=f"TOML config file (see {documented}); default: "
                                           f"${env_var} if set.")


print_config_option = click.option(
    "--print-config", is_flag=True,
    help="Print the resolved configuration with the source of each value, and exit.")


def resolve_config(load: Callable[..., Any], config_file: str | None,
                   flags: dict[str, Any], print_config: bool) -> Any | None:
    """A node command's configuration from its layers (a bad value: one line, exit status
    1); None when --print-config printed it (each key, its value and where it came from)."""
    try:
        config = load(config_file, flags=flags)
    except MwclusterError as exc:
        raise click.ClickException(str(exc)) from None
    if not print_config:
        return config
    for key, value in config.to_dict().items():
        click.echo(f"{key} = {json.dumps(value)}    # {config.sources[key]}")
    return None


# --- JSON <-> values ----------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """VALUE as JSON when it parses, else the string itself."""
    try:
        return from_json(json.loads(text))
    except ValueError:
        return text


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$bytes"), str):
            try:
                return bytes.fromhex(value["$bytes"])
            except ValueError:
                pass
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def to_json(value: Any) -> Any:
    """A value as JSON can carry it: bytes as {"$bytes": hex}, map keys as strings."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, dict):
        return {(k.hex() if isinstance(k, bytes) else k if isinstance(k, str)
                 else json.dumps(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def dumps(value: Any, **kw: Any) -> str:
    return json.dumps(to_json(value), ensure_ascii=False, **kw)
