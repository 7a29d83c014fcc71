"""memnet/net/neighbours.py on real libp2p hosts: the order in which a fetch asks peers."""

from __future__ import annotations

import multiaddr
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.peerinfo import PeerInfo

from memnet.net.host import build_host
from memnet.net.neighbours import with_neighbours

LOCAL = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


def test_connected_providers_first_then_the_others_then_neighbours_the_dht_did_not_name():
    async def scenario():
        me, *peers = [build_host(Ed25519PrivateKey.generate()) for _ in range(4)]
        async with me.run(LOCAL), peers[0].run(LOCAL), peers[1].run(LOCAL), peers[2].run(LOCAL):
            for peer in peers[:2]:
                await me.connect(PeerInfo(peer.get_id(), peer.get_addrs()))
            named_connected = PeerInfo(peers[0].get_id(), peers[0].get_addrs())
            named_far = PeerInfo(peers[2].get_id(), peers[2].get_addrs())    # not connected
            order = [p.peer_id for p in with_neighbours(me, [named_far, named_connected])]
            assert order == [peers[0].get_id(), peers[2].get_id(), peers[1].get_id()]
            # an eclipsed key (the DHT named nobody): the neighbours are still asked
            assert [p.peer_id for p in with_neighbours(me, [])] == [peers[0].get_id(), peers[1].get_id()]
            assert with_neighbours(me, [], limit=1)[0].peer_id == peers[0].get_id()
            assert len(with_neighbours(me, [], limit=1)) == 1
    trio.run(scenario)
