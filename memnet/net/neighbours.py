"""The peers a fetch asks, in order: the providers the DHT named that this node is already
connected to (no dial), then the other named providers, then connected peers the DHT did not
name, at most MAX_NEIGHBOURS (asked as Bitswap asks its neighbours: a peer's neighbours often
hold what it wants). The last is what saves a fetch whose key the DHT cannot be trusted for:
records poisoned by identities that hold nothing, or Sybils placed nearest the key that drop
records and answer nothing (docs/reliability.md, the adversary campaign). A neighbour that does
not hold the cube answers not_found at once and costs one round trip, no score."""

from __future__ import annotations

from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo

MAX_NEIGHBOURS = 8


def with_neighbours(host: IHost, found: list[PeerInfo], limit: int = MAX_NEIGHBOURS) -> list[PeerInfo]:
    me = host.get_id()
    connected = [peer for peer, conns in host.get_network().connections.items() if conns and peer != me]
    linked = set(connected)
    named = {p.peer_id for p in found}
    peerstore = host.get_peerstore()
    neighbours = []
    for peer in connected:
        if peer in named or len(neighbours) >= limit:
            continue
        try:
            neighbours.append(PeerInfo(peer, peerstore.addrs(peer)))
        except Exception:  # a peer the peerstore has forgotten: the open connection still serves
            neighbours.append(PeerInfo(peer, []))
    return ([p for p in found if p.peer_id in linked] + [p for p in found if p.peer_id not in linked]
            + neighbours)
