"""The nat service: whether peers can dial this node, and what follows from it (issue 20).

    probes       ask up to nat.probe_peers connected peers at once to dial us back on a new
                 connection (memnet/net/autonat.py); verdicts aggregate per witness IP
                 (memnet/net/reachability.py) into public, private or unknown
    UPnP         a port mapping on the router, renewed; probed like any address
    public       confirmed addresses advertised; relay for private nodes (nat.relay); DHT server
    private      slots on nat.reservations relays, their circuit addresses advertised; DHT client
                 (nat.dht_client_when_private); one line of advice while no relay holds a slot
    every dial   direct first, else through a relay, then a hole punch (memnet/net/relaying.py)

A change of addresses is pushed to connected peers (identify push) and re-announced in the DHT,
so provider records carry addresses that work.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.tools.anyio_service.context import background_trio_service

from memnet.config import Config
from memnet.daemon.base import Service
from memnet.daemon.commands import Command, NoArgs, Progress
from memnet.net import autonat, dht_mode, relaying
from memnet.net.addresses import Addresses
from memnet.net.reachability import PRIVATE, PUBLIC, UNKNOWN, Reachability, advice, counts_as_witness
from memnet.net.upnp import PortMapper

log = logging.getLogger("memnet.nat")

FIRST_PROBE = 1.0       # s after start (bootstrap connections are up by then)
UNKNOWN_RETRY = 20.0    # s between probe rounds while the answer is unknown
NO_WITNESS_RETRY = 2.0  # s between rounds while no peer could be asked


class Nat(Service):
    name = "nat"

    def __init__(self, host: IHost, dht: KadDHT, config: Config, on_addresses: Callable[[], None]):
        super().__init__()
        self.host, self.dht, self.on_addresses = host, dht, on_addresses
        self.settings = settings = config.nat
        self.addresses = Addresses(host, settings.announce)
        self.addresses.install()  # before any identify runs: peers learn the right addresses
        self.reach = Reachability(settings.confirmations, max_age=2 * settings.probe_interval + UNKNOWN_RETRY)
        self.relay = relaying.Relay(host, settings.relay_limits)
        self.dialer = relaying.Dialer(host, self.relay, settings.hole_punch)
        self.reserver = relaying.Reserver(host, self.dialer, self.addresses, self._addresses_changed)
        self.server = autonat.AutonatServer(host) if settings.serve_probes else None
        self.mapper = PortMapper(self.addresses.listen_ports()) if settings.upnp else None
        self.mapping_state = "off" if self.mapper is None else "trying"
        self.asked = 0
        self.first_known: float | None = None
        self.started = time.monotonic()
        self._poke = trio.Event()
        self._nursery: trio.Nursery | None = None

    def commands(self) -> list[Command]:
        return [Command("reachability", self._cmd_reachability, NoArgs, "probe reachability now and report it")]

    def configure(self, config: Config) -> None:
        self.settings = config.nat
        self.reach.confirmations = config.nat.confirmations
        if self.reach.status == PRIVATE:
            self.reserver.want = config.nat.reservations
        self._poke.set()

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        relaying.quiet_py_libp2p_relay_logs()
        if self.server is not None:
            self.host.set_stream_handler(autonat.PROTOCOL, self.server.handle)
        async with background_trio_service(self.relay), trio.open_nursery() as nursery:
            self._nursery = nursery
            dht_mode.admit_only_servers(self.dht, self.host, nursery)
            self.dialer.install(nursery)
            if self.dialer.puncher is not None:
                await nursery.start(self._run_puncher)
            task_status.started()
            if self.mapper is not None:
                nursery.start_soon(self._upnp)
            nursery.start_soon(self.reserver.run)
            nursery.start_soon(dht_mode.keep_clients_out, self.dht, self.host)
            await self._probe_loop()

    async def _run_puncher(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with background_trio_service(self.dialer.puncher):
            task_status.started()
            await trio.sleep_forever()

    def stop(self) -> None:
        if self.mapper is not None:
            self.mapper.close()
        super().stop()

    # -- UPnP ------------------------------------------------------------------------------

    async def _upnp(self) -> None:
        assert self.mapper is not None
        mapping = await self.mapper.open()
        if mapping.ports and mapping.external_ip:
            self.mapping_state = f"{mapping.external_ip} TCP {', '.join(map(str, mapping.ports))}"
            self.addresses.mapped = [multiaddr.Multiaddr(f"/ip4/{mapping.external_ip}/tcp/{p}") for p in mapping.ports]
            self._poke.set()  # probe the mapped address now
            await self.mapper.keep()
        else:
            self.mapping_state = f"none: {mapping.error}"
            log.info("UPnP: %s", mapping.error)

    # -- probes ----------------------------------------------------------------------------

    def _witnesses(self) -> list[tuple[Any, str]]:
        """Connected peers that answer probes, each with the IP we reach it at (one per IP)."""
        store, by_ip = self.host.get_peerstore(), {}
        for peer in self.host.get_connected_peers():
            try:
                if autonat.PROTOCOL not in store.get_protocols(peer):
                    continue
            except Exception:
                continue
            for conn in self.host.get_network().get_connections(peer):
                if relaying.is_relayed(conn):
                    continue
                for addr in conn.get_transport_addresses():
                    ip = addr.value_for_protocol("ip4") if "/ip4/" in str(addr) else None
                    if ip and counts_as_witness(ip, self.settings.private_witnesses):
                        by_ip.setdefault(ip, peer)
        pairs = [(peer, ip) for ip, peer in by_ip.items()]
        random.shuffle(pairs)
        return pairs[:self.settings.probe_peers]

    async def check(self) -> str:
        """One round of probes; the status afterwards."""
        ports = self.addresses.listen_ports()
        now = time.monotonic()
        changed = self.reach.expire(now)
        if ports:
            results: list[tuple[str, Any]] = []

            async def ask(peer, ip: str) -> None:
                result = await autonat.probe(self.host, peer, ports)
                if result is not None:
                    results.append((ip, result))

            witnesses = self._witnesses()
            self.asked = len(witnesses)
            async with trio.open_nursery() as nursery:
                for peer, ip in witnesses:
                    nursery.start_soon(ask, peer, ip)
            for ip, result in results:
                changed |= self.reach.record(ip, result.status, result.addr, time.monotonic())
        confirmed = [multiaddr.Multiaddr(a) for a in self.reach.confirmed()] if self.reach.status == PUBLIC else []
        addresses_moved = [str(a) for a in confirmed] != [str(a) for a in self.addresses.confirmed]
        self.addresses.confirmed = confirmed
        if changed:
            await self._apply(self.reach.status)
        elif addresses_moved:
            self._addresses_changed()
        return self.reach.status

    async def _apply(self, status: str) -> None:
        log.info("reachability: %s%s", status, f" at {', '.join(self.reach.confirmed())}" if status == PUBLIC else "")
        if status != UNKNOWN and self.first_known is None:
            self.first_known = time.monotonic() - self.started
        if status == PUBLIC:
            self.relay.hop(self.settings.relay)
            self.reserver.want = 0
        elif status == PRIVATE:
            self.relay.hop(False)
            self.reserver.want = self.settings.reservations
        if status != UNKNOWN and self.settings.dht_client_when_private:
            await dht_mode.switch(self.dht, self.host, client=status == PRIVATE)
        await self.reserver.pass_once()
        self._addresses_changed()
        line = self.advice()
        if line:
            log.warning("%s", line)

    def _addresses_changed(self) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(dht_mode.tell_peers, self.host)
        self.on_addresses()

    async def _probe_loop(self) -> None:
        await trio.sleep(FIRST_PROBE)
        while True:
            self._poke = trio.Event()
            try:
                await self.check()
            except Exception as exc:  # a probe round that fails costs a round, not the service
                log.warning("reachability probes failed: %r", exc)
            wait = self.settings.probe_interval if self.reach.status != UNKNOWN else UNKNOWN_RETRY
            if not self.asked:  # nobody to ask yet (a bootstrap node before its first peer)
                wait = NO_WITNESS_RETRY
            with trio.move_on_after(wait):
                await self._poke.wait()

    # -- status ----------------------------------------------------------------------------

    def advice(self) -> str | None:
        return advice(self.reach.status, self.addresses.listen_ports(), relayed=bool(self.reserver.slots),
                      upnp=None if self.mapper is None or self.mapping_state.startswith("none") else self.mapping_state)

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "reachability": self.reach.status,
            "witnesses": len(self.reach.votes),
            "confirmed": self.reach.confirmed() if self.reach.status == PUBLIC else [],
            "announce": [str(a) for a in self.addresses.announce],
            "upnp": self.mapping_state,
            "reservations": [{"relay": s.relay, "addr": str(s.addr), "expires_in": int(s.expires - now)}
                             for s in self.reserver.slots.values()],
            "relay": {"serving": self.relay.serving, "circuits": self.relay.stats.circuits,
                      "active": self.relay.stats.active, "bytes": self.relay.stats.bytes},
            "dht_mode": "client" if self.dht.mode == DHTMode.CLIENT else "server",
            "dials": dict(self.dialer.counts),
            "first_known_s": None if self.first_known is None else round(self.first_known, 2),
            "advice": self.advice(),
        }

    async def _cmd_reachability(self, args: NoArgs, progress: Progress) -> dict:
        await self.check()
        return self.status()
