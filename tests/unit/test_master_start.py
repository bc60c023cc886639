"""The start of a master that has a peer (nodes/master/start.py) against ROUTER stubs on
127.0.0.1: what the peer answers becomes core/failover's PeerView, and the decision."""

from __future__ import annotations

from helpers import Stub

from mwcluster.config import load_master_config
from mwcluster.core.failover import PeerView, StartAs
from mwcluster.nodes.master import start as master_start
from mwcluster.storage import epoch as epochs
from mwcluster.wire.protocol import Op, encode_reply


def _status_stub(status: dict) -> Stub:
    stub = Stub()
    stub.handler = lambda req, _ident: ([encode_reply(req.request_id, 0, 0, 0, status)]
                                        if req.op == Op.STATUS else [])
    return stub


def _config(tmp_path, **flags):
    return load_master_config(None, env={}, flags={"data_dir": str(tmp_path), **flags})


def test_a_peer_serving_under_a_higher_epoch_makes_this_node_a_standby(tmp_path):
    epochs.write_epoch(tmp_path, 4)
    peer = _status_stub({"role": "master", "epoch": 5, "client_endpoint": "tcp://x:1"})
    try:
        cfg = _config(tmp_path, peer_master_endpoint=peer.endpoint)
        view, status = master_start.ask_peer(cfg)
        assert view == PeerView("master", 5) and status["client_endpoint"] == "tcp://x:1"
        decision, _status = master_start.decide_start(cfg)
        assert decision is StartAs.STANDBY
    finally:
        peer.close()


def test_a_fenced_peer_or_a_standby_lets_it_serve(tmp_path):
    epochs.write_epoch(tmp_path, 4)
    fenced = _status_stub({"role": "fenced", "epoch": 9})
    standby = _status_stub({"role": "checkpoint", "epoch_seen": 4})
    try:
        cfg = _config(tmp_path, peer_master_endpoint=fenced.endpoint,
                      peer_status_endpoint=standby.endpoint)
        assert master_start.ask_peer(cfg)[0] == PeerView("standby", 4)
        assert master_start.decide_start(cfg)[0] is StartAs.MASTER
    finally:
        fenced.close()
        standby.close()


def test_an_unreachable_peer_waits_unless_forced(tmp_path):
    silent = Stub(handler=lambda req, _ident: [])
    try:
        cfg = _config(tmp_path, peer_master_endpoint=silent.endpoint)
        assert master_start.ask_peer(cfg, timeout_s=0.05)[0] == PeerView(None)
        assert master_start.decide_start(cfg, force=True)[0] is StartAs.MASTER
        asked = []
        decision, _ = master_start.decide_start(
            cfg, stop_requested=lambda: asked.append(1) or len(asked) > 1)
        assert decision is StartAs.WAIT and len(asked) == 2
    finally:
        silent.close()
