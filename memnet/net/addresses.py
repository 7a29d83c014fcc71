"""What a node advertises as its addresses: in identify, in its signed peer record and in the
provider records the DHT stores for its cubes (py-libp2p takes all three from host.get_addrs()).

In order, most useful first:
    confirmed   addresses peers dialed us back at (memnet/net/autonat.py)
    announce    what the user says a port forward makes reachable (--announce)
    mapped      the router's address and port of a UPnP mapping
    listen      the listen addresses, a wildcard expanded to this machine's interface addresses
                (loopback left out) - good on a LAN, useless across a NAT, so last of the direct ones
    circuits    /ip4/R/tcp/N/p2p/RELAY/p2p-circuit per relay holding a reservation for us

py-libp2p's own get_addrs() cannot carry a circuit address: it strips the first /p2p/ of every
address and appends ours, which turns RELAY's address into a false one of ours. So the host's
get_addrs is replaced on the instance, and what it returns ends in our /p2p/ id once.
"""

from __future__ import annotations

import multiaddr
from libp2p.abc import IHost
from libp2p.utils.address_validation import expand_wildcard_address

WILDCARDS = ("0.0.0.0", "::")


def is_circuit(addr: multiaddr.Multiaddr) -> bool:
    return "/p2p-circuit" in str(addr)


def _dedup(addrs: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    seen: dict[str, multiaddr.Multiaddr] = {}
    for addr in addrs:
        seen.setdefault(str(addr), addr)
    return list(seen.values())


class Addresses:
    def __init__(self, host: IHost, announce: list[str] | tuple[str, ...] = ()):
        self.host = host
        self.announce = [multiaddr.Multiaddr(a) for a in announce]
        self.confirmed: list[multiaddr.Multiaddr] = []
        self.mapped: list[multiaddr.Multiaddr] = []
        self.circuits: dict[str, multiaddr.Multiaddr] = {}   # relay peer id -> /.../p2p/RELAY/p2p-circuit
        self._me = multiaddr.Multiaddr(f"/p2p/{host.get_id()}")

    def install(self) -> None:
        self.host.get_addrs = self.advertised  # type: ignore[method-assign]

    def listen(self) -> list[multiaddr.Multiaddr]:
        out = []
        for addr in self.host.get_transport_addrs():
            if any(f"/{w}/" in str(addr) for w in WILDCARDS):
                out += [a for a in expand_wildcard_address(addr) if "/127." not in str(a) and "/::1/" not in str(a)]
            else:
                out.append(addr)
        return _dedup(out)

    def listen_ports(self) -> list[int]:
        ports = []
        for addr in self.host.get_transport_addrs():
            try:
                ports.append(int(addr.value_for_protocol("tcp")))
            except Exception:
                continue
        return sorted(set(ports))

    def direct(self) -> list[multiaddr.Multiaddr]:
        return _dedup(self.confirmed + self.announce + self.mapped + self.listen())

    def advertised(self) -> list[multiaddr.Multiaddr]:
        return [a.encapsulate(self._me) for a in self.direct() + list(self.circuits.values())]
