"""NAT traversal on the namespaced testbed (issue 20): real memnet daemons behind real nftables
NATs and a miniupnpd router, a public relay and bootstrap node, addresses only inside the
testbed (tests/nat_testbed.py, tests/nat_swarm.py)."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.nat_swarm import PORT, NatSwarm
from tests.nat_testbed import Testbed, ensure_tools
from tests.swarm_helpers import notes_file

_why = ensure_tools()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=_why or "")]


@pytest.fixture
def bed():
    with Testbed() as testbed:
        yield testbed


@pytest.fixture
def swarm(bed, tmp_path):
    nodes = NatSwarm(bed, tmp_path)
    yield nodes
    nodes.close()


def _private_with_slot(nat: dict) -> bool:
    return nat["reachability"] == "private" and bool(nat["reservations"])


def _get(daemon, cube: str) -> tuple[str, str]:
    """(cube id printed, the line saying where it came from)."""
    done = daemon.cli("get", cube, timeout=180)
    return done.stdout.strip(), done.stderr


def test_cone_nats_punch_a_symmetric_nat_stays_relayed_and_private_nodes_keep_out_of_the_dht(bed, swarm, tmp_path):
    pub = bed.add_public("relay")
    home_a, home_b = bed.add_home(bed.add_router("ra", "cone"), "a"), bed.add_home(bed.add_router("rb", "cone"), "b")
    home_c = bed.add_home(bed.add_router("rc", "symmetric"), "c")
    relay = swarm.start(pub)
    a, b, c = (swarm.start(h, bootstrap=[relay]) for h in (home_a, home_b, home_c))
    assert relay.wait_nat(lambda n: n["reachability"] == "public", 30, "public")["confirmed"] == [
        f"/ip4/{pub.ip}/tcp/{PORT}"]
    for node in (a, b, c):
        nat = node.wait_nat(_private_with_slot, 60, "private with a relay slot")
        assert nat["dht_mode"] == "client" and nat["advice"] is None
        assert nat["reservations"][0]["addr"] == f"/ip4/{pub.ip}/tcp/{PORT}/p2p/{relay.peer_id}/p2p-circuit"
        assert any("/p2p-circuit/p2p/" + node.peer_id in addr for addr in node.status()["addrs"])
    # only reachable nodes are DHT servers: the relay's table holds none of the three
    time.sleep(6)  # a server checks its table every 5 s
    assert relay.status()["routing_table"] == 0

    cube = a.cli("publish", str(notes_file(tmp_path / "notes.txt", 3 << 20))).stdout.strip().split()[-1]
    got, said = _get(b, cube)
    assert got == cube and "(punched)" in said, said
    assert b.nat()["dials"]["punched"] == 1
    got, said = _get(c, cube)
    assert got == cube and "(relayed)" in said, said
    relayed = relay.nat()["relay"]
    assert relayed["circuits"] >= 2 and relayed["bytes"] > 3 << 20  # the symmetric NAT's chunks went through it


def test_upnp_is_reached_directly_a_port_forward_flips_reachability_and_the_stranded_get_advice(bed, swarm, tmp_path):
    pub = bed.add_public("boot")
    upnp_home = bed.add_home(bed.add_router("ru", "cone", upnp=True), "u")
    router_f = bed.add_router("rf", "cone")
    home_f = bed.add_home(router_f, "f")
    boot = swarm.start(pub, config={"nat.relay": "false"})  # no relay anywhere: a private node is stranded
    u = swarm.start(upnp_home, bootstrap=[boot], config={"nat.upnp": "true", "nat.relay": "false"})  # public too: no relay
    f = swarm.start(home_f, bootstrap=[boot])

    nat = u.wait_nat(lambda n: n["reachability"] == "public", 60, "public through UPnP")
    router_u = upnp_home.router
    assert nat["upnp"] == f"{router_u.ip} TCP {PORT}" and nat["confirmed"] == [f"/ip4/{router_u.ip}/tcp/{PORT}"]
    assert nat["dht_mode"] == "server" and nat["reservations"] == []

    nat = f.wait_nat(lambda n: n["reachability"] == "private", 60, "private")
    assert nat["reservations"] == [] and f"forward TCP port {PORT}" in nat["advice"]
    assert "advice:" in f.cli("status").stdout

    bed.forward_port(router_f, home_f, PORT)
    time.sleep(11)  # the witness answers one probe of an address per 10 s
    nat = json.loads(f.cli("reachability").stdout)  # probe now
    assert nat["reachability"] == "public", nat
    assert nat["confirmed"] == [f"/ip4/{router_f.ip}/tcp/{PORT}"] and nat["advice"] is None

    cube = u.cli("publish", str(notes_file(tmp_path / "notes.txt", 1 << 20))).stdout.strip().split()[-1]
    got, said = _get(f, cube)
    assert got == cube and not re.search(r"\((relayed|punched)\)", said), said
    assert f.nat()["dials"]["relayed"] == 0


def test_a_node_whose_relay_dies_reserves_on_another_and_withdraws_the_old_address(bed, swarm):
    relay_hosts = [bed.add_public("r1"), bed.add_public("r2")]
    home = bed.add_home(bed.add_router("rh", "cone"), "h")
    relays = [swarm.start(relay_hosts[0])]
    relays.append(swarm.start(relay_hosts[1], bootstrap=relays))
    node = swarm.start(home, bootstrap=relays, config={"nat.reservations": "1"})
    for relay in relays:
        relay.wait_nat(lambda n: n["relay"]["serving"], 30, "relay serving")
    first = node.wait_nat(_private_with_slot, 60, "a relay slot")["reservations"][0]["relay"]
    dead = next(r for r in relays if r.peer_id == first)
    dead.stop()
    nat = node.wait_nat(lambda n: n["reservations"] and n["reservations"][0]["relay"] != first, 60,
                        "a slot on the other relay")
    survivor = next(r for r in relays if r is not dead)
    assert nat["reservations"][0]["relay"] == survivor.peer_id
    addrs = node.status()["addrs"]
    assert not any(first in a for a in addrs) and any(survivor.peer_id in a for a in addrs)
