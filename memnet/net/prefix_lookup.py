"""Finding the longest cached prefix in the swarm (docs/MIP.md §17.1).

Each probe is one salt's prefix-chain keys of the prompt (one list per KV dtype the caller would
accept). Every key of every probe is looked up in the DHT at once (a handful of keys: one per 256
tokens), the longest key with a provider wins per probe, and its providers are asked over MIP
which activation cubes they hold under it. Manifests come back authenticated (hash, then
signature); the caller decides how many tokens each really serves.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo

from memnet.cube import manifest as manifest_mod
from memnet.errors import FormatError, MemnetError, UsageError
from memnet.net.client import MipSession
from memnet.net.discovery import Discovery, prefix_key
from memnet.net.fetch import PeerScores

log = logging.getLogger("memnet.prefix")

MAX_PROBES = 8            # salts per lookup
MAX_KEYS = 65             # keys per probe: 16 384 tokens in 256-token blocks, plus the tail
LOOKUP_CONCURRENCY = 16
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


async def _longest(discovery: Discovery, keys: list[bytes], limit: trio.Semaphore) -> tuple[int, list[PeerInfo]]:
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


async def _ask(host: IHost, info: PeerInfo, key: bytes, scores: PeerScores,
               out: dict[bytes, tuple[bytes, list[PeerInfo]]]) -> None:
    peer = str(info.peer_id)
    if scores.banned(peer):
        return
    with trio.move_on_after(PEER_TIMEOUT):
        try:
            await host.connect(info)
            session = await MipSession.open(host, info.peer_id)
            try:
                for cube_id in (await session.prefix(key))[:CUBES_PER_PROBE]:
                    if cube_id in out:
                        out[cube_id][1].append(info)
                        continue
                    data = await session.manifest(cube_id)
                    try:
                        m = manifest_mod.decode(data, cube_id)  # hash, then signature
                    except FormatError:
                        scores.lied(peer)
                        log.info("prefix lookup: peer %s sent a manifest that does not authenticate", peer)
                        return
                    if m.kind == "activation" and key in m.meta["prefix_keys"]:
                        out[cube_id] = (data, [info])
            finally:
                await session.close()
        except MemnetError as exc:
            log.info("prefix lookup: peer %s: %s", peer, exc)
        except Exception as exc:  # a peer that vanished or broke the stream: ask the others
            log.info("prefix lookup: peer %s failed: %r", peer, exc)


async def find_prefix_cubes(host: IHost, discovery: Discovery, probes: list[list[bytes]],
                            scores: PeerScores) -> list[tuple[bytes, bytes, list[PeerInfo]]]:
    """(cube id, authenticated manifest bytes, providers) of the cubes under each probe's longest
    key found in the DHT."""
    limit = trio.Semaphore(LOOKUP_CONCURRENCY)
    winners: list[tuple[int, list[PeerInfo]]] = [(-1, [])] * len(probes)

    async def probe(i: int) -> None:
        winners[i] = await _longest(discovery, probes[i], limit)

    async with trio.open_nursery() as nursery:
        for i in range(len(probes)):
            nursery.start_soon(probe, i)
    out: dict[bytes, tuple[bytes, list[PeerInfo]]] = {}
    async with trio.open_nursery() as nursery:
        for keys, (index, providers) in zip(probes, winners):
            for info in providers[:PROVIDERS_ASKED]:
                nursery.start_soon(_ask, host, info, keys[index], scores, out)
    log.info("prefix lookup: %d probe(s), longest keys %s, %d cube(s)", len(probes),
             [i + 1 for i, _ in winners], len(out))
    return [(cube_id, data, providers) for cube_id, (data, providers) in out.items()]
