"""Keys for a cluster on this machine (docs/security.md): one directory holding the cluster's
server key and a principal for each part, made with the same code as `mwcluster keys new`.

    keys = ClusterKeys(tmp / "keys")          # server (replica), admin, client (write),
    master = MasterProcess(d, keys=keys)      #   reader (read); a worker key on demand
    client = Client(master.client_endpoint, credentials=keys.credentials("client"))

The directory is the principals directory of every server, and holds the secret files too:
acceptable for a cluster on one machine, where one user owns every process; on real machines
each secret stays on its own machine (docs/security.md, "Key management").
"""

from __future__ import annotations

import os
from pathlib import Path

from mwcluster.security.curve import Credentials
from mwcluster.security.keys import new_keys, read_public, read_secret

__all__ = ["ClusterKeys"]

BASE_PRINCIPALS = (("server", ["replica"]), ("admin", ["admin"]), ("client", ["write"]),
                   ("reader", ["read"]))


class ClusterKeys:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        for name, roles in BASE_PRINCIPALS:
            if not self.secret(name).exists():
                new_keys(self.dir, name, roles)

    def secret(self, name: str) -> Path:
        return self.dir / f"{name}.secret"

    def public(self, name: str) -> Path:
        return self.dir / f"{name}.toml"

    def add(self, name: str, roles: list[str], prefixes: list[str] = (), *,
            force: bool = False) -> Path:
        """A principal of its own (a worker: role worker, named as its worker id)."""
        if force or not self.secret(name).exists():
            new_keys(self.dir, name, roles, prefixes, force=force)
        return self.secret(name)

    def credentials(self, name: str = "client", server: str = "server") -> Credentials:
        """What a client acting as `name` presents to the server acting as `server`."""
        return Credentials(read_secret(self.secret(name)), read_public(str(self.public(server))))

    def env(self, name: str = "client") -> dict[str, str]:
        """MWCLUSTER_KEY and MWCLUSTER_SERVER_KEY for a command acting as `name`."""
        return {"MWCLUSTER_KEY": str(self.secret(name)),
                "MWCLUSTER_SERVER_KEY": str(self.public("server"))}

    def server_args(self) -> list[str]:
        """The options of a master or checkpoint node: the cluster's server key."""
        return ["--key-file", str(self.secret("server")), "--principals-dir", str(self.dir)]

    def worker_args(self, worker_id: str) -> list[str]:
        """The options of a worker named `worker_id`: a worker principal of that name."""
        self.add(worker_id, ["worker"])
        return ["--key-file", str(self.secret(worker_id)),
                "--server-key", str(self.public("server")), "--principals-dir", str(self.dir)]
