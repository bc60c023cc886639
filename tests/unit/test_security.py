"""Keys, principals, the role table and the master's access check, in memory (no sockets).

The role table is stated here a second time, from the issue's words, op by op, and compared
with security/access.py for every role and every operation; the handlers are driven with the
User-Id a CURVE connection would carry.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
from pathlib import Path

import msgpack
import pytest
import zmq

from mwcluster.errors import ConfigError
from mwcluster.nodes.master.audit import AuditLog
from mwcluster.nodes.master.handlers import Drain, Handlers
from mwcluster.nodes.master.stats import MasterStats
from mwcluster.security.access import Access
from mwcluster.security.curve import Credentials, loopback_only, protect
from mwcluster.security.keys import (ROLES, Z85_RE, Principal, new_keys, read_principals,
                                     read_public, read_secret)
from mwcluster.wire.protocol import ErrorCode, Op, decode_reply, encode_request

EPOCH = 3

READ = {Op.GET, Op.STAT, Op.CHILDREN, Op.LIST, Op.JOB_LIST, Op.JOB_STATUS, Op.JOB_TASKS,
        Op.STANDBY_READ, Op.RANGE, Op.WATCH}
ANYONE = {Op.STATUS, Op.PING, Op.BATCH}
WRITE = {Op.PUT, Op.MERGE, Op.DELETE, Op.MULTI, Op.JOB_SUBMIT, Op.JOB_CANCEL, Op.JOB_DELETE,
         Op.LEASE_GRANT, Op.LEASE_REVOKE, Op.LEASE_KEEPALIVE}
WORKER = {Op.WORKER_REGISTER, Op.WORKER_HEARTBEAT, Op.TASK_REQUEST, Op.TASK_PROGRESS,
          Op.TASK_FINISH, Op.WORKER_LEAVE}
REPLICA = {Op.FETCH, Op.SNAPSHOT_INFO, Op.SNAPSHOT_CHUNK, Op.SNAPSHOT_UPLOAD_BEGIN,
           Op.SNAPSHOT_UPLOAD_CHUNK, Op.SNAPSHOT_UPLOAD_END, Op.SNAPSHOT_UPLOAD_ABORT,
           Op.CHECKPOINT_HELLO, Op.REPLICA_ACK}
EXPECTED = {
    "read": ANYONE | READ,
    "write": ANYONE | READ | WRITE | {Op.VOTE},
    "worker": ANYONE | WORKER | {Op.VOTE},
    "replica": ANYONE | REPLICA,
    "admin": set(Op),
}


def principal(name: str, roles, prefixes=()) -> tuple[bytes, Principal]:
    public, _secret = zmq.curve_keypair()
    return public, Principal(name, public, frozenset(roles), tuple(prefixes))


def args_for(op: int, name: str) -> list:
    """Well-formed enough args: a key under /teams/etl/ or the principal's own worker id."""
    if op in WORKER:
        return [name, "x", 1]
    if op == Op.MULTI:
        return [[[int(Op.PUT), "/teams/etl/a", b"", None]]]
    return ["/teams/etl/a", b"", None]


@pytest.mark.parametrize("role", ROLES)
def test_every_role_against_every_operation(role):
    key, p = principal("w1", [role])
    access = Access({key: p})
    user = key.decode()
    allowed = {op for op in Op if access.check(user, op, args_for(op, "w1")) is None}
    assert allowed == EXPECTED[role]
    for op in set(Op) - allowed:
        why = access.check(user, op, args_for(op, "w1"))
        assert "'w1'" in why and Op(op).name in why and "needs the role" in why


def test_prefixes_limit_writes_to_their_keys_and_forbid_job_changes():
    key, p = principal("etl", ["write"], ["/teams/etl/"])
    access = Access({key: p})
    user = key.decode()
    assert access.check(user, Op.PUT, ["/teams/etl/x", b"", None]) is None
    assert access.check(user, Op.DELETE, ["/teams/etl/x", None]) is None
    why = access.check(user, Op.PUT, ["/teams/other/x", b"", None])
    assert "/teams/etl/" in why and "'/teams/other/x'" in why
    multi = [[int(Op.PUT), "/teams/etl/a", b"", None], [int(Op.DELETE), "/b", None]]
    assert "'/b'" in access.check(user, Op.MULTI, [multi])
    assert access.check(user, Op.MULTI, ["not a list"]) is not None
    assert access.check(user, Op.PUT, [42, b"", None]) is not None
    assert "jobs are not keys" in access.check(user, Op.JOB_SUBMIT, [None, "n", "h", 0, 1, []])
    assert access.check(user, Op.GET, ["/anything"]) is None      # reads are not scoped
    assert access.check(user, Op.WATCH, ["/", 1, None, 10, 0]) is None
    # a lease is granted and kept alive, but a revoke could delete keys outside the prefixes
    assert access.check(user, Op.LEASE_GRANT, [5000]) is None
    assert access.check(user, Op.LEASE_KEEPALIVE, [7]) is None
    why = access.check(user, Op.LEASE_REVOKE, [7])
    assert "LEASE_REVOKE" in why and "/teams/etl/" in why and "delete its keys" in why


def test_a_worker_acts_only_as_its_own_worker_id():
    key, p = principal("host1", ["worker"])
    access = Access({key: p})
    user = key.decode()
    assert access.check(user, Op.TASK_REQUEST, ["host1", 4]) is None
    assert access.check(user, Op.TASK_REQUEST, ["host1-2041", 4]) is None
    for other in (["host2", 4], ["host10", 4], ["host1x", 4], [], "bad", [None]):
        why = access.check(user, Op.TASK_FINISH, other)
        assert why is not None and "may act only as worker 'host1'" in why


def test_an_unknown_or_removed_key_is_refused_and_a_reload_takes_effect():
    key, p = principal("alice", ["write"])
    access = Access({key: p})
    user = key.decode()
    assert access.check(user, Op.PUT, ["/a", b"", None]) is None
    assert "not an allowed principal" in access.check(None, Op.PING, [])
    access.reload({})
    assert "not an allowed principal" in access.check(user, Op.PING, [])


def test_keys_new_writes_a_private_secret_and_a_public_principal(tmp_path):
    secret, public = new_keys(tmp_path, "alice", ["write", "read"], ["/a/"])
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pair = read_secret(secret)
    assert pair.secret.decode() not in public.read_text()
    assert pair.secret.decode() not in repr(pair)
    found = read_principals(tmp_path)
    assert found[pair.public] == Principal("alice", pair.public, frozenset({"read", "write"}),
                                           ("/a/",))
    assert read_public(str(public)) == read_public(str(secret)) == read_public(
        pair.public.decode()) == pair.public
    with pytest.raises(ConfigError, match="exists already"):
        new_keys(tmp_path, "alice", ["read"])
    new_keys(tmp_path, "alice", ["read"], force=True)       # a rotation: a new key
    assert read_secret(secret).public != pair.public


def test_bad_key_files_are_refused_with_what_to_do(tmp_path):
    secret, public = new_keys(tmp_path, "bob", ["read"])
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret(secret)
    os.chmod(secret, 0o600)
    with pytest.raises(ConfigError, match="no secret_key"):
        os.chmod(public, 0o600)
        read_secret(public)
    for text, match in (('name = "x"\npublic_key = "short"\nroles = ["read"]\n', "Z85"),
                        ('name = "x"\npublic_key = "%s"\nroles = ["god"]\n', "unknown role"),
                        ('name = "x y"\npublic_key = "%s"\nroles = ["read"]\n', "not allowed"),
                        ('name = "x"\npublic_key = "%s"\nroles = ["read"]\nextra = 1\n',
                         "unknown key"),
                        ('this is = not toml =', "not valid TOML")):
        (tmp_path / "bad.toml").write_text(text.replace("%s", zmq.curve_keypair()[0].decode()))
        with pytest.raises(ConfigError, match=match):
            read_principals(tmp_path)
    (tmp_path / "bad.toml").write_text(public.read_text())      # the same name twice
    with pytest.raises(ConfigError, match="same name"):
        read_principals(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_principals(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="neither a Z85"):
        read_public("not-a-key")



def test_a_key_file_whose_path_has_the_length_and_letters_of_a_key_is_read_as_a_file(
        tmp_path, monkeypatch):
    # Z85 has letters, digits, '/', '.' and '-': a 40-character path of those matches it
    monkeypatch.chdir(tmp_path)
    directory = Path("keys-0123456789abcdefghijk")              # 26 characters
    directory.mkdir()
    secret, public = new_keys(directory, "server", ["replica"])
    public = public.rename(directory / "server.tomlxx")
    assert len(str(secret)) == len(str(public)) == 40
    assert Z85_RE.match(str(secret)) and Z85_RE.match(str(public))
    pair = read_secret(str(secret))
    assert read_public(str(public)) == read_public(str(secret)) == pair.public

def test_credentials_need_both_halves(tmp_path):
    secret, public = new_keys(tmp_path, "c", ["read"])
    assert Credentials.load(None, None, env={}) is None
    assert Credentials.load(str(secret), str(public), env={}).keypair.name == "c"
    env = {"MWCLUSTER_KEY": str(secret), "MWCLUSTER_SERVER_KEY": str(public)}
    assert Credentials.load(None, None, env=env).server_key == read_public(str(public))
    with pytest.raises(ConfigError, match="server's public key"):
        Credentials.load(str(secret), None, env={})
    with pytest.raises(ConfigError, match="client's key file"):
        Credentials.load(None, str(public), env={})


def test_protected_mode_refuses_public_binds_without_keys():
    assert loopback_only("tcp://127.0.0.1:5550") and loopback_only("tcp://localhost:1")
    assert loopback_only("ipc:///tmp/x") and loopback_only("tcp://[::1]:5")
    assert not loopback_only("tcp://0.0.0.0:5550") and not loopback_only("tcp://*:5550")
    assert not loopback_only("tcp://10.0.0.5:1")
    assert protect(["tcp://127.0.0.1:0", ""], False, False, "master") is None
    assert protect(["tcp://0.0.0.0:1"], True, False, "master") is None     # keys: fine
    with pytest.raises(ConfigError, match="--insecure"):
        protect(["tcp://127.0.0.1:1", "tcp://0.0.0.0:1"], False, False, "master")
    assert "INSECURE" in protect(["tcp://*:1"], False, True, "master")


# --- the master's handlers with an access check ------------------------------------------


@pytest.fixture
def secured(engine, tmp_path):
    keys = dict([principal("alice", ["write"]), principal("bob", ["read"]),
                 principal("w1", ["worker"])])
    by_name = {p.name: k.decode() for k, p in keys.items()}
    audit = AuditLog(str(tmp_path / "audit.log"))
    h = Handlers(engine, EPOCH, MasterStats(), access=Access(keys), audit=audit)
    return h, by_name, audit


def ask(h, user, op, args, rid=1, epoch_seen=0):
    frame = encode_request(b"c1", rid, op, list(args), 0, epoch_seen)
    return decode_reply(h.handle(b"peer", frame, Drain(1.0), user, "10.1.2.3"))


def test_a_refused_request_applies_nothing_fences_nothing_and_is_counted(secured):
    h, who, audit = secured
    value = msgpack.packb(1)
    r = ask(h, who["bob"], Op.PUT, ["/a", value, None], epoch_seen=EPOCH + 5)
    assert r.status == ErrorCode.UNAUTHORIZED and "'bob'" in r.result[1]
    assert h.engine.state.txid == 0 and h.fence.fenced_by is None
    assert h.stats.errors_by_code[ErrorCode.UNAUTHORIZED] == 1
    assert ask(h, "an unknown key", Op.PING, [], rid=2).status == ErrorCode.UNAUTHORIZED
    assert ask(h, None, Op.PING, [], rid=3).status == ErrorCode.UNAUTHORIZED
    r = ask(h, who["alice"], Op.PUT, ["/a", value, None], rid=4)
    assert (r.status, r.txid) == (0, 1)
    assert ask(h, who["bob"], Op.GET, ["/a"], rid=5).result[0] == value
    audit.flush()
    lines = open(audit.path).read().splitlines()
    assert len(lines) == 4           # every refusal, and the write
    fields = [dict(part.split("=", 1) for part in shlex.split(line)) for line in lines]
    assert fields[0]["principal"] == "bob" and fields[0]["result"] == "unauthorized"
    assert fields[0]["peer"] == "10.1.2.3" and fields[0]["op"] == "PUT"
    assert fields[0]["key"] == "/a" and fields[0]["txid"] == "0"
    assert fields[1]["principal"].startswith("key ") and fields[1]["op"] == "PING"
    assert fields[3]["principal"] == "alice" and fields[3]["result"] == "ok"
    assert fields[3]["txid"] == "1" and fields[3]["time"].endswith("Z")



def test_an_audit_line_stays_one_line_of_fields_whatever_a_refused_key_holds(secured):
    h, who, audit = secured
    hostile = ["/a\rop=DELETE", "/b\u2028result=ok", "/c\x1b[2J", "/d\x00", "/e f=g"]
    for rid, key in enumerate(hostile, 1):
        r = ask(h, who["bob"], Op.PUT, [key, msgpack.packb(1), None], rid=rid)
        assert r.status == ErrorCode.UNAUTHORIZED
    audit.flush()
    text = open(audit.path, encoding="utf-8").read()
    lines = text.split("\n")[:-1]
    assert len(lines) == len(hostile) and text.isascii()
    for line, key in zip(lines, hostile):
        fields = dict(part.split("=", 1) for part in shlex.split(line))
        assert fields["op"] == "PUT" and fields["result"] == "unauthorized", line
        assert json.loads(line.split(" key=", 1)[1].rsplit(" result=", 1)[0]) == key

def test_a_batch_is_checked_sub_request_by_sub_request(secured):
    h, who, _audit = secured
    value = msgpack.packb(2)
    subs = [[1, int(Op.PUT), 0, ["/x", value, None]], [2, int(Op.GET), 0, ["/x"]],
            [3, int(Op.FETCH), 0, [1, 1000]]]
    r = ask(h, who["alice"], Op.BATCH, subs, rid=9)
    assert [s[1] for s in r.result] == [0, 0, ErrorCode.UNAUTHORIZED]
    r = ask(h, who["bob"], Op.BATCH, subs, rid=10)
    assert [s[1] for s in r.result] == [ErrorCode.UNAUTHORIZED, 0, ErrorCode.UNAUTHORIZED]
    assert h.engine.state.txid == 1


def test_a_worker_key_cannot_report_another_workers_task(secured):
    h, who, _audit = secured
    assert ask(h, who["w1"], Op.WORKER_REGISTER, ["w1", "host", 2]).status == 0
    assert h.jobs.status_keys["w1"] == who["w1"]    # its status endpoint serves with it
    r = ask(h, who["w1"], Op.TASK_FINISH, ["w2", "job-1", 0, 1, True, None], rid=2)
    assert r.status == ErrorCode.UNAUTHORIZED and "'w2'" in r.result[1]


def test_reload_needs_an_admin_and_a_master_with_keys(engine):
    h = Handlers(engine, EPOCH, MasterStats())
    r = decode_reply(h.handle(b"p", encode_request(b"c", 1, Op.RELOAD_PRINCIPALS, [], 0),
                              Drain(1.0)))
    assert r.status == ErrorCode.BAD_REQUEST and "without keys" in r.result[1]
    calls = []
    h = Handlers(engine, EPOCH, MasterStats(), reload_principals=lambda: calls.append(1) or 5)
    r = decode_reply(h.handle(b"p", encode_request(b"c", 2, Op.RELOAD_PRINCIPALS, [], 0),
                              Drain(1.0)))
    assert (r.status, r.result, calls) == (0, 5, [1])


# --- hostile values, collisions, escapes (each once a way past the checks) -----------------


def deep(n: int = 2000):
    value: list = []
    for _ in range(n):
        value = [value]
    return value


def test_a_nested_value_is_refused_without_formatting_it():
    keys = dict([principal("etl", ["write"], ["/teams/etl/"]), principal("w", ["worker"])])
    access = Access(keys)
    etl, worker = (k.decode() for k, p in sorted(keys.items(), key=lambda kv: kv[1].name))
    why = access.check(etl, Op.PUT, [deep(), b"", None])
    assert "a list" in why and len(why) < 300
    assert "a list" in access.check(worker, Op.WORKER_HEARTBEAT, [deep(), []])
    assert len(access.check(etl, Op.PUT, ["/x" * 5000, b"", None])) < 400


def test_the_audit_names_types_of_odd_values_and_survives_a_full_disk(tmp_path):
    log = AuditLog(str(tmp_path / "a.log"))
    log.write("p", "", Op.PUT, [deep(), b"", None], 0, 1)
    log.write("p", "", Op.MULTI, [[[1, deep(), b"", None]]], 0, 2)
    log.flush()
    text = (tmp_path / "a.log").read_text()
    assert "key=(list)" in text and "keys=(list)" in text
    full = AuditLog("/dev/full")
    for i in range(2000):                      # more than its buffer: the writes fail
        full.write("p", "", Op.PUT, ["/k" * 50, b"", None], 0, i)
    full.close()
    assert full.lost > 0


def test_a_worker_principal_does_not_own_a_longer_principals_ids():
    keys = dict([principal("web", ["worker"]), principal("web-2", ["worker"])])
    access = Access(keys)
    web, web2 = (k.decode() for k, p in sorted(keys.items(), key=lambda kv: kv[1].name))
    assert access.check(web, Op.TASK_REQUEST, ["web-1", 1]) is None
    for other in ("web-2", "web-2-4711"):
        assert "belongs to principal 'web-2'" in access.check(web, Op.TASK_REQUEST, [other, 1])
        assert access.check(web2, Op.TASK_REQUEST, [other, 1]) is None


def test_retries_are_answered_per_principal(secured):
    h, who, _audit = secured
    first = ask(h, who["alice"], Op.PUT, ["/r", msgpack.packb(1), None], rid=77)
    # another principal reusing the same client id and request id is not a retry of it
    wanted = ask(h, who["w1"], Op.WORKER_REGISTER, ["w1", "h", 1], rid=77)
    assert (first.txid, wanted.status) == (1, 0) and wanted.txid == 2
    again = ask(h, who["alice"], Op.PUT, ["/r", msgpack.packb(1), None], rid=77)
    assert again.txid == 1 and h.engine.state.txid == 2     # alice's own retry: answered


def test_keys_new_escapes_what_it_writes(tmp_path):
    sneaky = '/teams/etl/", "/'
    new_keys(tmp_path, "etl", ["write"], [sneaky])
    (found,) = read_principals(tmp_path).values()
    assert found.prefixes == (sneaky,)
    with pytest.raises(ConfigError, match="prefixes"):
        new_keys(tmp_path, "ctl", ["write"], ["/a/\n"])


def test_no_message_echoes_a_key_given_in_the_wrong_place():
    public, secret = zmq.curve_keypair()
    for call in (lambda: read_secret(secret.decode()), lambda: read_public(secret.decode() + " ")):
        with pytest.raises(ConfigError) as info:
            call()
        assert secret.decode() not in str(info.value)
    assert not loopback_only("tcp://127.evil.example:5550")
    assert loopback_only("tcp://127.0.0.2:1") and not loopback_only("tcp://eth0:5550")
