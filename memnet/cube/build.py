"""Building a signed cube from a payload, and verifying one that came from elsewhere.

A sealed cube (docs/MIP.md section 19) is built from its plaintext, checked, then encrypted: its
chunks and CIDs are of the ciphertext. Anyone verifies its chunks; only a recipient can check
its payload's structure, after opening it (open_payload)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memnet.cube import cid, keys, limits, sealed
from memnet.cube.keys import Recipient
from memnet.cube.manifest import Manifest, decode
from memnet.cube.meta import validate_meta
from memnet.cube.payloads import check_items_stream, validate_payload
from memnet.errors import FormatError, LimitError, PolicyError


@dataclass(frozen=True)
class Cube:
    """A signed manifest with its chunks, each chunk's CID already computed."""

    manifest: Manifest
    manifest_bytes: bytes
    cube_id: bytes
    chunks: Mapping[bytes, bytes | memoryview]   # a dict, or a ChunkReader of a stored cube

    def payload(self) -> bytes:
        return b"".join(bytes(self.chunks[c]) for c in self.manifest.chunks)

    @property
    def in_store(self) -> bool:
        """Its chunks are read from the store (a fetched cube, verified from staging): storing
        it writes none of them."""
        return isinstance(self.chunks, ChunkReader)


def split(payload: bytes | memoryview, chunk_size: int) -> Iterator[memoryview]:
    view = memoryview(payload)
    for start in range(0, len(view), chunk_size):
        yield view[start:start + chunk_size]


def check_shape(kind: str, stored_size: int, chunk_size: int) -> None:
    """The kind is known, the chunk size allowed, and the payload fits in MAX_CHUNKS chunks."""
    if kind not in limits.KINDS:
        raise FormatError(f"unknown cube kind {kind!r}")
    if not (isinstance(chunk_size, int) and limits.MIN_CHUNK_SIZE <= chunk_size <= limits.MAX_CHUNK_SIZE):
        raise FormatError(f"chunk_size must be an integer in [{limits.MIN_CHUNK_SIZE}, {limits.MAX_CHUNK_SIZE}]")
    if -(-stored_size // chunk_size) > limits.MAX_CHUNKS:
        raise LimitError(f"payload needs more than {limits.MAX_CHUNKS} chunks of {chunk_size} bytes")


def build(
    key: Ed25519PrivateKey,
    kind: str,
    payload: bytes,
    meta: dict[str, Any],
    *,
    chunk_size: int = limits.DEFAULT_CHUNK_SIZE,
    created: int | None = None,
    recipients: Sequence[Recipient] | None = None,
    secrets: sealed.Secrets | None = None,
    **optional: Any,
) -> Cube:
    """Chunk, hash, check and sign a payload. optional: name, version, supersedes, parents,
    expires, license, tags, description (as in Manifest). With recipients, the payload is
    sealed to them (secrets: fixed randomness, for golden vectors only)."""
    check_shape(kind, len(payload) if recipients is None else sealed.sealed_size(len(payload)), chunk_size)
    validate_meta(kind, meta)  # meta first: the payload check indexes into it
    validate_payload(kind, payload, meta)
    if recipients is not None:
        payload, optional["seal"] = sealed.seal(payload, recipients, kind=kind, author=keys.public_bytes(key),
                                                secrets=secrets)
    chunks: dict[bytes, bytes | memoryview] = {}
    order = []
    for piece in split(payload, chunk_size):
        chunk_id = cid.cid_of(piece)
        chunks.setdefault(chunk_id, piece)
        order.append(chunk_id)
    manifest, encoded, cube_id = sign_manifest(key, kind, len(payload), order, meta, chunk_size=chunk_size,
                                               created=created, **optional)
    return Cube(manifest, encoded, cube_id, chunks)


def sign_manifest(key: Ed25519PrivateKey, kind: str, size: int, chunk_ids: Sequence[bytes], meta: dict[str, Any],
                  *, chunk_size: int, created: int | None = None, **optional: Any) -> tuple[Manifest, bytes, bytes]:
    """(manifest, its encoding, the cube id) of a payload already chunked and hashed (by build,
    or by a publish that staged the chunks in the store as it read them)."""
    manifest = Manifest(
        kind=kind,
        author=keys.public_bytes(key),
        created=int(time.time()) if created is None else created,
        size=size,
        chunk_size=chunk_size,
        chunks=tuple(chunk_ids),
        meta=meta,
        **optional,
    ).sign(key)
    encoded = manifest.encode()
    if len(encoded) > limits.MAX_MANIFEST:  # nobody could decode it
        raise LimitError(f"manifest is {len(encoded)} bytes, the limit is {limits.MAX_MANIFEST}")
    return manifest, encoded, cid.cid_of(encoded)


def check_fresh(manifest: Manifest, now: int | None = None) -> None:
    now = int(time.time()) if now is None else now
    if manifest.expires is not None and manifest.expires <= now:
        raise PolicyError(f"cube expired at {manifest.expires} (now {now})")


def verify(
    manifest_bytes: bytes,
    cube_id: bytes,
    get_chunk: Callable[[bytes], bytes | memoryview | None],
    *,
    check_expiry: bool = True,
    hashed: Collection[bytes] = (),
    keep_chunks: bool = True,
) -> Cube:
    """Authenticate a cube from untrusted sources, in MIP's order: manifest hash, signature,
    fields, expiry, then every chunk against its CID and length, then the payload's structure
    (for a sealed cube, a recipient checks that after opening it: open_payload). Chunks in
    `hashed` were checked against their CID on arrival (a fetch) and are not hashed again.
    keep_chunks False: the chunks are read one at a time and not held; the cube's chunks then
    read through get_chunk again when asked for (a fetched cube, staged in the store); where
    `hashed` maps chunks to their lengths, those are not even read (but for a plaintext cube,
    whose items are checked)."""
    manifest = decode(manifest_bytes, cube_id)
    if check_expiry:
        check_fresh(manifest)
    chunks: dict[bytes, bytes | memoryview] = {}
    lengths: dict[bytes, int] = {}
    for index, chunk_id in enumerate(manifest.chunks):
        length = lengths.get(chunk_id)
        if length is None and not keep_chunks and isinstance(hashed, Mapping) and chunk_id in hashed:
            length = lengths[chunk_id] = hashed[chunk_id]
        if length is None:
            data = get_chunk(chunk_id)
            if data is None:
                raise FormatError(f"chunk {index} ({cid.to_text(chunk_id)}) is missing")
            if chunk_id not in hashed:
                cid.verify_block(chunk_id, data)
            length = lengths[chunk_id] = len(data)
            if keep_chunks:
                chunks[chunk_id] = data
        if length != manifest.chunk_length(index):
            raise FormatError(f"chunk {index} has {length} bytes, expected {manifest.chunk_length(index)}")
    cube = Cube(manifest, manifest_bytes, cube_id, chunks if keep_chunks else ChunkReader(lengths, get_chunk))
    if manifest.seal is not None:
        return cube
    if manifest.kind == "plaintext":  # item by item, chunk by chunk: never the whole payload at once
        check_items_stream((cube.chunks[c] for c in manifest.chunks), manifest.meta["items"],
                           embedded="embedding" in manifest.meta)
    else:
        # safetensors kinds are checked from their header and total length alone: joining the
        # whole payload for that was a second full copy of every byte
        validate_payload(manifest.kind, _ChunkedPayload(cube), manifest.meta)
    return cube


class ChunkReader(Mapping):
    """A verified cube's chunks, read when asked for (from the store) rather than held. Every
    chunk is in the store already (Store.put writes none of them for such a cube)."""

    def __init__(self, chunk_ids: Collection[bytes], get_chunk: Callable[[bytes], bytes | memoryview | None]):
        self._ids, self._get = chunk_ids, get_chunk

    def __getitem__(self, chunk_id: bytes) -> bytes | memoryview:
        data = self._get(chunk_id) if chunk_id in self._ids else None
        if data is None:
            raise KeyError(chunk_id)
        return data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def open_payload(manifest: Manifest, data: bytes, identity: Ed25519PrivateKey) -> bytes:
    """The usable payload of a verified cube's stored bytes: as is for a public cube; for a sealed
    one decrypted with this node's identity (PolicyError unless it is a recipient) and only then
    checked against the manifest's meta, as verify does for a public cube."""
    if manifest.seal is None:
        return data
    payload = sealed.open_sealed(data, manifest.seal, kind=manifest.kind, author=manifest.author,
                                 identity=identity)
    validate_payload(manifest.kind, payload, manifest.meta)
    return payload


class _ChunkedPayload:
    """Just enough of bytes for parse_header: len() and slices, joining only the chunks a slice
    touches."""

    def __init__(self, cube: Cube):
        self._m, self._chunks = cube.manifest, cube.chunks

    def __len__(self) -> int:
        return self._m.size

    def __getitem__(self, index: slice) -> bytes:
        start, stop, step = index.indices(self._m.size)
        if step != 1:
            raise ValueError("only contiguous slices")
        if stop <= start:
            return b""
        size = self._m.chunk_size
        first, last = start // size, (stop - 1) // size
        data = b"".join(self._chunks[self._m.chunks[i]] for i in range(first, last + 1))
        return data[start - first * size:stop - first * size]
