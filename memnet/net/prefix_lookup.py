"""Finding the longest cached prefix in the swarm, the asking side (docs/MIP.md §17.1): drives
the pure planner of memnet/net/prefix_plan.py over MIP sessions and the DHT."""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo

from memnet.errors import MemnetError
from memnet.net.client import MipSession
from memnet.net.dht_keys import prefix_key
from memnet.net.discovery import Discovery
from memnet.net.peer_scores import PeerScores
from memnet.net.prefix_plan import NEIGHBOURS, PROVIDERS_ASKED, PrefixLookup, check_offer, check_probes

log = logging.getLogger("memnet.prefix")

__all__ = ["check_probes", "find_prefix_cubes"]

LOOKUP_CONCURRENCY = 16
PEER_TIMEOUT = 10.0


def _same_peer(a: PeerInfo, b: PeerInfo) -> bool:
    return a.peer_id == b.peer_id


async def _ask(host: IHost, info: PeerInfo, lookup: PrefixLookup, wanted: list[int], scores: PeerScores) -> None:
    """Ask one peer which cubes it holds under the wanted keys (all get_prefix requests
    pipelined on one stream), then for the manifests of the offers worth having; its offers
    count only if every manifest authenticates."""
    peer = str(info.peer_id)
    if scores.banned(peer):
        return
    keys = lookup.keys_to_ask(wanted)
    if not keys:
        return
    checked = []
    with trio.move_on_after(PEER_TIMEOUT):
        try:
            await host.connect(info)
            session = await MipSession.open(host, info.peer_id)
            try:
                held = dict(zip(keys, await session.prefixes(keys)))
                for offer in lookup.offers(wanted, held):
                    data = await session.manifest(offer.cube_id)
                    try:
                        check_offer(data, offer.cube_id, offer.key, peer)
                    except MemnetError:
                        scores.lied(peer)
                        raise
                    checked.append((offer, data))
            finally:
                await session.close()
        except MemnetError as exc:
            log.info("prefix lookup: peer %s: %s", peer, exc)
            return
        except Exception as exc:  # a peer that vanished or broke the stream: ask the others
            log.info("prefix lookup: peer %s failed: %r", peer, exc)
            return
        lookup.accept(checked, info)  # only a peer that answered everything truthfully


async def _longest_in_dht(discovery: Discovery, keys: list[bytes], limit: trio.Semaphore
                          ) -> tuple[int, list[PeerInfo]]:
    found: dict[int, list[PeerInfo]] = {}

    async def look(index: int) -> None:
        async with limit:
            try:
                providers = await discovery.find_providers(prefix_key(keys[index]))
            except MemnetError:
                providers = []
            if providers:
                found[index] = providers

    async with trio.open_nursery() as nursery:
        for index in range(len(keys)):
            nursery.start_soon(look, index)
    return PrefixLookup.longest_found(found)


def _neighbours(host: IHost, scores: PeerScores, count: int) -> list[PeerInfo]:
    store = host.get_peerstore()
    infos = []
    for peer_id in host.get_connected_peers():
        try:
            infos.append(store.peer_info(peer_id))
        except Exception:  # connected, but no address recorded: the open connection is enough
            infos.append(PeerInfo(peer_id, []))
    return scores.order(infos)[:count]


async def find_prefix_cubes(host: IHost, discovery: Discovery, probes: list[list[bytes]],
                            scores: PeerScores, neighbours: int = NEIGHBOURS
                            ) -> list[tuple[bytes, bytes, list[PeerInfo]]]:
    """(cube id, authenticated manifest bytes, providers) of the cubes under each probe's longest
    key found among the neighbours and in the DHT."""
    lookup: PrefixLookup[PeerInfo] = PrefixLookup(probes, _same_peer)
    asked = _neighbours(host, scores, neighbours) if neighbours else []
    async with trio.open_nursery() as nursery:
        for info in asked:
            nursery.start_soon(_ask, host, info, lookup, lookup.everything(), scores)
    from_neighbours = lookup.longest()
    limit = trio.Semaphore(LOOKUP_CONCURRENCY)

    async def probe(i: int) -> None:
        start, keys = lookup.dht_keys(i)
        if not keys:
            return
        index, providers = await _longest_in_dht(discovery, keys, limit)
        if index < 0:
            return
        wanted = lookup.wanted_after_dht(i, start + index)
        async with trio.open_nursery() as nursery:
            for info in providers[:PROVIDERS_ASKED]:
                nursery.start_soon(_ask, host, info, lookup, wanted, scores)

    async with trio.open_nursery() as nursery:
        for i in range(len(probes)):
            nursery.start_soon(probe, i)
    found = lookup.found()
    log.info("prefix lookup: %d probe(s), %d neighbour(s) asked, longest keys %s (neighbours %s), %d cube(s)",
             len(probes), len(asked), lookup.longest(), from_neighbours, len(found))
    return found
