"""Finding the longest cached prefix in the swarm (docs/MIP.md §17.1).

Each probe is one salt's prefix-chain keys of the prompt (one list per KV dtype the caller would
accept). Connected peers are asked first, over MIP (get_prefix for every key, pipelined on one
stream each), as Bitswap asks its neighbours before content routing: a DHT lookup is ~20 stream
round trips, a neighbour one. The DHT is then asked only for keys longer than the longest one a
neighbour holds (the whole prompt, typically), so it can still find a better cube elsewhere. Of
the keys found in the DHT, the longest with a provider wins, and its providers are asked which
activation cubes they hold under it. Every manifest is authenticated (hash, then signature) and
must list the key it was offered under; a peer that lies is scored and its offer dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo

from memnet.cube import manifest as manifest_mod
from memnet.errors import FormatError, MemnetError, PeerError, UsageError
from memnet.net.client import MipSession
from memnet.net.discovery import Discovery, prefix_key
from memnet.net.fetch import PeerScores

log = logging.getLogger("memnet.prefix")

MAX_PROBES = 8            # salts per lookup
MAX_KEYS = 65             # keys per probe: 16 384 tokens in 256-token blocks, plus the tail
LOOKUP_CONCURRENCY = 16
NEIGHBOURS = 8            # connected peers asked before the DHT (the daemon's prefix_neighbours)
PROVIDERS_ASKED = 3       # per winning key
CUBES_PER_PROBE = 4
PEER_TIMEOUT = 10.0


def check_probes(probes: object) -> list[list[bytes]]:
    if not isinstance(probes, list) or not 0 < len(probes) <= MAX_PROBES:
        raise UsageError(f"probes must be a list of 1 … {MAX_PROBES} key lists")
    for keys in probes:
        if not isinstance(keys, list) or not 0 < len(keys) <= MAX_KEYS or not all(
                isinstance(k, bytes) and len(k) == 32 for k in keys):
            raise UsageError(f"each probe must list 1 … {MAX_KEYS} 32-byte prefix keys")
    return probes


@dataclass
class ProbeResult:
    """The longest key of one probe found so far and the authenticated cubes held under it."""

    index: int = -1
    cubes: dict[bytes, tuple[bytes, list[PeerInfo]]] = field(default_factory=dict)

    def offer(self, index: int, cube_id: bytes, data: bytes, info: PeerInfo) -> None:
        if index > self.index:
            self.index, self.cubes = index, {}
        if index == self.index:
            data, holders = self.cubes.setdefault(cube_id, (data, []))
            if all(h.peer_id != info.peer_id for h in holders):
                holders.append(info)

    def dht_start(self) -> int:
        """The first key the DHT still has to be asked for: only a longer key can do better."""
        return self.index + 1


def longest_held(keys: list[bytes], held: dict[bytes, list[bytes]]) -> int:
    """The index of the longest key in keys with cubes in held (-1: none)."""
    return max((i for i, key in enumerate(keys) if held.get(key)), default=-1)


async def _authentic(session: MipSession, cube_id: bytes, key: bytes, scores: PeerScores) -> bytes | None:
    """The manifest of a cube the peer says it holds under key, if it authenticates and lists
    the key; a lie is scored and raised (nothing else that peer says is used)."""
    data = await session.manifest(cube_id)
    try:
        m = manifest_mod.decode(data, cube_id)  # hash, then signature
    except FormatError:
        scores.lied(session.peer)
        raise PeerError(f"peer {session.peer} sent a manifest that does not authenticate") from None
    if m.kind != "activation" or key not in m.meta["prefix_keys"]:
        scores.lied(session.peer)
        raise PeerError(f"peer {session.peer} offered cube {cube_id.hex()[:16]}… under a key it does not have")
    return data


async def _ask(host: IHost, info: PeerInfo, probes: list[list[bytes]], wanted: list[int],
               scores: PeerScores, results: list[ProbeResult]) -> None:
    """Ask one peer which cubes it holds under the keys of each probe from wanted[i] on (all
    get_prefix requests pipelined on one stream), then for the manifests of those under the
    longest key it holds, if that key beats what is known."""
    peer = str(info.peer_id)
    if scores.banned(peer):
        return
    keys = list(dict.fromkeys(k for probe, start in zip(probes, wanted) if start >= 0 for k in probe[start:]))
    if not keys:
        return
    offers: list[tuple[int, int, bytes, bytes]] = []
    with trio.move_on_after(PEER_TIMEOUT):
        try:
            await host.connect(info)
            session = await MipSession.open(host, info.peer_id)
            try:
                held = dict(zip(keys, await session.prefixes(keys)))
                for i, (probe, start) in enumerate(zip(probes, wanted)):
                    if start < 0:
                        continue
                    index = longest_held(probe, held)
                    if index < max(start, results[i].index):
                        continue
                    for cube_id in held[probe[index]][:CUBES_PER_PROBE]:
                        data = await _authentic(session, cube_id, probe[index], scores)
                        offers.append((i, index, cube_id, data))
            finally:
                await session.close()
        except MemnetError as exc:
            log.info("prefix lookup: peer %s: %s", peer, exc)
            return
        except Exception as exc:  # a peer that vanished or broke the stream: ask the others
            log.info("prefix lookup: peer %s failed: %r", peer, exc)
            return
    for i, index, cube_id, data in offers:  # only a peer that answered everything truthfully
        results[i].offer(index, cube_id, data, info)


async def _longest_in_dht(discovery: Discovery, keys: list[bytes],
                          limit: trio.Semaphore) -> tuple[int, list[PeerInfo]]:
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
    if not found:
        return -1, []
    best = max(found)
    return best, found[best]


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
    results = [ProbeResult() for _ in probes]
    asked = _neighbours(host, scores, neighbours) if neighbours else []
    async with trio.open_nursery() as nursery:
        for info in asked:
            nursery.start_soon(_ask, host, info, probes, [0] * len(probes), scores, results)
    from_neighbours = [r.index + 1 for r in results]
    limit = trio.Semaphore(LOOKUP_CONCURRENCY)

    async def probe(i: int) -> None:
        start = results[i].dht_start()
        keys = probes[i][start:]
        if not keys:
            return
        index, providers = await _longest_in_dht(discovery, keys, limit)
        if index < 0:
            return
        wanted = [-1] * len(probes)
        wanted[i] = start + index
        async with trio.open_nursery() as nursery:
            for info in providers[:PROVIDERS_ASKED]:
                nursery.start_soon(_ask, host, info, probes, wanted, scores, results)

    async with trio.open_nursery() as nursery:
        for i in range(len(probes)):
            nursery.start_soon(probe, i)
    log.info("prefix lookup: %d probe(s), %d neighbour(s) asked, longest keys %s (neighbours %s), %d cube(s)",
             len(probes), len(asked), [r.index + 1 for r in results], from_neighbours,
             sum(len(r.cubes) for r in results))
    found: dict[bytes, tuple[bytes, list[PeerInfo]]] = {}
    for result in results:
        found.update(result.cubes)
    return [(cube_id, data, providers) for cube_id, (data, providers) in found.items()]
