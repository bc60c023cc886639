"""Keypairs and principals in files: what `mwcluster keys new` writes and every node reads.

    NAME.secret   TOML, mode 0600: name, public_key, secret_key (CurveZMQ keys in Z85, 40
                  characters each). Stays on the machine that acts as NAME.
    NAME.toml     TOML: name, public_key, roles = [...], prefixes = [...]: the principal, a
                  public record. A server allows the principals of every *.toml file in its
                  principals directory (docs/security.md).

A key given where a public key is expected (`server_key`, MWCLUSTER_SERVER_KEY) may be the Z85
text itself or the path of a .toml or .secret file. Every failure raises ConfigError naming the
file and what to do; no message ever carries a secret key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import zmq

from mwcluster.errors import ConfigError

ROLES = ("read", "write", "worker", "replica", "admin")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
Z85_RE = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}\Z")
SECRET_SUFFIX = ".secret"
PRINCIPAL_SUFFIX = ".toml"


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CurveZMQ keypair in Z85. `secret` is never shown: repr hides it."""
    name: str
    public: bytes
    secret: bytes

    def __repr__(self) -> str:
        return f"KeyPair({self.name!r}, public={fingerprint(self.public)})"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a public key is: a name, its roles, and the key prefixes its writes are limited to
    (empty: none)."""
    name: str
    public_key: bytes
    roles: frozenset[str]
    prefixes: tuple[str, ...] = ()


def fingerprint(public_key: bytes) -> str:
    """The first 8 characters of a public key: enough to tell keys apart in logs."""
    return public_key[:8].decode("ascii", "replace")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"principal name {name!r} is not allowed: use 1-64 letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit")
    return name


def check_roles(roles: object, where: str) -> frozenset[str]:
    if not isinstance(roles, (list, tuple)) or not roles or \
            not all(isinstance(r, str) for r in roles):
        raise ConfigError(f"{where}: roles must be a non-empty list of role names "
                          f"({', '.join(ROLES)})")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ConfigError(f"{where}: unknown role {', '.join(unknown)}; the roles are "
                          f"{', '.join(ROLES)}")
    return frozenset(roles)


def check_prefixes(prefixes: object, where: str) -> tuple[str, ...]:
    if not isinstance(prefixes, (list, tuple)) or \
            not all(isinstance(p, str) and p.startswith("/") and p.isprintable()
                    for p in prefixes):
        raise ConfigError(f"{where}: prefixes must be a list of key prefixes starting with "
                          "'/', such as [\"/teams/etl/\"]")
    return tuple(prefixes)


def _check_key(value: object, field: str, where: str) -> bytes:
    if not isinstance(value, str) or not Z85_RE.match(value):
        raise ConfigError(f"{where}: {field} must be a CurveZMQ key in Z85 (40 characters); "
                          "make one with `mwcluster keys new`")
    return value.encode("ascii")


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the key file {path} is not valid TOML ({exc}); write it again "
                          "with `mwcluster keys new`") from None


def new_keys(directory: str | os.PathLike[str], name: str, roles: list[str],
             prefixes: list[str] = (), *, force: bool = False) -> tuple[Path, Path]:
    """Write NAME.secret (mode 0600) and NAME.toml into `directory`; (secret, principal)."""
    check_name(name)
    roles_set = check_roles(list(roles), f"principal {name}")
    prefixes = check_prefixes(list(prefixes), f"principal {name}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    secret_path = folder / (name + SECRET_SUFFIX)
    public_path = folder / (name + PRINCIPAL_SUFFIX)
    if not force and (secret_path.exists() or public_path.exists()):
        raise ConfigError(f"{secret_path} or {public_path} exists already: remove them first "
                          "to make a new key for this name (or rotate: docs/security.md)")
    public, secret = zmq.curve_keypair()
    pub, sec = public.decode(), secret.decode()
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(f'# the secret key of {name}: keep it on the machine that acts as {name}\n'
                f'name = "{name}"\npublic_key = "{pub}"\nsecret_key = "{sec}"\n')
    roles_text = ", ".join(json.dumps(r) for r in sorted(roles_set))
    prefix_text = ", ".join(json.dumps(p) for p in prefixes)    # escaped: a TOML string
    public_path.write_text(f'# principal {name}: copy into the principals directory of the '
                           f'servers it talks to\nname = "{name}"\npublic_key = "{pub}"\n'
                           f'roles = [{roles_text}]\nprefixes = [{prefix_text}]\n')
    return secret_path, public_path


def read_secret(path: str | os.PathLike[str]) -> KeyPair:
    """The keypair of a NAME.secret file. A file others may read is refused."""
    # A key where a file belongs: never echo it. Z85 has '/', '.' and '-', so a 40-character
    # path may match too: a file that exists is a file.
    if Z85_RE.match(str(path).strip()) and not os.path.exists(path):
        raise ConfigError("a key was given where the path of a NAME.secret file belongs "
                          "(--key, key_file or MWCLUSTER_KEY): give the file's path")
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the secret key file {path}: {exc.strerror} (make one "
                          "with `mwcluster keys new NAME --role ROLE`)") from None
    if mode & 0o077:
        raise ConfigError(f"the secret key file {path} can be read by other users (mode "
                          f"{mode & 0o777:o}): run `chmod 600 {path}`")
    data = _read_toml(path)
    where = f"secret key file {path}"
    if "secret_key" not in data:
        raise ConfigError(f"{where} has no secret_key: is it a principal's .toml file? Give "
                          "the NAME.secret file written with it")
    name = check_name(data.get("name", ""))
    public = _check_key(data.get("public_key"), "public_key", where)
    secret = _check_key(data.get("secret_key"), "secret_key", where)
    if zmq.curve_public(secret) != public:
        raise ConfigError(f"{where}: public_key does not belong to its secret_key; write the "
                          "key again with `mwcluster keys new`")
    return KeyPair(name, public, secret)


def read_public(spec: str) -> bytes:
    """A public key: Z85 text, or the path of a principal (.toml) or a .secret file."""
    path = Path(spec or "")
    if Z85_RE.match(spec or "") and not path.is_file():   # a 40-character path is a file
        return spec.encode("ascii")
    if not path.is_file():
        shown = "(a 40-character value)" if len(spec.strip()) == 40 else repr(spec)
        raise ConfigError(f"server key {shown} is neither a Z85 public key (40 characters) "
                          "nor a key file: give the server principal's .toml file")
    if path.suffix == SECRET_SUFFIX:
        return read_secret(path).public
    return _check_key(_read_toml(path).get("public_key"), "public_key", f"key file {path}")


def read_principal(path: Path) -> Principal:
    data = _read_toml(path)
    where = f"principal file {path}"
    if "secret_key" in data:
        raise ConfigError(f"{where} holds a secret key: principals directories hold only "
                          "NAME.toml files; keep NAME.secret elsewhere")
    unknown = sorted(set(data) - {"name", "public_key", "roles", "prefixes"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(unknown)} (known: name, "
                          "public_key, roles, prefixes)")
    name = check_name(data.get("name", ""))
    return Principal(name, _check_key(data.get("public_key"), "public_key", where),
                     check_roles(data.get("roles"), where),
                     check_prefixes(data.get("prefixes", []), where))


def read_principals(directory: str | os.PathLike[str]) -> dict[bytes, Principal]:
    """The principals of every *.toml file in `directory`, by public key. Two files with the
    same name or key are refused: which one counts would be a guess."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"the principals directory {folder} does not exist (make keys into "
                          "it with `mwcluster keys new NAME --role ROLE --dir DIR`)")
    by_key: dict[bytes, Principal] = {}
    names: dict[str, Path] = {}
    for path in sorted(folder.glob("*" + PRINCIPAL_SUFFIX)):
        principal = read_principal(path)
        if principal.name in names:
            raise ConfigError(f"principals {names[principal.name]} and {path} have the same "
                              f"name {principal.name!r}: remove one")
        if principal.public_key in by_key:
            raise ConfigError(f"principal files {names[by_key[principal.public_key].name]} "
                              f"and {path} have the same public key: remove one")
        names[principal.name] = path
        by_key[principal.public_key] = principal
    return by_key
