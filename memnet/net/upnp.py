"""A port mapping on the home router (UPnP IGD, through the miniupnpc package).

py-libp2p's new_host(enable_upnp=True) holds the host's start for discovery (about 4 s with no
router), maps without a lease, never renews and never advertises the result. Here discovery
runs in a worker thread after the daemon is up, each mapping has a lease renewed at half time,
and the mapped address goes to the advertised ones (memnet/net/addresses.py) once a peer has
dialed it (reachability probes), since a router may map a port that its own upstream NAT blocks.
miniupnpc blocks, so every call runs in a thread.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

import trio

log = logging.getLogger("memnet.upnp")

LEASE = 3600            # s; renewed at half time
DISCOVER_DELAY_MS = 2000


@dataclass
class Mapping:
    external_ip: str | None = None
    ports: list[int] = field(default_factory=list)
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return self.error
        return f"{self.external_ip} ports {', '.join(map(str, self.ports))}" if self.ports else "none"


class PortMapper:
    def __init__(self, ports: list[int], description: str = "memnet"):
        self.wanted, self.description = ports, description
        self.mapping = Mapping()
        self._igd = None

    def _discover(self):
        import miniupnpc

        igd = miniupnpc.UPnP()
        igd.discoverdelay = DISCOVER_DELAY_MS
        try:
            found = igd.discover()
        except Exception:  # miniupnpc raises Exception('Success') when nothing answered
            found = 0
        if not found:
            raise OSError("no UPnP router answered")
        try:
            igd.selectigd()
        except Exception as exc:
            raise OSError(f"no usable UPnP gateway ({exc})") from None
        external = igd.externalipaddress()
        try:
            address = ipaddress.ip_address(external)
        except ValueError:
            raise OSError(f"the router reports no external address ({external!r})") from None
        if address.is_private or address in ipaddress.ip_network("100.64.0.0/10"):
            raise OSError(f"the router's own address {external} is private: another NAT sits above it")
        return igd, external

    def _map(self, igd) -> list[int]:
        done = []
        for port in self.wanted:
            try:
                if igd.addportmapping(port, "TCP", igd.lanaddr, port, self.description, "", LEASE):
                    done.append(port)
            except Exception as exc:  # a conflict with another machine's mapping, a refusal
                log.info("UPnP: the router refused to map TCP port %d: %s", port, exc)
        return done

    async def open(self) -> Mapping:
        try:
            self._igd, external = await trio.to_thread.run_sync(self._discover, abandon_on_cancel=True)
            ports = await trio.to_thread.run_sync(self._map, self._igd, abandon_on_cancel=True)
        except OSError as exc:
            self.mapping = Mapping(error=str(exc))
            return self.mapping
        self.mapping = Mapping(external, ports, None if ports else "the router refused every mapping")
        if ports:
            log.info("UPnP: the router maps %s TCP %s to this node", external, ports)
        return self.mapping

    async def keep(self) -> None:
        """Renew the mappings at half their lease, until cancelled."""
        while self._igd is not None and self.mapping.ports:
            await trio.sleep(LEASE / 2)
            ports = await trio.to_thread.run_sync(self._map, self._igd, abandon_on_cancel=True)
            if ports != self.mapping.ports:
                self.mapping = Mapping(self.mapping.external_ip, ports, None if ports else "mapping lost")

    def close(self) -> None:
        """Remove the mappings (a crash leaves them to expire with their lease)."""
        if self._igd is None:
            return
        for port in self.mapping.ports:
            try:
                self._igd.deleteportmapping(port, "TCP")
            except Exception:
                pass
        self._igd = None
