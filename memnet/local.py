"""Cube operations that need no network: publish (Publisher: a store and the key that signs),
read a payload for use, import and export archives."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memnet.cube import build, car, cid, keys, limits
from memnet.cube.build import ChunkReader, Cube
from memnet.cube.meta import validate_meta
from memnet.cube.payload_views import Sliceable, Streamed
from memnet.cube.payloads import check_items_stream, validate_payload
from memnet.errors import FormatError, LimitError, UsageError
from memnet.files import write_atomic
from memnet.governance import revocations
from memnet.store import Store

MAX_IMPORT = 4 * 1024**3  # an archive is verified in memory before its one store transaction
STAGE_ABOVE = 32 * 1024**2  # a larger payload goes into the store in pieces (Publisher._stage)
STAGE_BATCH = 16 * 1024**2  # bytes of chunks per staging transaction: what a publish holds at once
MAX_SEALED = 256 * 1024**2  # a sealed payload is encrypted whole, in memory


def parse_recipients(texts: list[str]) -> list[keys.Recipient]:
    """Recipient strings (as `memnet id` prints them) -> authenticated recipients; UsageError."""
    try:
        return [keys.parse_recipient(text) for text in texts]
    except FormatError as exc:
        raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class Publisher:
    """This node as an author: its store, the key that signs what it publishes (and opens the
    sealed cubes addressed to it), and the chunk size it publishes with."""

    store: Store
    key: Ed25519PrivateKey
    chunk_size: int = limits.DEFAULT_CHUNK_SIZE
    stage_above: int = STAGE_ABOVE

    @property
    def author(self) -> bytes:
        return keys.public_bytes(self.key)

    def publish(self, kind: str, payload: bytes | Sliceable | Streamed, meta: dict[str, Any], *, name: str | None = None,
                ttl: int | None = None, pin: bool = True, recipients: list[str] | None = None,
                **optional: Any) -> Cube:
        """Sign and store a cube; a name gets the next version and supersedes the previous one.
        recipients: None publishes a public cube; a list (of recipient strings, possibly empty)
        seals the payload to them and to this node, so the author can always read its own cube.
        A public payload larger than stage_above is read, hashed and stored a chunk at a time
        (_stage); a Streamed one is only for plaintext (its check reads a stream)."""
        sealed_to = None
        if recipients is not None:
            sealed_to = [keys.recipient_of(self.key), *parse_recipients(recipients)]
        if name is not None:
            latest = self.store.latest(self.author, name)
            optional.update(name=name, version=1)
            if latest is not None:
                optional.update(version=latest[0] + 1, supersedes=latest[1])
        created = int(time.time())
        if ttl is not None:
            if ttl <= 0:
                raise UsageError("--ttl must be a positive number of seconds")
            optional["expires"] = created + ttl
        pin_reason = "published" if pin else None
        try:
            if sealed_to is None and len(payload) > self.stage_above:
                return self._stage(kind, payload, meta, pin_reason, created, optional)
            if sealed_to is not None and len(payload) > MAX_SEALED:
                raise UsageError(f"a sealed cube is encrypted in memory: at most {MAX_SEALED // 2**20} MiB")
            if isinstance(payload, Streamed):
                payload = b"".join(payload.pieces())
            elif not isinstance(payload, (bytes, bytearray, memoryview)):
                payload = payload[0:len(payload)]
            cube = build.build(self.key, kind, payload, meta, chunk_size=self.chunk_size,
                               created=created, recipients=sealed_to, **optional)
        except FormatError as exc:
            raise UsageError(str(exc)) from None
        self.store.put(cube, pin_reason)
        return cube

    def _stage(self, kind: str, payload: Sliceable | Streamed, meta: dict[str, Any], pin_reason: str | None,
               created: int, optional: dict[str, Any]) -> Cube:
        """A large public payload, checked, then read and hashed a chunk at a time and written to
        the store as staged chunks (STAGE_BATCH bytes per transaction: memory stays flat however
        large the payload, and a daemon's readers are not held up by one long write); the
        manifest is signed and committed last, as a fetch commits, so a publish killed midway
        leaves staged chunks that GC reclaims, never a cube with missing chunks."""
        build.check_shape(kind, len(payload), self.chunk_size)
        validate_meta(kind, meta)
        stager = _Stager(self.store, self.chunk_size)
        if isinstance(payload, Streamed):
            if kind != "plaintext":
                raise ValueError("a streamed payload is for plaintext cubes")

            def staged(pieces):
                for piece in pieces:
                    stager.feed(piece)
                    yield piece

            # checked as it is read: the pieces go to the store only through the check
            check_items_stream(staged(payload.pieces()), meta["items"], embedded="embedding" in meta)
        else:
            validate_payload(kind, payload, meta)
            for start in range(0, len(payload), self.chunk_size):
                stager.feed(payload[start:start + self.chunk_size])
        order, lengths = stager.finish()
        size = sum(lengths[c] for c in order)
        if size != len(payload):
            raise UsageError(f"the payload gave {size} bytes, {len(payload)} were announced (its file changed?)")
        manifest, encoded, cube_id = build.sign_manifest(self.key, kind, size, order, meta,
                                                         chunk_size=self.chunk_size, created=created, **optional)
        cube = Cube(manifest, encoded, cube_id, ChunkReader(lengths, self.store.chunk))
        self.store.put(cube, pin_reason)
        return cube

    def read_payload(self, cube_id: bytes) -> bytes:
        """A stored cube's payload for use: a sealed one is opened with this node's key
        (PolicyError if the node is not a recipient, SealError if it was altered) and checked
        after opening."""
        manifest = self.store.manifest(cube_id)
        return build.open_payload(manifest, self.store.read_payload(cube_id), self.key)


class _Stager:
    """Bytes in, chunks of chunk_size out: each hashed, new ones staged in the store STAGE_BATCH
    bytes at a time. finish() -> (chunk ids in order, length of each distinct chunk)."""

    def __init__(self, store: Store, chunk_size: int):
        self.store, self.chunk_size = store, chunk_size
        self.order: list[bytes] = []
        self.lengths: dict[bytes, int] = {}
        self.batch: list[tuple[bytes, bytes]] = []
        self.pending = 0
        self.buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> None:
        if not self.buffer and len(data) == self.chunk_size:
            self._chunk(bytes(data))   # a slice of exactly one chunk: no copy through the buffer
            return
        self.buffer += data
        while len(self.buffer) >= self.chunk_size:
            self._chunk(bytes(self.buffer[:self.chunk_size]))
            del self.buffer[:self.chunk_size]

    def _chunk(self, piece: bytes) -> None:
        chunk_id = cid.cid_of(piece)
        self.order.append(chunk_id)
        if len(self.order) > limits.MAX_CHUNKS:
            raise LimitError(f"payload needs more than {limits.MAX_CHUNKS} chunks of {self.chunk_size} bytes")
        if chunk_id not in self.lengths:
            self.lengths[chunk_id] = len(piece)
            self.batch.append((chunk_id, piece))
            self.pending += len(piece)
        if self.pending >= STAGE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.batch:
            self.store.stage_chunks(self.batch)
        self.batch, self.pending = [], 0

    def finish(self) -> tuple[list[bytes], dict[bytes, int]]:
        if self.buffer:
            self._chunk(bytes(self.buffer))
            self.buffer.clear()
        self._flush()
        return self.order, self.lengths


def export(store: Store, cube_ids: list[bytes], path: Path) -> int:
    """Write cubes (checked first) into one CARv1 archive, atomically; returns its size."""
    cubes = [store.verify(c) for c in cube_ids]
    written = 0

    def fill(handle) -> None:
        nonlocal written
        written = car.write(handle, cubes)

    write_atomic(path, fill)
    return written


def import_archive(store: Store, path: Path, pin: bool = True) -> list[tuple[bytes, bool]]:
    """Verify every cube of an archive, then store all of them in one transaction or none (none
    when one of them was revoked by its author, as far as this node knows)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    with path.open("rb") as handle:
        archive = car.read(handle, MAX_IMPORT)
    cubes = []
    for root in archive.roots:
        manifest_bytes = archive.blocks[root]
        cubes.append(build.verify(manifest_bytes, root, archive.blocks.get))
    for cube in cubes:  # all or none: one withdrawn cube stops the import before anything is stored
        revocations.refuse_revoked(store, cube.cube_id)
    added = store.put_many(cubes, "imported" if pin else None)
    return [(c.cube_id, new) for c, new in zip(cubes, added)]
