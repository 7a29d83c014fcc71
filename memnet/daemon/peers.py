"""The peers service: join the swarm at start (bootstrap peers, then a lookup of our own id that
fills the routing table), bring LAN peers found by mDNS into the DHT, and list connected peers."""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.peerinfo import PeerInfo

from memnet.config import Config
from memnet.daemon.base import Service
from memnet.daemon.commands import Command, NoArgs, Progress
from memnet.net.host import peer_info

log = logging.getLogger("memnet.daemon")

JOIN_TIMEOUT = 10.0
LAN_POLL = 10.0


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
        await self._bootstrap()
        task_status.started()
        if self.mdns:
            await self._lan_peers()

    async def join(self, info: PeerInfo) -> bool:
        try:
            with trio.fail_after(JOIN_TIMEOUT):
                await self.host.connect(info)
            await self.dht.add_peer(info.peer_id)
            return True
        except Exception as exc:
            log.warning("cannot reach peer %s: %s", info.peer_id, exc or type(exc).__name__)
            return False

    async def _bootstrap(self) -> None:
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
