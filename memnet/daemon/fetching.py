"""The fetch service: find providers of a cube or a KV prefix, and fetch cubes (verified,
multi-peer: memnet/net/fetch.py), then pin and announce them as the trust policy allows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from memnet.config import Config
from memnet.cube import cid
from memnet.daemon.announcer import ANNOUNCE_DELAY, Announcer
from memnet.daemon.base import Service
from memnet.daemon.commands import Command, Progress
from memnet.daemon.peers import peer_dict
from memnet.daemon.revocations import RevocationWatch
from memnet.errors import FetchError, UsageError
from memnet.governance import revocations
from memnet.governance.gate import Gate
from memnet.net import prefix_lookup
from memnet.net.dht_keys import cube_key, prefix_key
from memnet.net.discovery import Discovery, FindStats
from memnet.net.fetch import fetch_cube
from memnet.net.fetch_parts import fetch_parts
from memnet.net.peer_scores import PeerScores
from memnet.net.host import parse_multiaddr, peer_info
from memnet.net.neighbours import with_neighbours
from memnet.store import Store

log = logging.getLogger("memnet.daemon")

PROVIDERS_FRESH = 30.0  # s providers found for a partial fetch are reused for the next one


@dataclass(frozen=True)
class FindArgs:
    cube: bytes | None = None
    prefix: bytes | None = None
    stats: bool = False   # answer {"providers", "stats"}: how the walk and the wave went


@dataclass(frozen=True)
class FindPrefixArgs:
    probes: list[list[bytes]]


@dataclass(frozen=True)
class FetchChunksArgs:
    cube: bytes
    indices: list[int]
    providers: list[str] | None = None  # hints (multiaddrs with /p2p/): asked before the DHT


@dataclass(frozen=True)
class GetArgs:
    cube: bytes
    pin: bool = True
    # auto: a fetch no user asked for by CID (generation): the trust policy decides whether to
    # fetch and pin; a revoked cube is refused either way
    auto: bool = False
    wait_announce: bool = True                  # False: announce after the caller used the cube
    providers: list[dict[str, Any]] | None = None  # from a prefix lookup: asked before the DHT
    manifest: bytes | None = None               # from a prefix lookup: authenticated again here


def peer_infos(peers: list[dict[str, Any]]) -> list[PeerInfo]:
    """Peer dicts (as peer_dict writes them) from a control request -> PeerInfo."""
    try:
        return [PeerInfo(ID.from_base58(p["peer_id"]), [parse_multiaddr(a) for a in p["addrs"]]) for p in peers]
    except (KeyError, TypeError, ValueError):
        raise UsageError("providers must be peer records with peer_id and addrs") from None


class Fetching(Service):
    name = "fetching"

    def __init__(self, host: IHost, store: Store, discovery: Discovery, gate: Callable[[], Gate],
                 announcer: Announcer, revocation_watch: RevocationWatch, config: Config):
        super().__init__()
        self.host, self.store, self.discovery = host, store, discovery
        self.gate, self.announcer, self.revocation_watch = gate, announcer, revocation_watch
        self.scores = PeerScores()
        self.in_flight: dict[bytes, dict[str, Any]] = {}  # gets under way: bytes done of total (the dashboard)
        self._manifests: dict[bytes, bytes] = {}  # authenticated manifests of recent partial fetches
        self._providers: dict[bytes, tuple[float, list]] = {}  # cube -> (when, providers) of partial fetches
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.tuning = config.daemon.fetch
        self.prefix_neighbours = config.daemon.prefix_neighbours
        self.provide_fetched = config.daemon.provide_fetched

    def commands(self) -> list[Command]:
        return [Command("find", self._cmd_find, FindArgs, "providers of a cube or a KV prefix key"),
                Command("find_prefix", self._cmd_find_prefix, FindPrefixArgs, "cubes under prompt prefix keys"),
                Command("get", self._cmd_get, GetArgs, "fetch a cube from the swarm"),
                Command("fetch_chunks", self._cmd_fetch_chunks, FetchChunksArgs,
                        "fetch some chunks of a cube into staging (a span server's share of a KV cube)")]

    async def _cmd_find(self, args: FindArgs, progress: Progress) -> list | dict:
        if (args.cube is None) == (args.prefix is None):
            raise UsageError("find: give a cube or a prefix key")
        key = cube_key(cid.check_binary(args.cube)) if args.cube is not None else prefix_key(args.prefix)
        stats = FindStats() if args.stats else None
        providers = [peer_dict(p) for p in await self.discovery.find_providers(key, stats=stats)]
        if stats is None:
            return providers
        return {"providers": providers, "stats": {k: v for k, v in asdict(stats).items() if k != "in_flight"}}

    async def _cmd_find_prefix(self, args: FindPrefixArgs, progress: Progress) -> list:
        probes = prefix_lookup.check_probes(args.probes)
        found = await prefix_lookup.find_prefix_cubes(self.host, self.discovery, probes, self.scores,
                                                      self.prefix_neighbours)
        return [{"cube": cube_id, "manifest": data, "providers": [peer_dict(p) for p in providers]}
                for cube_id, data, providers in found]

    async def _cmd_fetch_chunks(self, args: FetchChunksArgs, progress: Progress) -> dict:
        cube_id = cid.check_binary(args.cube)
        revocations.refuse_revoked(self.store, cube_id)
        if self.store.has(cube_id):
            return {"manifest": self.store.manifest_bytes(cube_id), "fetched": 0}
        if len(args.indices) > 65536:
            raise UsageError("fetch_chunks: at most 65536 indices")
        gate = self.gate()

        hints = []
        for addr in (args.providers or [])[:8]:
            try:
                hints.append(peer_info(addr))
            except UsageError:
                continue  # a hint is only a hint

        async def providers():
            # a span server asks for a cube's chunks two or three times in a row (the first chunk,
            # then its layers'): one DHT lookup serves them all; hints spare even that one
            if hints:
                return list(hints)
            known = self._providers.get(cube_id)
            if known is not None and trio.current_time() - known[0] < PROVIDERS_FRESH:
                return known[1]
            found = await self.discovery.find_providers(cube_key(cube_id))
            if len(self._providers) >= 16:
                self._providers.pop(next(iter(self._providers)))
            self._providers[cube_id] = (trio.current_time(), found)
            return found

        try:
            manifest, moved = await fetch_parts(self.host, self.store, cube_id, providers, args.indices,
                                                scores=self.scores, tuning=self.tuning,
                                                vet=lambda m: gate.check("fetch", cube_id, m.author),
                                                manifest_bytes=self._manifests.get(cube_id))
        except FetchError:
            if not hints:
                raise
            hints.clear()  # the hinted providers did not do: the DHT's then
            manifest, moved = await fetch_parts(self.host, self.store, cube_id, providers, args.indices,
                                                scores=self.scores, tuning=self.tuning,
                                                vet=lambda m: gate.check("fetch", cube_id, m.author),
                                                manifest_bytes=self._manifests.get(cube_id))
        if len(self._manifests) >= 16:
            self._manifests.pop(next(iter(self._manifests)))
        self._manifests[cube_id] = manifest
        log.info("fetched %d chunk(s) of %s (%d bytes) for a span", len(set(args.indices)), cid.to_text(cube_id), moved)
        return {"manifest": manifest, "fetched": moved}

    async def _cmd_get(self, args: GetArgs, progress: Progress) -> dict:
        cube_id = cid.check_binary(args.cube)
        pin, auto, gate = args.pin, args.auto, self.gate()
        revocations.refuse_revoked(self.store, cube_id)
        if self.store.has(cube_id):
            if pin and (not auto or gate.allows("pin", cube_id, self.store.manifest(cube_id).author)):
                self.store.pin(cube_id, "fetched")
            return {"cube": cube_id, "already": True}
        hints = peer_infos(args.providers or [])

        async def providers():
            # providers the caller already found (a prefix lookup) first; the DHT for the rest
            if hints:
                found, hints[:] = list(hints), []
                return found
            return with_neighbours(self.host, await self.discovery.find_providers(cube_key(cube_id)))

        track = self.in_flight.setdefault(cube_id, {"cube": cid.to_text(cube_id), "done": 0, "total": 0,
                                                     "started": time.time(), "auto": auto})

        def tracked(done: int, total: int) -> None:
            track.update(done=done, total=total)
            progress(done, total)

        try:
            report = await fetch_cube(self.host, self.store, cube_id, providers, scores=self.scores,
                                      tuning=self.tuning, progress=tracked,
                                      pin_reason="fetched" if pin and not auto else None,
                                      vet=(lambda m: gate.check("fetch", cube_id, m.author)) if auto else None,
                                      manifest_bytes=args.manifest)
        finally:
            self.in_flight.pop(cube_id, None)
        manifest = report.cube.manifest
        if auto and pin:
            pin = gate.allows("pin", cube_id, manifest.author)
            if pin:
                self.store.pin(cube_id, "fetched")
        log.info("fetched %s (%d bytes) in %.2f s from %d peer(s)%s", cid.to_text(cube_id), manifest.size,
                 report.seconds, len(report.bytes_from), f", dropped {len(report.dropped)}" if report.dropped else "")
        await self.revocation_watch.vet_fetched(cube_id, manifest, wait=args.wait_announce, delay=ANNOUNCE_DELAY)
        if self.provide_fetched and pin:
            if args.wait_announce:
                await self.announcer.announce(cube_id, manifest)
            else:  # the caller is about to use the cube (a prefix for generation): share it after that
                self.announcer.announce_later(cube_id, manifest, ANNOUNCE_DELAY)
        return {"cube": cube_id, "already": False, "size": manifest.size, "seconds": report.seconds,
                "from": report.bytes_from, "dropped": report.dropped, "paths": report.paths}
