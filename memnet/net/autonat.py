"""Reachability probes (/memnet/autonat/1.0.0; wire format in memnet/net/autonat_wire.py).

py-libp2p 0.8.1's own AutoNAT proves nothing: its dial-back is host.connect(), which returns the
connection the request came on, so an address nobody listens on is reported reachable. Here the
server dials the requester's observed IP at each claimed port on a *new* connection
(swarm.dial_addr opens one from an ephemeral port even while another is open) and counts it only
when Noise proves the requester's peer id at the far end. The new connection is closed at once.

A server refuses rather than lies when it cannot probe: over a relayed connection (the observed IP
is the relay's), when probes are already running for this peer or IP, or when it is busy.
"""

from __future__ import annotations

import ipaddress
import logging
import time

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from memnet.errors import FormatError, PeerTimeout
from memnet.net import autonat_wire
from memnet.net.autonat_wire import DialMe, DialResult

log = logging.getLogger("memnet.autonat")

PROTOCOL = TProtocol(autonat_wire.PROTOCOL_ID)
READ_TIMEOUT = 5.0
DIAL_TIMEOUT = 6.0
MAX_PROBES = 4                 # dial-backs in flight at once, for all peers
IP_INTERVAL = 10.0             # seconds between probes of one IP address


def is_relayed(stream: INetStream) -> bool:
    conn = getattr(stream, "muxed_conn", None)
    addrs = getattr(conn, "get_transport_addresses", lambda: [])()
    return not addrs or any("p2p-circuit" in str(a) for a in addrs)


def remote_ip(stream: INetStream) -> str | None:
    try:
        address = stream.get_remote_address()
        return str(ipaddress.ip_address(address[0])) if address else None
    except (ValueError, TypeError, IndexError):
        return None


def tcp_addr(ip: str, port: int) -> multiaddr.Multiaddr:
    family = "ip6" if ipaddress.ip_address(ip).version == 6 else "ip4"
    return multiaddr.Multiaddr(f"/{family}/{ip}/tcp/{port}")


async def _read(stream: INetStream, expect: str, timeout: float) -> DialMe | DialResult:
    reader = autonat_wire.Reader(expect)
    with trio.move_on_after(timeout) as scope:
        while True:
            try:
                data = await stream.read(autonat_wire.MAX_FRAME)
            except StreamEOF:
                data = b""
            if not data:
                reader.eof()
            message = reader.feed(data)
            if message is not None:
                return message
    assert scope.cancelled_caught
    raise PeerTimeout(f"autonat: no {expect} within {timeout:.0f} s")


class AutonatServer:
    """Answers probes: dial the asker back at the IP we see, on a new connection."""

    def __init__(self, host: IHost, max_probes: int = MAX_PROBES, ip_interval: float = IP_INTERVAL):
        self.host = host
        self.slots = trio.Semaphore(max_probes)
        self.ip_interval = ip_interval
        self._last_probe: dict[str, float] = {}
        self.answered = {"ok": 0, "dial_error": 0, "refused": 0}

    def _refusal(self, stream: INetStream, ip: str | None) -> str | None:
        if ip is None or is_relayed(stream):
            return "relayed or no observed address"
        if time.monotonic() - self._last_probe.get(ip, -1e9) < self.ip_interval:
            return "probed this address moments ago"
        if self.slots.value == 0:
            return "busy"
        return None

    async def handle(self, stream: INetStream) -> None:
        peer, ip = stream.muxed_conn.peer_id, remote_ip(stream)
        try:
            request = await _read(stream, "dial_me", READ_TIMEOUT)
            why = self._refusal(stream, ip)
            if why is not None:
                log.debug("autonat: refused %s: %s", peer, why)
                result = DialResult("refused")
            else:
                assert ip is not None and isinstance(request, DialMe)
                self._last_probe[ip] = time.monotonic()
                if len(self._last_probe) > 4096:  # bounded: forget the oldest half
                    for old in sorted(self._last_probe, key=self._last_probe.get)[:2048]:
                        del self._last_probe[old]
                async with self.slots:
                    result = await self.dial_back(peer, ip, request.ports)
            self.answered[result.status] += 1
            await stream.write(autonat_wire.encode_dial_result(result))
        except (FormatError, PeerTimeout) as exc:
            log.debug("autonat: bad request from %s: %s", peer, exc)
        except Exception as exc:  # a stream the peer reset; never the daemon's problem
            log.debug("autonat: stream with %s failed: %s", peer, exc)
        finally:
            try:
                await stream.close()
            except Exception:
                pass

    async def dial_back(self, peer: ID, ip: str, ports: tuple[int, ...]) -> DialResult:
        network = self.host.get_network()
        for port in ports:
            addr = tcp_addr(ip, port)
            conn = None
            with trio.move_on_after(DIAL_TIMEOUT):
                try:
                    conn = await network.dial_addr(addr, peer)
                except Exception as exc:  # refused, unreachable, wrong peer id: not reachable
                    log.debug("autonat: dial-back %s for %s failed: %s", addr, peer, exc)
            if conn is not None:
                try:
                    await conn.close()
                except Exception:
                    pass
                return DialResult("ok", str(addr))
        return DialResult("dial_error")


async def probe(host: IHost, peer: ID, ports: list[int], timeout: float = DIAL_TIMEOUT * autonat_wire.MAX_PORTS + 4
                ) -> DialResult | None:
    """Ask one peer to dial us back at our ports; None when it could not be asked."""
    try:
        with trio.fail_after(timeout):
            stream = await host.new_stream(peer, [PROTOCOL])
            try:
                await stream.write(autonat_wire.encode_dial_me(ports[:autonat_wire.MAX_PORTS]))
                result = await _read(stream, "dial_result", timeout)
                assert isinstance(result, DialResult)
                return result
            finally:
                try:
                    await stream.close()
                except Exception:
                    pass
    except Exception as exc:  # no such protocol, timeout, a malformed answer: no verdict
        log.debug("autonat: probe via %s failed: %s", peer, exc)
        return None
