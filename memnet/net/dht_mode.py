"""DHT client mode for nodes that others cannot dial (as Petals does: only reachable servers
hold DHT keys, so relayed peers do not make lookups time out).

A client asks and does not answer: py-libp2p removes its Kademlia handler, and peers learn it
from identify's protocol list. Two things py-libp2p 0.8.1 gets wrong are fixed here:
- a server added every peer that sent it a DHT request to its routing table, on the theory that
  a sender must be a server; clients send requests too, so servers handed private nodes out as
  "closer peers" and lookups stalled on them. Now such a peer is added only once identify shows
  it serves Kademlia (checked off the request's path, in the background);
- switching mode tells nobody and empties the node's own routing table: peers are told by an
  identify push, and the connected servers are put back; a server drops from its table the
  peers whose pushed protocols no longer include Kademlia.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost
from libp2p.identity.identify_push.identify_push import push_identify_to_peers
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT

from memnet.net.addresses import is_circuit
from memnet.net.host import KAD_PROTOCOL

log = logging.getLogger("memnet.dht")

IDENTIFY_WAIT = 5.0


def serves_kad(host: IHost, peer) -> bool:
    try:
        return str(KAD_PROTOCOL) in host.get_peerstore().get_protocols(peer)
    except Exception:
        return False


def known_protocols(host: IHost, peer) -> bool:
    """Identify has told us this peer's protocols (py-libp2p forgets that it identified a peer
    when any one of its connections closes, so the peerstore is the record that lasts)."""
    try:
        return bool(host.get_peerstore().get_protocols(peer))
    except Exception:
        return False


def admit_only_servers(dht: KadDHT, host: IHost, nursery: trio.Nursery) -> None:
    original = dht.add_peer

    async def check_then_add(peer) -> None:
        with trio.move_on_after(IDENTIFY_WAIT):
            while not known_protocols(host, peer):
                await trio.sleep(0.1)
        if serves_kad(host, peer):
            await original(peer)

    async def add_peer(peer, *, skip_server_mode_check: bool = False) -> bool:
        if skip_server_mode_check:  # from the inbound request handler: decide off its path
            nursery.start_soon(check_then_add, peer)
            return False
        return await original(peer)

    dht.add_peer = add_peer  # type: ignore[method-assign]


def in_client_mode(host: IHost, peer) -> bool:
    """Identify told us this peer's protocols and Kademlia is not among them, or the peer
    advertises a relayed address: only nodes others cannot dial hold relay slots, and those run
    their DHT in client mode (a peer learned from a record, never identified, is known so)."""
    if known_protocols(host, peer) and not serves_kad(host, peer):
        return True
    try:
        return any(is_circuit(a) for a in host.get_peerstore().addrs(peer))
    except Exception:
        return False


def prune_clients(dht: KadDHT, host: IHost) -> int:
    """Drop routing-table peers whose identify (or identify push) says they no longer serve
    Kademlia: a node that found itself private switched to client mode after joining."""
    dropped = 0
    for peer in dht.routing_table.get_peer_ids():
        if in_client_mode(host, peer):
            dht.routing_table.remove_peer(peer)
            dropped += 1
    return dropped


async def keep_clients_out(dht: KadDHT, host: IHost, every: float = 5.0) -> None:
    while True:
        await trio.sleep(every)
        dropped = prune_clients(dht, host)
        if dropped:
            log.info("DHT: %d peers in client mode left the routing table", dropped)


async def switch(dht: KadDHT, host: IHost, client: bool) -> None:
    mode = DHTMode.CLIENT if client else DHTMode.SERVER
    if dht.mode == mode:
        return
    await dht.switch_mode(mode)
    for peer in host.get_connected_peers():  # switching to client emptied the routing table
        if serves_kad(host, peer):
            try:
                await dht.add_peer(peer)
            except Exception:
                pass
    await tell_peers(host)
    log.info("DHT: %s mode (%d peers in the routing table)", mode.value, dht.get_routing_table_size())


async def tell_peers(host: IHost) -> None:
    """Push our protocols and addresses to connected peers (identify push)."""
    with trio.move_on_after(10):
        try:
            await push_identify_to_peers(host)
        except Exception as exc:
            log.debug("identify push failed: %s", exc)
