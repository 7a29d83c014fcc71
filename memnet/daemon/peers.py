"""The peers service: join the swarm at start (bootstrap peers, a lookup of our own id that fills
the routing table, then in the background a refresh of the farther buckets that makes this node
known across the key space: net/bucket_refresh.py), bring LAN peers found by mDNS into the DHT,
and list connected peers."""

from __future__ import annotations

import logging
import random
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.peerinfo import PeerInfo

from memnet.config import Config
from memnet.daemon.base import Service
from memnet.daemon.commands import Command, NoArgs, Progress
from memnet.net import bucket_refresh
from memnet.net.host import peer_info

log = logging.getLogger("memnet.daemon")

JOIN_TIMEOUT = 10.0
LAN_POLL = 10.0
REFRESH_LOOKUPS = 3        # bucket-refresh lookups at once (each is a walk of up to 30 s)
REFRESH_TIMEOUT = 120.0    # s: the whole refresh, in the background


def peer_dict(info: Any) -> dict[str, Any]:
    return {"peer_id": str(info.peer_id), "addrs": [str(a) for a in info.addrs]}


class Peers(Service):
    name = "peers"

    def __init__(self, host: IHost, dht: KadDHT, config: Config):
        super().__init__()
        self.host, self.dht = host, dht
        self.bootstrap = [peer_info(a) for a in config.daemon.bootstrap]
        self.mdns = config.daemon.mdns

    def commands(self) -> list[Command]:
        return [Command("peers", self._cmd_peers, NoArgs, "connected peers and their addresses")]

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        joined = await self._bootstrap()
        task_status.started()
        async with trio.open_nursery() as nursery:
            if joined:
                nursery.start_soon(self._refresh_buckets)
            if self.mdns:
                nursery.start_soon(self._lan_peers)

    async def join(self, info: PeerInfo) -> bool:
        try:
            with trio.fail_after(JOIN_TIMEOUT):
                await self.host.connect(info)
            await self.dht.add_peer(info.peer_id)
            return True
        except Exception as exc:
            log.warning("cannot reach peer %s: %s", info.peer_id, exc or type(exc).__name__)
            return False

    async def _bootstrap(self) -> int:
        joined = 0
        for info in self.bootstrap:
            joined += await self.join(info)
        if self.bootstrap:
            log.info("bootstrap: joined %d of %d peers", joined, len(self.bootstrap))
        if joined:
            # a lookup of our own id fills the routing table and makes us known to our neighbours
            with trio.move_on_after(30):
                await self.dht.peer_routing.find_closest_peers_network(self.host.get_id().to_bytes())
            log.info("routing table: %d peers", self.dht.get_routing_table_size())
        return joined

    async def _refresh_buckets(self) -> None:
        """One lookup of a random key in each bucket farther than our nearest neighbour: the
        peers met on the way learn our current address (net/bucket_refresh.py)."""
        own = bucket_refresh.position(self.host.get_id().to_bytes())
        neighbours = [bucket_refresh.position(p.to_bytes()) for p in self.dht.routing_table.get_peer_ids()]
        buckets = bucket_refresh.buckets_to_refresh(own, neighbours)
        rng, limit = random.Random(), trio.Semaphore(REFRESH_LOOKUPS)
        began, done = trio.current_time(), [0]

        async def lookup(cpl: int) -> None:
            async with limit:
                # up to ~65 000 hashes for the nearest buckets: off the network loop
                key = await trio.to_thread.run_sync(bucket_refresh.key_in_bucket, own, cpl,
                                                    random.Random(rng.getrandbits(64)))
                with trio.move_on_after(30):
                    try:
                        await self.dht.peer_routing.find_closest_peers_network(key)
                        done[0] += 1
                    except Exception as exc:  # a failed refresh lookup costs reach, not service
                        log.debug("bucket refresh lookup %d failed: %r", cpl, exc)

        with trio.move_on_after(REFRESH_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for cpl in buckets:
                    nursery.start_soon(lookup, cpl)
        log.info("bucket refresh: %d of %d lookups in %.1f s, routing table: %d peers", done[0], len(buckets),
                 trio.current_time() - began, self.dht.get_routing_table_size())

    async def _lan_peers(self) -> None:
        """mDNS puts LAN peers in the peerstore; bring them into the DHT."""
        me = self.host.get_id()
        while True:
            await trio.sleep(LAN_POLL)
            store = self.host.get_peerstore()
            for peer in store.peers_with_addrs():
                if peer != me and self.dht.routing_table.get_peer_info(peer) is None:
                    await self.join(PeerInfo(peer, store.addrs(peer)))

    async def _cmd_peers(self, args: NoArgs, progress: Progress) -> list:
        store = self.host.get_peerstore()
        return [{"peer_id": str(p), "addrs": [str(a) for a in store.addrs(p)]}
                for p in self.host.get_connected_peers()]
