"""Fetching some chunks of a cube, not the cube: a span server's share of an activation cube
(memnet/bridge/seeding.py asks its daemon for it). The same transfer as a whole fetch
(memnet/net/fetch.py: the manifest authenticated first, chunks from every provider at once, each
verified against its CID), but the chunks end up staged in the store, and the cube is not stored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo

from memnet.config import FetchTuning
from memnet.cube import build, cid
from memnet.cube import manifest as manifest_mod
from memnet.cube.manifest import Manifest
from memnet.errors import FetchError
from memnet.net.fetch import Transfer, reasons
from memnet.net.fetch_plan import FetchPlan
from memnet.net.peer_scores import PeerScores
from memnet.store import Store


async def fetch_parts(host: IHost, store: Store, cube_id: bytes, find_providers: Callable[[], Awaitable[list[PeerInfo]]],
                      indices: list[int], *, scores: PeerScores, tuning: FetchTuning = FetchTuning(),
                      vet: Callable[[Manifest], None] | None = None,
                      manifest_bytes: bytes | None = None) -> tuple[bytes, int]:
    """Fetch some chunks of a cube (by index) into the store's staging, each verified against its
    CID: a span server's share of a KV cube. The manifest (fetched unless given) is authenticated
    first and vetted. Returns (manifest bytes, bytes moved). The cube itself is not stored."""
    me = str(host.get_id())
    fetch = Transfer(host, store, cube_id, scores, tuning, None)
    providers: list[PeerInfo] | None = None

    async def lookup() -> list[PeerInfo]:
        found = scores.order([p for p in await find_providers() if str(p.peer_id) != me])
        if not found:
            raise FetchError(f"no provider of {cid.to_text(cube_id)} found in the swarm")
        return found

    if manifest_bytes is None:
        providers = await lookup()
        manifest_bytes, manifest = await fetch.manifest(providers)
    else:
        manifest = manifest_mod.decode(manifest_bytes, cube_id)  # hash, then signature
        build.check_fresh(manifest)
    if vet is not None:
        vet(manifest)
    if not all(0 <= i < len(manifest.chunks) for i in indices):
        raise FetchError(f"{cid.to_text(cube_id)} has {len(manifest.chunks)} chunks; asked for {sorted(indices)[-1]}")
    first = {manifest.chunks[i]: i for i in sorted(set(indices))}
    held = dict(zip(first, store.has_chunks(list(first))))
    wanted = [c for c in first if not held[c]]
    if not wanted:  # all here already: no provider lookup at all
        return manifest_bytes, 0
    providers = providers or await lookup()
    plan = FetchPlan(wanted, {c: manifest.chunk_length(first[c]) for c in wanted}, tuning.chunks_per_request)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch.stage)
        try:
            await fetch.chunks(plan, [p for p in providers if str(p.peer_id) not in fetch.dropped])
        finally:
            fetch.finish_staging()  # every verified chunk goes to staging: nothing else holds it
    if not plan.complete:
        raise FetchError(f"{cid.to_text(cube_id)}: {len(plan.done)} of {len(wanted)} chunks fetched, no provider "
                         "left" + reasons(fetch.dropped))
    return manifest_bytes, sum(fetch.bytes_from.values())
