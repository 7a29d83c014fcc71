"""The NAT testbed itself (tests/nat_testbed.py) behaves like the NATs it stands for: the other
NAT tests lean on these properties."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.nat_testbed import Testbed, ensure_tools, leftover_namespaces

_why = ensure_tools()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=_why or "")]

# A TCP server that answers each connection with the address it came from, and a client that
# prints that answer beside its own local address (or FAIL).
SERVER = """import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()
while True:
    c, a = s.accept(); c.sendall(f"{a[0]}:{a[1]}".encode()); c.close()"""
CLIENT = """import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(s.recv(100).decode(), "%s:%d" % s.getsockname())
except OSError as e:
    print("FAIL", type(e).__name__)"""
UPNP = """import miniupnpc
u = miniupnpc.UPnP(); u.discoverdelay = 1000
assert u.discover() >= 1; u.selectigd()
print(u.externalipaddress(), u.addportmapping(7003, "TCP", u.lanaddr, 7003, "memnet test", ""))"""


def _serve(host, port: int) -> subprocess.Popen:
    proc = host.popen([sys.executable, "-c", SERVER, str(port)])
    time.sleep(0.3)
    return proc


def _dial(host, ip: str, port: int) -> tuple[str, str]:
    seen, _, local = host.run(sys.executable, "-c", CLIENT, ip, str(port)).strip().partition(" ")
    return seen, local


def test_cone_nat_keeps_ports_and_admits_only_replies_until_a_port_is_forwarded():
    with Testbed() as bed:
        server = bed.add_public("srv")
        router = bed.add_router("r", "cone")
        home = bed.add_home(router, "h")
        _serve(server, 7000), _serve(server, 7001), _serve(home, 7002)
        first, local = _dial(home, server.ip, 7000)
        assert first.split(":")[0] == router.ip  # the server sees the router, not 10.x
        assert first.split(":")[1] == local.split(":")[1]  # masquerade kept the source port
        assert _dial(server, home.ip, 7002)[0] == "FAIL"  # no route into the LAN
        assert _dial(server, router.ip, 7002)[0] == "FAIL"  # and the router lets nothing in
        bed.forward_port(router, home, 7002)
        assert _dial(server, router.ip, 7002)[0].startswith(server.ip + ":")


def test_symmetric_nat_gives_every_flow_its_own_random_port():
    with Testbed() as bed:
        server = bed.add_public("srv")
        router = bed.add_router("r", "symmetric")
        home = bed.add_home(router, "h")
        _serve(server, 7000), _serve(server, 7001)
        seen = [_dial(home, server.ip, port) for port in (7000, 7001, 7000)]
        assert all(address.split(":")[0] == router.ip for address, _ in seen)
        changed = [address.split(":")[1] != local.split(":")[1] for address, local in seen]
        assert sum(changed) >= 2  # a random port may coincide with the local one, rarely twice


def test_upnp_router_maps_a_port_that_the_internet_can_then_reach():
    with Testbed() as bed:
        server = bed.add_public("srv")
        router = bed.add_router("r", "cone", upnp=True)
        home = bed.add_home(router, "h")
        _serve(home, 7003)
        assert _dial(server, router.ip, 7003)[0] == "FAIL"
        time.sleep(0.5)  # miniupnpd binds its sockets
        python = str(sys.executable)
        external, mapped = home.run(python, "-c", UPNP).split()
        assert (external, mapped) == (router.ip, "True")
        assert _dial(server, router.ip, 7003)[0].startswith(server.ip + ":")


def test_close_removes_every_namespace_even_after_a_failure():
    bed = Testbed()
    tag = bed.tag
    with pytest.raises(Exception):
        with bed:
            bed.add_router("r", "cone")
            bed.add_router("r", "cone")  # the same namespace twice fails
    assert not [ns for ns in leftover_namespaces() if ns.startswith(tag + "-")]
