"""Reachability: the probe's wire format (truncated, oversized, forged, malformed input), the
verdict aggregation, the advice line, and real probes between libp2p hosts on loopback."""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.peerinfo import PeerInfo

from memnet.cube import canonical
from memnet.errors import FormatError, LimitError
from memnet.net import autonat, autonat_wire
from memnet.net.autonat_wire import DialMe, DialResult, Reader
from memnet.net.frames import frame
from memnet.net.host import build_host
from memnet.net.reachability import PRIVATE, PUBLIC, UNKNOWN, Reachability, advice, counts_as_witness
from tests import factories

# -- wire --------------------------------------------------------------------------------------


def test_dial_me_and_result_round_trip():
    assert Reader("dial_me").feed(autonat_wire.encode_dial_me([4737, 9000])) == DialMe((4737, 9000))
    ok = DialResult("ok", "/ip4/172.32.0.1/tcp/4737")
    assert Reader("dial_result").feed(autonat_wire.encode_dial_result(ok)) == ok
    assert Reader("dial_result").feed(autonat_wire.encode_dial_result(DialResult("refused"))) == DialResult("refused")


def test_a_message_split_anywhere_is_read_once_whole():
    data = autonat_wire.encode_dial_me([1, 2, 3])
    reader = Reader("dial_me")
    assert all(reader.feed(data[i:i + 1]) is None for i in range(len(data) - 1))
    assert reader.feed(data[-1:]) == DialMe((1, 2, 3))


@pytest.mark.parametrize("obj, error", [
    ({"t": "dial_me", "ports": []}, LimitError),
    ({"t": "dial_me", "ports": [1, 2, 3, 4, 5]}, LimitError),
    ({"t": "dial_me", "ports": [0]}, FormatError),
    ({"t": "dial_me", "ports": [70000]}, FormatError),
    ({"t": "dial_me", "ports": [True]}, FormatError),
    ({"t": "dial_me", "ports": [80, 80]}, FormatError),
    ({"t": "dial_me", "ports": "80"}, FormatError),
    ({"t": "dial_me", "ports": [80], "addr": "/ip4/8.8.8.8/tcp/53"}, FormatError),  # no third-party target
    ({"t": "dial_result", "status": "ok", "addr": ""}, FormatError),
    ({"t": "dial_me"}, FormatError),
    ([1, 2], FormatError),
])
def test_malformed_and_forged_requests_are_refused(obj, error):
    with pytest.raises(error):
        Reader("dial_me").feed(frame(canonical.encode(obj)))


@pytest.mark.parametrize("obj, error", [
    ({"t": "dial_result", "status": "maybe", "addr": ""}, FormatError),
    ({"t": "dial_result", "status": "ok", "addr": ""}, FormatError),
    ({"t": "dial_result", "status": "dial_error", "addr": "/ip4/1.2.3.4/tcp/1"}, FormatError),
    ({"t": "dial_result", "status": "ok", "addr": "/ip4/1.2.3.4/tcp/1" * 20}, LimitError),
    ({"t": "dial_result", "status": "ok"}, FormatError),
])
def test_malformed_results_are_refused(obj, error):
    with pytest.raises(error):
        Reader("dial_result").feed(frame(canonical.encode(obj)))


def test_truncated_oversized_and_trailing_input():
    data = autonat_wire.encode_dial_me([4737])
    reader = Reader("dial_me")
    assert reader.feed(data[:-1]) is None
    with pytest.raises(FormatError, match="truncated"):
        reader.eof()
    with pytest.raises(FormatError, match="before a dial_me"):
        Reader("dial_me").eof()
    with pytest.raises(LimitError):
        Reader("dial_me").feed(frame(b"\x80" * (autonat_wire.MAX_FRAME + 1)))
    with pytest.raises(FormatError, match="after the message"):
        Reader("dial_me").feed(data + b"\x01")
    with pytest.raises(FormatError):  # not canonical msgpack (a map with a float)
        Reader("dial_me").feed(frame(b"\x81\xa1t\xcb" + b"\x00" * 8))


def test_encoders_refuse_what_readers_would():
    with pytest.raises(LimitError):
        autonat_wire.encode_dial_me([])
    with pytest.raises(FormatError):
        autonat_wire.encode_dial_result(DialResult("ok", ""))


# -- verdicts ----------------------------------------------------------------------------------


def test_a_single_witness_decides_in_a_swarm_of_one_and_three_are_needed_in_a_larger_one():
    r = Reachability(confirmations=3)
    assert r.status == UNKNOWN
    assert r.record("172.32.0.10", "dial_error", "", now=1) and r.status == PRIVATE
    r.record("172.32.0.11", "ok", "/ip4/172.32.0.1/tcp/4737", now=2)
    assert r.status == PRIVATE  # 1:1 is no majority
    r.record("172.32.0.12", "ok", "/ip4/172.32.0.1/tcp/4737", now=3)
    assert r.status == PRIVATE  # 2 ok < 3 needed
    assert r.record("172.32.0.13", "ok", "/ip4/172.32.0.1/tcp/4737", now=4) and r.status == PUBLIC
    assert r.confirmed() == ["/ip4/172.32.0.1/tcp/4737"]


def test_refusals_are_no_votes_and_one_server_ip_counts_once():
    r = Reachability(confirmations=2)
    assert not r.record("172.32.0.10", "refused", "", now=1)
    r.record("172.32.0.10", "ok", "/ip4/x/tcp/1", now=1)
    r.record("172.32.0.10", "ok", "/ip4/x/tcp/1", now=2)
    assert len(r.votes) == 1 and r.status == PUBLIC  # needed = min(2, 1 witness)
    r.record("172.32.0.10", "dial_error", "", now=3)  # the same witness changed its mind
    assert r.status == PRIVATE and r.confirmed() == []


def test_votes_expire_and_the_status_returns_to_unknown():
    r = Reachability(confirmations=3, max_age=100)
    r.record("172.32.0.10", "ok", "/ip4/x/tcp/1", now=0)
    assert r.status == PUBLIC
    assert r.expire(now=101) and r.status == UNKNOWN and r.votes == {}


def test_lan_and_loopback_peers_are_no_witnesses_unless_asked():
    assert counts_as_witness("172.32.0.10", False)
    assert not counts_as_witness("10.1.0.3", False) and not counts_as_witness("127.0.0.1", False)
    assert counts_as_witness("127.0.0.1", True)
    assert not counts_as_witness("not an ip", True)


def test_advice_names_the_port_and_appears_only_when_needed():
    line = advice(PRIVATE, [4811], relayed=False, upnp=None)
    assert "forward TCP port 4811" in line and "--announce /ip4/" in line and "\n" not in line
    assert advice(PRIVATE, [4811], relayed=True, upnp=None) is None
    assert advice(PUBLIC, [4811], relayed=False, upnp=None) is None
    assert advice(UNKNOWN, [4811], relayed=False, upnp=None) is None


# -- real probes on loopback -------------------------------------------------------------------


async def _probe_pair(client_listens: bool, wrong_port: bool = False):
    server, client = build_host(factories.key("autonat-server")), build_host(factories.key("autonat-client"))
    answering = autonat.AutonatServer(server, ip_interval=0)
    server.set_stream_handler(autonat.PROTOCOL, answering.handle)
    async with server.run([autonat.tcp_addr("127.0.0.1", 0)]):
        listen = [autonat.tcp_addr("127.0.0.1", 0)] if client_listens else []
        async with client.run(listen):
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            ports = [int(a.value_for_protocol("tcp")) for a in client.get_addrs()] or [1]
            if wrong_port:
                ports = [p + 1 if p < 65535 else p - 1 for p in ports]
            before = len(server.get_network().get_connections(client.get_id()))
            result = await autonat.probe(client, server.get_id(), ports)
            after = len(server.get_network().get_connections(client.get_id()))
            return result, before, after, answering.answered


def test_a_listening_node_is_dialed_back_on_a_new_connection():
    result, before, after, answered = trio.run(_probe_pair, True)
    assert result.status == "ok" and result.addr.startswith("/ip4/127.0.0.1/tcp/")
    assert before == after == 1  # the dial-back connection was closed again
    assert answered["ok"] == 1


def test_an_address_nobody_listens_on_is_not_reachable():
    # py-libp2p's own AutoNAT says "ok" here (its dial-back reuses the open connection)
    result, _, _, answered = trio.run(_probe_pair, True, True)
    assert result == DialResult("dial_error") and answered["dial_error"] == 1
