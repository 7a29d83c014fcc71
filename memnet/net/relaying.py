"""Circuit relay v2 and hole punching (DCUtR) for memnet, on py-libp2p 0.8.1's implementations.

py-libp2p ships both protocols but wires in neither: the swarm drops /p2p-circuit addresses when
it dials, nothing reserves or renews a slot the way a node needs, and nothing announces one. This
module supplies the parts memnet uses, and fixes what it found broken (tests/test_relaying.py):

    Relay        the relay service (HOP), switched on while the node is public. py-libp2p keys
                 its circuits by destination peer, so a second circuit to one node was torn
                 down with the first; here each circuit ends alone. It counts circuits and bytes.
    Dialer       host.connect() for every caller in memnet: direct addresses first, then a
                 circuit through a relay the peer named, then a hole punch (DCUtR) in the
                 background, so that later streams (a fetch's chunks) take the direct connection.
                 It records how each peer was reached: direct, punched or relayed.
    Reserver     a private node's slots on relays chosen among public peers (those serving HOP,
                 which memnet nodes do only once their own probes found them public); renewed at
                 half their lifetime, taken again elsewhere when a relay goes away, and published
                 as /ip4/R/tcp/N/p2p/RELAY/p2p-circuit addresses (memnet/net/addresses.py).

Noise runs end to end through a relay (the relay forwards ciphertext; tests check it).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2 import CircuitV2Protocol, CircuitV2Transport, DCUtRProtocol
from libp2p.relay.circuit_v2 import RelayLimits as P2PRelayLimits
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL

from memnet.config.sections import RelayLimits
from memnet.net.addresses import Addresses, is_circuit

log = logging.getLogger("memnet.relay")

DIRECT_FIRST = 1.5      # s for direct addresses before a circuit is tried (a LAN answers in ms)
DIAL_TIMEOUT = 6.0      # s for one address (a TCP handshake retries its SYN at 1 s and 3 s)
STAGGER = 0.25          # s before the next address is tried alongside (happy eyeballs)
PEERSTORE_TTL = 3600
CIRCUIT_TIMEOUT = 15.0  # s to reach the relay and open the circuit
PUNCH_WAIT = 3.0        # s a connect waits for a hole punch before going on relayed
PUNCH_RETRY = 600.0     # s before a failed punch with a peer is tried again
RESERVE_EVERY = 10.0    # s between passes of the reserver
RESERVE_RETRY = 120.0   # s before a relay that refused a slot is asked again

DIRECT, PUNCHED, RELAYED = "direct", "punched", "relayed"


def quiet_py_libp2p_relay_logs() -> None:
    """py-libp2p logs the normal end of every relayed stream as an error."""
    for name in ("libp2p.relay.circuit_v2", "libp2p.relay.circuit_v2.protocol",
                 "libp2p.relay.circuit_v2.transport", "libp2p.relay.circuit_v2.dcutr"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if os.environ.get("MEMNET_DEBUG_DCUTR"):  # py-libp2p's loggers do not reach the root logger
        debug = logging.getLogger("libp2p.relay.circuit_v2.dcutr")
        debug.setLevel(logging.DEBUG)
        debug.propagate = False
        debug.addHandler(logging.StreamHandler())


def p2p_limits(limits: RelayLimits) -> P2PRelayLimits:
    return P2PRelayLimits(duration=limits.circuit_seconds, data=limits.circuit_bytes,
                          max_circuit_conns=limits.circuits, max_reservations=limits.reservations,
                          reservation_ttl=limits.reservation_ttl)


class _NotShared(dict):
    """py-libp2p's _active_relays keys circuits by destination: two circuits to one node
    overwrote each other, and the end of one closed the other's streams. Keep none."""

    def __setitem__(self, key, value) -> None:
        pass


@dataclass
class RelayStats:
    circuits: int = 0
    active: int = 0
    bytes: int = 0
    per_circuit: list[int] = field(default_factory=list)  # bytes of each finished direction (last 256)


class Relay(CircuitV2Protocol):
    """The STOP side always (to accept circuits to us); HOP only while hop() says so."""

    def __init__(self, host: IHost, limits: RelayLimits):
        super().__init__(host, limits=p2p_limits(limits), allow_hop=False)
        self._active_relays = _NotShared()
        self.stats = RelayStats()
        self.serving = False

    def hop(self, on: bool) -> None:
        if on and not self.serving:
            self.host.set_stream_handler(HOP_PROTOCOL, self._handle_hop_stream)
        elif not on and self.serving:
            self.host.remove_stream_handler(HOP_PROTOCOL)
        self.serving = on

    async def _relay_data(self, src, dst, peer_id, deadline=None, circuit_data_limit=None):
        """One direction of one circuit (py-libp2p runs two per circuit)."""
        counted = [0]
        write = dst.write
        stats = self.stats

        async def counting_write(data: bytes) -> None:
            counted[0] += len(data)
            stats.bytes += len(data)
            await write(data)

        dst.write = counting_write
        try:
            await super()._relay_data(src, dst, peer_id, deadline, circuit_data_limit)
        finally:
            stats.per_circuit = (stats.per_circuit + [counted[0]])[-256:]
            for stream in (src, dst):  # one direction ended: end this circuit, and only this one
                try:
                    await stream.reset()
                except Exception:
                    pass

    async def _handle_connect(self, stream: INetStream, msg) -> None:
        self.stats.circuits += 1
        self.stats.active += 1
        try:
            await super()._handle_connect(stream, msg)
        finally:
            self.stats.active -= 1


class _Puncher(DCUtRProtocol):
    """py-libp2p's DCUtR, without its loop that punches every relayed peer every 2 s from both
    sides (two direct connections per pair) and without its plain dial of the peer's addresses
    first (up to its dial timeout on a NATed peer's LAN addresses): memnet punches once, from the
    dialing side, right after its own direct try."""

    async def _auto_drive_loop(self) -> None:
        return

    async def _try_unilateral_upgrade(self, peer_id: ID) -> bool:
        return False  # the Dialer tried the peer's direct addresses just before


def address_rank(addr: multiaddr.Multiaddr) -> int:
    """0 public, 1 private (a LAN: reachable only from it), 2 loopback, 3 anything else."""
    for proto in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(addr.value_for_protocol(proto))
        except Exception:
            continue
        return 2 if ip.is_loopback else 1 if ip.is_private or ip.is_link_local else 0
    return 3


def circuit_parts(addr: multiaddr.Multiaddr) -> tuple[ID, multiaddr.Multiaddr | None]:
    """(relay id, relay's own address or None) of /.../p2p/RELAY/p2p-circuit/p2p/PEER."""
    head = str(addr).split("/p2p-circuit")[0]
    relay_text = head.rpartition("/p2p/")[2]
    relay_addr = head.rpartition("/p2p/")[0]
    return ID.from_base58(relay_text), (multiaddr.Multiaddr(relay_addr) if relay_addr else None)


def is_relayed(conn) -> bool:
    try:
        return any(is_circuit(a) for a in conn.get_transport_addresses())
    except Exception:
        return False


def has_direct_connection(host: IHost, peer: ID) -> bool:
    return any(not is_relayed(c) for c in host.get_network().get_connections(peer))


_DIALERS: weakref.WeakKeyDictionary[IHost, Dialer] = weakref.WeakKeyDictionary()


def path_to(host: IHost, peer: ID | str) -> str | None:
    """How this host reaches a peer now: direct, punched, relayed (None: not connected)."""
    dialer = _DIALERS.get(host)
    peer_id = peer if isinstance(peer, ID) else ID.from_base58(peer)
    conns = host.get_network().get_connections(peer_id)
    if not conns:
        return None
    if not has_direct_connection(host, peer_id):
        return RELAYED
    return PUNCHED if dialer is not None and str(peer_id) in dialer.punched else DIRECT


class Dialer:
    """Replaces host.connect on the instance: every memnet caller gets circuits and punching."""

    def __init__(self, host: IHost, relay: Relay, hole_punch: bool = True):
        self.host, self.relay, self.hole_punch = host, relay, hole_punch
        self.transport = CircuitV2Transport(host, relay, RelayConfig(roles=RelayRole.STOP))
        self.puncher = _Puncher(host, dial_timeout=3) if hole_punch else None
        self.punched: set[str] = set()
        self.punch_failed: dict[str, float] = {}
        self.counts = {DIRECT: 0, PUNCHED: 0, RELAYED: 0, "punch_tries": 0}
        self._locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None

    def install(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.host.connect = self.connect  # type: ignore[method-assign]
        _DIALERS[self.host] = self

    def _connected(self, peer: ID) -> bool:
        return bool(self.host.get_network().get_connections(peer))

    async def connect(self, info: PeerInfo) -> None:
        if self._connected(info.peer_id):
            return
        lock = self._locks.setdefault(str(info.peer_id), trio.Lock())
        try:
            async with lock:  # one dial per peer at a time: the second caller finds the first's connection
                if self._connected(info.peer_id):
                    return
                circuits = [a for a in info.addrs if is_circuit(a)]
                direct = [a for a in info.addrs if not is_circuit(a)]
                if not circuits:
                    await self._dial_direct(info.peer_id, direct)
                    self.counts[DIRECT] += 1
                    return
                way = await self._race(info.peer_id, direct, circuits)
                self.counts[way] += 1
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(str(info.peer_id), None)
        if way == RELAYED:
            await self._punch_soon(info.peer_id)

    async def _dial_direct(self, peer: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        """Happy eyeballs over every address, public ones first: py-libp2p 0.8.1's own connect
        dials one address per transport (the first TCP one it holds, often a NATed peer's LAN
        address) and waits for every attempt to end, even after one succeeded."""
        if not addrs:
            raise ConnectionError(f"no direct address for {peer}")
        self.host.get_peerstore().add_addrs(peer, addrs, PEERSTORE_TTL)
        network = self.host.get_network()
        won: list[object] = []
        errors: list[Exception] = []
        async with trio.open_nursery() as nursery:
            for addr in sorted(addrs, key=address_rank):
                failed = trio.Event()

                async def attempt(addr: multiaddr.Multiaddr = addr, failed: trio.Event = failed) -> None:
                    try:
                        with trio.fail_after(DIAL_TIMEOUT):
                            won.append(await network.dial_addr(addr, peer))
                        nursery.cancel_scope.cancel()
                    except Exception as exc:  # refused, unreachable, timed out, another peer there
                        errors.append(exc)
                        failed.set()

                nursery.start_soon(attempt)
                with trio.move_on_after(STAGGER):
                    await failed.wait()
        if not won:
            raise ConnectionError(f"cannot reach {peer} at {len(addrs)} address(es): {errors[-1] if errors else ''}")

    async def _race(self, peer: ID, direct: list[multiaddr.Multiaddr], circuits: list[multiaddr.Multiaddr]) -> str:
        """A peer that names relays is behind a NAT: its direct addresses work only from its own
        LAN, where they answer in milliseconds. Both ways start at once; the first one up wins
        (the direct one gets DIRECT_FIRST before the circuit is opened, so a LAN peer is not
        relayed needlessly)."""
        won: list[str] = []
        errors: list[Exception] = []
        direct_done = trio.Event()

        async def attempt(way: str, connect, nursery: trio.Nursery) -> None:
            try:
                await connect()
                won.append(way)
                nursery.cancel_scope.cancel()
            except Exception as exc:
                errors.append(exc)

        async def directly(nursery: trio.Nursery) -> None:
            try:
                await attempt(DIRECT, lambda: self._dial_direct(peer, direct), nursery)
            finally:
                direct_done.set()

        async def relayed(nursery: trio.Nursery) -> None:
            with trio.move_on_after(DIRECT_FIRST):
                await direct_done.wait()
            if not won:
                await attempt(RELAYED, lambda: self._through_relay(peer, circuits), nursery)

        async with trio.open_nursery() as nursery:
            if direct:
                nursery.start_soon(directly, nursery)
            else:
                direct_done.set()
            nursery.start_soon(relayed, nursery)
        if not won:
            raise ConnectionError(f"cannot reach {peer}: {errors[-1] if errors else 'no address'}")
        return won[0]

    async def _through_relay(self, peer: ID, circuits: list[multiaddr.Multiaddr]) -> None:
        last: Exception | None = None
        for addr in circuits:
            try:
                relay, relay_addr = circuit_parts(addr)
                with trio.fail_after(CIRCUIT_TIMEOUT):
                    if not self._connected(relay):
                        known = [relay_addr] if relay_addr else list(self.host.get_peerstore().addrs(relay))
                        await self._dial_direct(relay, known)
                    await self.transport.dial(multiaddr.Multiaddr(str(addr)))
                log.info("reached %s through relay %s", peer, relay)
                return
            except Exception as exc:
                last = exc
                log.info("circuit %s failed: %s", addr, exc)
        raise ConnectionError(f"no relay reached {peer}: {last}")

    async def _punch_soon(self, peer: ID) -> None:
        """Try a direct connection; wait up to PUNCH_WAIT for it, then let it finish alone."""
        if self.puncher is None or self._nursery is None:
            return
        if time.monotonic() - self.punch_failed.get(str(peer), -1e9) < PUNCH_RETRY:
            return
        done = trio.Event()

        async def punch() -> None:
            self.counts["punch_tries"] += 1
            try:
                ok = await self.puncher.initiate_hole_punch(peer)
            except Exception as exc:
                log.info("hole punch with %s failed: %s", peer, exc)
                ok = False
            if ok and has_direct_connection(self.host, peer):
                self.punched.add(str(peer))
                self.counts[PUNCHED] += 1
                log.info("hole punch with %s: direct connection", peer)
            else:
                self.punch_failed[str(peer)] = time.monotonic()
                log.info("hole punch with %s failed: staying relayed", peer)
            done.set()

        self._nursery.start_soon(punch)
        with trio.move_on_after(PUNCH_WAIT):
            await done.wait()


@dataclass
class Slot:
    relay: str
    addr: multiaddr.Multiaddr
    granted: float
    expires: float


class Reserver:
    """Keeps `want` reservations while the node is private (run() loops until cancelled)."""

    def __init__(self, host: IHost, dialer: Dialer, addresses: Addresses, on_change: Callable[[], None]):
        self.host, self.dialer, self.addresses, self.on_change = host, dialer, addresses, on_change
        self.want = 0
        self.slots: dict[str, Slot] = {}
        self.refused: dict[str, float] = {}

    def candidates(self) -> list[ID]:
        store, found = self.host.get_peerstore(), []
        for peer in self.host.get_connected_peers():
            if str(peer) in self.slots or time.monotonic() - self.refused.get(str(peer), -1e9) < RESERVE_RETRY:
                continue
            if not has_direct_connection(self.host, peer):
                continue
            try:
                if HOP_PROTOCOL in store.get_protocols(peer):
                    found.append(peer)
            except Exception:
                continue
        return found

    def _relay_addr(self, relay: ID) -> multiaddr.Multiaddr | None:
        for conn in self.host.get_network().get_connections(relay):
            if is_relayed(conn):
                continue
            for addr in conn.get_transport_addresses():
                return multiaddr.Multiaddr(f"{addr}/p2p/{relay}/p2p-circuit")
        return None

    async def _reserve(self, relay: ID) -> float | None:
        try:
            with trio.fail_after(10):
                stream = await self.host.new_stream(relay, [HOP_PROTOCOL])
                try:
                    ok = await self.dialer.transport._make_reservation(stream, relay)
                finally:
                    await stream.close()
        except Exception as exc:
            log.info("reservation on %s failed: %s", relay, exc)
            return None
        expires = self.dialer.transport._reservations.get(relay) if ok else None
        return float(expires) if expires else None

    async def pass_once(self) -> None:
        changed = False
        now = time.time()
        for key, slot in list(self.slots.items()):
            relay = ID.from_base58(key)
            lapsed = slot.expires <= now or not self.dialer._connected(relay) or self.want == 0
            if lapsed:
                del self.slots[key]
                self.addresses.circuits.pop(key, None)
                changed = True
                log.info("relay slot on %s lapsed", key)
            elif now > (slot.granted + slot.expires) / 2:  # renewed at half its lifetime
                expires = await self._reserve(relay)
                if expires is not None:
                    slot.granted, slot.expires = now, expires
        for relay in self.candidates()[:max(0, self.want - len(self.slots))]:
            expires = await self._reserve(relay)
            addr = self._relay_addr(relay)
            if expires is None or addr is None:
                self.refused[str(relay)] = time.monotonic()
                continue
            self.slots[str(relay)] = Slot(str(relay), addr, time.time(), expires)
            self.addresses.circuits[str(relay)] = addr
            changed = True
            log.info("relay slot on %s until %s: reachable at %s", relay, time.strftime("%H:%M:%S", time.localtime(expires)), addr)
        if changed:
            self.on_change()

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except Exception as exc:  # a relay that misbehaves costs a slot, not the service
                log.warning("relay reservations: %s", exc)
            await trio.sleep(RESERVE_EVERY)

