"""Seeding a span session from an activation cube: only this span's layers of it.

The cube's manifest must authenticate (hash, signature), be an activation cube bound to the
server's model, tokenizer and layout with no adapter, and hold at least the seed's tokens. Then
only the chunks that cover the safetensors header and this span's tensors (k.{l}, v.{l} and, for
int8, their scales, for l in [start, end)) are read: from the node's store when it holds the
cube, else fetched through the daemon (each chunk verified against its CID there) and verified
again here before use. About (end - start) / layers of the payload moves, not the whole cube.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from memnet.cube import cid, payloads
from memnet.cube import manifest as manifest_mod
from memnet.cube.manifest import Manifest
from memnet.errors import MemnetError, PolicyError
from memnet.governance import revocations
from memnet.model import kv
from memnet.model.loader import LoadedModel
from memnet.model.segments import Segments
from memnet.store import Store

# fetch(cube id, chunk indices, provider hints) -> (manifest bytes, bytes moved): the daemon's fetch_chunks
Fetch = Callable[[bytes, list[int], tuple[str, ...]], Awaitable[tuple[bytes, int]]]


class SeedError(PolicyError):
    """The seed cannot be used (forged, another model, revoked, unobtainable): "bad_seed"."""


@dataclass
class Seeded:
    segments: Segments
    meta: dict[str, Any]
    source: str      # "store" or "fetched"
    fetched: int     # bytes moved over the network for it


def check_binding(m: Manifest, loaded: LoadedModel, tokens: int) -> None:
    if m.kind != "activation":
        raise SeedError(f"the seed is a {m.kind} cube, not an activation cube")
    try:
        kv.check_binding(m.meta, loaded, None)
    except PolicyError as exc:
        raise SeedError(str(exc)) from None
    if tokens > m.meta["n_tokens"]:
        raise SeedError(f"the seed holds {m.meta['n_tokens']} tokens, {tokens} were asked for")


def span_tensors(meta: dict[str, Any], start: int, end: int) -> list[str]:
    names = [f"{kind}.{layer}" for layer in range(start, end) for kind in ("k", "v")]
    if meta["dtype"] == "int8":
        names += [f"{kind}_scale.{layer}" for layer in range(start, end) for kind in ("k", "v")]
    return names


def chunk_range(m: Manifest, first: int, stop: int) -> list[int]:
    """Indices of the chunks covering payload bytes [first, stop)."""
    if stop <= first:
        return []
    return list(range(first // m.chunk_size, (stop - 1) // m.chunk_size + 1))


def _read(store: Store, m: Manifest, indices: list[int]) -> list[tuple[int, bytes]]:
    """(offset, bytes) of chunks, each verified against its CID here too."""
    out = []
    for index in indices:
        chunk_id = m.chunks[index]
        data = store.chunk(chunk_id)
        if data is None:
            raise SeedError(f"chunk {index} of the seed is not at hand")
        if cid.cid_of(data) != chunk_id:
            raise SeedError(f"chunk {index} of the seed does not match its CID")
        out.append((index * m.chunk_size, bytes(data)))
    return out


async def prepare(store: Store, fetch: Fetch, cube_id: bytes, tokens: int, loaded: LoadedModel,
                  start: int, end: int, manifests: dict[bytes, bytes] | None = None,
                  hints: tuple[str, ...] = ()) -> Seeded:
    """The cube's header and this span's tensors, checked, as a sparse Segments. manifests caches
    authenticated manifest bytes across sessions (a second session with the same seed then needs
    no daemon round trip when its chunks are already here)."""
    revocations.refuse_revoked(store, cube_id)
    manifests = {} if manifests is None else manifests
    fetched, source = 0, "store"
    local = store.has(cube_id)

    async def need(indices: list[int]) -> None:
        """Fetch (through the daemon) the chunks of indices this node does not hold yet."""
        nonlocal fetched, source
        missing = [i for i, held in zip(indices, store.has_chunks([m.chunks[i] for i in indices])) if not held]
        if missing and not local:
            fetched += (await fetch(cube_id, missing, hints))[1]
            source = "fetched"

    try:
        if local:
            data = store.manifest_bytes(cube_id)
        elif cube_id in manifests:
            data = manifests[cube_id]
        else:
            data, moved = await fetch(cube_id, [0], hints)
            fetched, source = fetched + moved, "fetched"
        m = manifest_mod.decode(data, cube_id)  # hash, then signature
    except MemnetError as exc:
        raise SeedError(f"the seed's manifest: {exc}") from None
    check_binding(m, loaded, tokens)
    manifests[cube_id] = data
    await need([0])
    parts = dict(_read(store, m, [0]))
    (header_len,) = struct.unpack("<Q", parts[0][:8])  # the header: its length is in the first 8 bytes
    header_chunks = [i for i in chunk_range(m, 0, 8 + header_len) if i * m.chunk_size not in parts]
    await need(header_chunks)
    parts.update(_read(store, m, header_chunks))
    try:
        header = payloads.validate_activation(Segments.at(list(parts.items()), m.size), m.meta)
    except MemnetError as exc:
        raise SeedError(f"the seed's tensors: {exc}") from None
    wanted: set[int] = set()
    for name in span_tensors(m.meta, start, end):
        info = header.tensors[name]
        wanted.update(chunk_range(m, header.data_start + info.start, header.data_start + info.end))
    missing = sorted(i for i in wanted if i * m.chunk_size not in parts)
    await need(missing)
    parts.update(_read(store, m, missing))
    return Seeded(Segments.at(list(parts.items()), m.size), m.meta, source, fetched)
