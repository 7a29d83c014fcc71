"""Connection limits that hold for a daemon's whole life (py-libp2p 0.8.1, installed per host).

py-libp2p 0.8.1 admits an inbound connection only while its swarm's `_inbound_limiter` has a
slot (max_connections - min_connections: 250 by default), and the handler that took the slot
then waits for the end of the *swarm*, not of the connection: a slot is never given back. After
250 inbound connections in its life, a node silently closed every new one (reproduced by
tests/test_swarm_guard.py; docs/reliability.md). Here the handler's wait ends when its
connection closes, so the limiter counts the inbound connections open or in handshake now, as
it was meant to, and the task that waited is gone with the connection.

The resource manager is built with the parts that hold (connection and stream counts) and
without those that harm a long-running node: graceful degradation lowers the limits each time
they are reached and does not put them back for good, the circuit breaker stays open for good
after five internal errors in the process's life, and the connection tracker keeps the slot of a
connection it refused.
"""

from __future__ import annotations

import contextvars
import logging

from libp2p.abc import IHost, IMuxedConn
from libp2p.network.config import ConnectionConfig
from libp2p.rcmgr import ResourceLimits, ResourceManager

log = logging.getLogger("memnet.net")

MAX_CONNECTIONS = 300   # open at once, both ways (py-libp2p's default)
MIN_CONNECTIONS = 50    # kept free of inbound ones, so that this node can still dial out
# open at once, all connections: the inbound connections' share of MAX_CONNECTIONS at 64 streams
# each (memnet/net/yamux_guard.py), about 11 KB each (measured: 641 held streams, +7 MB)
MAX_STREAMS = 16_384


class ConnectionEnded(Exception):
    """Ends py-libp2p's inbound handler when its connection closes (caught and logged there)."""


def connection_config(max_connections: int = MAX_CONNECTIONS, min_connections: int = MIN_CONNECTIONS) -> ConnectionConfig:
    # the trimming watermarks (py-libp2p's 100 / 200 of 300) keep their proportions
    return ConnectionConfig(max_connections=max_connections, min_connections=min_connections,
                            low_watermark=max(min_connections, max_connections // 3),
                            high_watermark=max(min_connections, 2 * max_connections // 3))


def resource_manager(max_connections: int = MAX_CONNECTIONS, max_streams: int = MAX_STREAMS) -> ResourceManager:
    # +8: the manager counts a connection twice for a moment while it is upgraded
    return ResourceManager(limits=ResourceLimits(max_connections=max_connections + 8, max_streams=max_streams),
                           enable_connection_tracking=False, enable_graceful_degradation=False,
                           enable_circuit_breaker=False)


# Set while this task dials as the responder of a hole punch (DCUtR): that dial upgrades its
# connection as inbound, and must get it back rather than wait for its end.
_responder_dial: contextvars.ContextVar[bool] = contextvars.ContextVar("responder_dial", default=False)


def install(host: IHost) -> None:
    """Make this host's inbound handlers end with their connections."""
    swarm = host.get_network()
    upgrade = swarm.upgrade_inbound_raw_conn
    dial_as_responder = swarm.dial_addr_as_responder

    async def upgrade_then_wait_for_close(raw_conn, maddr) -> IMuxedConn:
        muxed = await upgrade(raw_conn, maddr)
        closed = getattr(muxed, "event_closed", None)
        if closed is None or _responder_dial.get():  # not a muxer we know, or a hole punch's own dial
            return muxed
        await closed.wait()
        raise ConnectionEnded("inbound connection closed")

    async def dial_addr_as_responder(addr, peer_id, source=None):
        token = _responder_dial.set(True)
        try:
            return await dial_as_responder(addr, peer_id, source)
        finally:
            _responder_dial.reset(token)

    swarm.upgrade_inbound_raw_conn = upgrade_then_wait_for_close
    swarm.dial_addr_as_responder = dial_addr_as_responder
