"""CURVE on the sockets: a server's setup with its ZAP handler, a client's, and the watch that
tells a client why a server refused its handshake.

A server socket is made CURVE only through `ServerSecurity.serve`, which starts the ZAP
handler (`Gate`: pyzmq's ThreadAuthenticator asking the current principals) on the socket's
context first and sets ZMQ_ZAP_ENFORCE_DOMAIN, so a CURVE server that admits any key cannot be
made here: without a running handler every handshake fails. The handler admits a key only if
it is an allowed principal (for the log stream's domain, one with the replica or admin role)
and makes the key, in Z85, the User-Id of every message on the connection (access.py).

A client (`Credentials`: its own keypair, the server's public key) reads a server's refusal
from a socket monitor (`HandshakeWatch`): libzmq reports the handshake's failure there and
nowhere else, so without it a refused client would only time out.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import NamedTuple

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from mwcluster.errors import AuthenticationFailed, ConfigError
from mwcluster.security.access import Access, allows_stream
from mwcluster.security.keys import (KeyPair, Principal, fingerprint, read_principals,
                                     read_public, read_secret)

log = logging.getLogger(__name__)

DOMAIN = "mwcluster"               # every request socket
STREAM_DOMAIN = "mwcluster.stream"  # the master's PUB: replica and admin principals only
ENV_KEY = "MWCLUSTER_KEY"
ENV_SERVER_KEY = "MWCLUSTER_SERVER_KEY"


class Credentials(NamedTuple):
    """What a client presents: its keypair, and the public key of the server it expects."""
    keypair: KeyPair
    server_key: bytes

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.keypair.secret
        sock.curve_publickey = self.keypair.public
        sock.curve_serverkey = self.server_key

    @classmethod
    def load(cls, key_file: str | None, server_key: str | None,
             env: Mapping[str, str] | None = None) -> Credentials | None:
        """From a key file and a server key, each else its environment variable
        (MWCLUSTER_KEY, MWCLUSTER_SERVER_KEY); None when neither gives a key (a plain client).
        A server key without the client's own key, or the reverse, is a ConfigError."""
        env = os.environ if env is None else env
        key_file = key_file or env.get(ENV_KEY) or None
        server_key = server_key or env.get(ENV_SERVER_KEY) or None
        if key_file is None and server_key is None:
            return None
        if key_file is None or server_key is None:
            missing = "the client's key file (--key or MWCLUSTER_KEY)" if key_file is None \
                else "the server's public key (--server-key or MWCLUSTER_SERVER_KEY)"
            raise ConfigError(f"a CURVE client needs its own key and the server's: {missing} "
                              "is not given")
        return cls(read_secret(key_file), read_public(server_key))


def as_credentials(creds: Credentials | None, key_file: str | None,
                   server_key: str | None) -> Credentials | None:
    """Credentials given, else loaded from files and the environment (Credentials.load)."""
    return creds if creds is not None else Credentials.load(key_file, server_key)


class _Principals:
    """The ZAP handler's question, asked on its thread: is this key allowed in this domain?"""

    def __init__(self, principals: dict[bytes, Principal]) -> None:
        self.principals = principals

    def callback(self, domain: str, key: bytes) -> bool:
        principal = self.principals.get(key)
        if principal is None:
            log.info("refused a CURVE connection: key %s is not an allowed principal",
                     fingerprint(key))
            return False
        if domain == STREAM_DOMAIN and not allows_stream(principal):
            log.info("refused %r on the log stream: it needs the role replica or admin",
                     principal.name)
            return False
        return True


class ServerSecurity:
    """A node's CURVE identity and its allowed principals: its sockets serve with its key,
    its ZAP handler and `access` read the principals, `reload()` reads them again."""

    def __init__(self, keypair: KeyPair, principals_dir: str,
                 server_key: bytes | None = None) -> None:
        self.keypair = keypair
        self.principals_dir = principals_dir
        # the server key this node presents when it connects to its peers: by default its
        # own (a master and its checkpoint node share the cluster's server key)
        self.server_key = server_key or keypair.public
        principals = read_principals(principals_dir)
        self.access = Access(principals)
        self._provider = _Principals(principals)
        self._gates: list[ThreadAuthenticator] = []
        self.reloads = 0

    @classmethod
    def from_config(cls, key_file: str, principals_dir: str,
                    server_key: str = "") -> ServerSecurity | None:
        """None when `key_file` is empty (no CURVE); a ConfigError for a half configuration."""
        if not key_file:
            if principals_dir:
                raise ConfigError("principals_dir is set but key_file is not: a server needs "
                                  "its own secret key (key_file) to use CURVE")
            return None
        if not principals_dir:
            raise ConfigError("key_file is set but principals_dir is not: a CURVE server needs "
                              "the directory of allowed principals (their NAME.toml files)")
        return cls(read_secret(key_file), principals_dir,
                   read_public(server_key) if server_key else None)

    def credentials(self) -> Credentials:
        return Credentials(self.keypair, self.server_key)

    def serve(self, sock: zmq.Socket, domain: str = DOMAIN) -> None:
        """Make `sock` a CURVE server whose every connection passes this node's ZAP handler
        (started on the socket's context, once per context). Call before bind."""
        ctx = sock.context
        if not any(gate.context is ctx for gate in self._gates):
            gate = ThreadAuthenticator(ctx, log=logging.getLogger("mwcluster.security.zap"))
            gate.start()
            for name in (DOMAIN, STREAM_DOMAIN):
                gate.configure_curve_callback(domain=name, credentials_provider=self._provider)
            self._gates.append(gate)
        sock.curve_server = True
        sock.curve_secretkey = self.keypair.secret
        sock.curve_publickey = self.keypair.public
        sock.zap_domain = domain.encode()
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def reload(self) -> int:
        """Read the principals directory again; a bad directory keeps the current principals
        and raises ConfigError. Returns how many principals are allowed now."""
        principals = read_principals(self.principals_dir)
        self._provider.principals = principals
        self.access.reload(principals)
        self.reloads += 1
        return len(principals)

    def stream_keys(self) -> frozenset[bytes]:
        """The keys the log stream's domain admits now."""
        return frozenset(key for key, p in self._provider.principals.items()
                         if allows_stream(p))

    def stop(self) -> None:
        """Stop the ZAP handlers (before their contexts are terminated)."""
        for gate in self._gates:
            gate.stop()
        self._gates.clear()


def loopback_only(endpoint: str) -> bool:
    """Whether a bind endpoint is reachable only from this machine."""
    if not endpoint.startswith("tcp://"):
        return True                       # ipc and inproc never leave the machine
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:                        # a literal address only: a name is resolved at bind
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def protect(endpoints: list[str], secured: bool, insecure: bool, what: str) -> str | None:
    """Protected mode: a node without keys may bind only loopback unless `insecure` is given.
    Raises ConfigError naming the endpoint; returns the warning to log at start when the
    node runs insecure (None when secured, or plain on loopback only)."""
    if secured:
        return None
    exposed = [e for e in endpoints if e and not loopback_only(e)]
    if not exposed:
        return None
    if not insecure:
        raise ConfigError(f"the {what} would listen on {', '.join(exposed)} without "
                          "authentication: anyone who reaches it could read and change "
                          "everything. Give it keys (key_file and principals_dir, "
                          "docs/security.md), bind 127.0.0.1, or pass --insecure")
    return (f"INSECURE: the {what} listens on {', '.join(exposed)} without authentication "
            "or encryption (--insecure): anyone who reaches it can read and change "
            "everything")


def security_status(security: ServerSecurity | None, insecure_warning: str | None,
                    unauthorized: int, audit_log: str | None = None,
                    audit_lost: int = 0) -> dict:
    """The `security` part of a node's STATUS: whether CURVE is on, how many principals,
    whether it runs insecure (protected mode off on a public address). Never a key."""
    return {
        "curve": security is not None,
        "principals": len(security.access.grants) if security else 0,
        "principal_reloads": security.reloads if security else 0,
        "insecure": insecure_warning is not None,
        "unauthorized_requests": unauthorized,
        "audit_log": audit_log,
        "audit_lines_lost": audit_lost,     # not written: the audit log's disk failed
    }


class HandshakeWatch:
    """The handshake events of one client socket, read without blocking: `failure()` says
    why the server refused it (or None). `fd`/`sock` can join a poller."""

    _EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH |
               zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)

    def __init__(self, sock: zmq.Socket, creds: Credentials | None, endpoint: str) -> None:
        self._client = sock
        self.sock = sock.get_monitor_socket(self._EVENTS)
        self.creds = creds
        self.endpoint = endpoint
        self._no_detail = 0
        self.succeeded = False

    def failure(self) -> AuthenticationFailed | None:
        while self.sock.poll(0):
            event = recv_monitor_message(self.sock)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded, self._no_detail = True, 0
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return AuthenticationFailed(self._refused())
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                return AuthenticationFailed(self._mismatch())
            elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self._no_detail += 1           # the server closed it: ask twice to be sure
                if self._no_detail >= 2:
                    return AuthenticationFailed(self._mismatch() if self.creds is None
                                                else self._wrong_server_key())
        return None

    def raise_refused(self) -> None:
        """Raise the AuthenticationFailed a refused handshake left, if any."""
        refused = self.failure()
        if refused is not None:
            raise refused

    def _refused(self) -> str:
        keypair = self.creds.keypair if self.creds else None
        who = f"{keypair.name} (key {fingerprint(keypair.public)})" if keypair else "this client"
        return (f"the server at {self.endpoint} refused the key of {who}: it is not an "
                "allowed principal there (unknown, removed or rotated). Copy its NAME.toml "
                "into the server's principals directory and reload (kill -HUP, or "
                "`mwcluster keys reload`), or use an allowed key")

    def _mismatch(self) -> str:
        if self.creds is None:
            return (f"the server at {self.endpoint} requires CURVE authentication and this "
                    "client has no key: give --key and --server-key (or MWCLUSTER_KEY and "
                    "MWCLUSTER_SERVER_KEY)")
        return (f"the server at {self.endpoint} does not speak CURVE (it runs without keys, "
                "or is not an mwcluster server): connect without a key, or give the server "
                "its keys")

    def _wrong_server_key(self) -> str:
        # libzmq reports both the same way to the client: the server closed the connection
        return (f"the server at {self.endpoint} closed the CURVE handshake: the server key "
                f"given ({fingerprint(self.creds.server_key)}) is not that server's public "
                "key (give the server principal's .toml file, or its Z85 public key, as "
                "--server-key / MWCLUSTER_SERVER_KEY), or the server runs without keys and "
                "does not speak CURVE")

    def close(self) -> None:
        try:
            self._client.disable_monitor()
        except zmq.ZMQError:
            pass
        self.sock.close(linger=0)


def secure_client(sock: zmq.Socket, creds: Credentials | None, endpoint: str) -> HandshakeWatch:
    """Apply `creds` (None: plain) to a client socket before it connects, and watch its
    handshakes."""
    if creds is not None:
        creds.apply(sock)
    return HandshakeWatch(sock, creds, endpoint)
