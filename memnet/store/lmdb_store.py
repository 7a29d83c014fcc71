"""The cube store.

Databases (all in one LMDB environment):
  manifests  cube CID -> signed manifest bytes
  chunks     chunk CID -> bytes
  refs       chunk CID -> u32 count of stored cubes that list it
  pins       cube CID -> canonical {"reason": str, "at": int}
  index      field tag + value + 0x00 + cube CID -> b"" (kind, author, tag, model, prefix, base)
  names      author(32) + name + 0x00 + version(u64 BE) -> cube CID (kept after GC: the
             highest version seen, so an older one is never accepted again)
  stats      cube CID -> canonical {"added": int, "hits": int, "last": int}
  records    table name + 0x00 + key -> bytes: small records of the layers above (embedding
             vectors, revocations, lifecycle, usage, audit), kept apart from cubes and not
             touched by GC; each layer owns its tables

A cube enters in one write transaction with its chunks, refcounts, indexes and pin, so after a
crash it is there whole or not at all. A fetched cube's chunks are staged first (stage_chunks,
each batch its own transaction; GC spares them for a while), and its own transaction then writes
only the manifest, references, indexes and pin. GC removes unpinned cubes in bounded transactions; a
publish in another process is serialised with it by LMDB's single writer lock.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import lmdb

from memnet.cube import canonical, cid
from memnet.cube import manifest as manifest_mod
from memnet.cube.build import Cube, verify
from memnet.cube.manifest import Manifest
from memnet.errors import NotFoundError, PolicyError, StoreError
from memnet.store.gc import Collector
from memnet.store.index_keys import index_keys

T = TypeVar("T")
_INDEX_TAGS = {"kind": b"k", "author": b"a", "tag": b"t", "model": b"m", "prefix": b"p"}


@dataclass(frozen=True)
class Entry:
    cube_id: bytes
    manifest: Manifest
    pin: dict[str, Any] | None
    stats: dict[str, int]


def _name_key(author: bytes, name: str, version: int) -> bytes:
    return author + name.encode() + b"\x00" + struct.pack(">Q", version)


class Store(Collector):
    """Cubes in LMDB (the schema above). Transactions (memnet/store/transactions.py) and garbage
    collection (memnet/store/gc.py) are its bases; this class is what goes in and comes out."""

    # -- writing -------------------------------------------------------------------------------

    def put(self, cube: Cube, pin_reason: str | None = None) -> bool:
        """Store a cube (whose chunks were hashed by its builder or verifier). True if new."""
        return self.put_many([cube], pin_reason)[0]

    def put_many(self, cubes: list[Cube], pin_reason: str | None = None) -> list[bool]:
        """Store several cubes in one transaction: all of them or none."""
        # a cube read back from the store (a fetched one, its chunks staged) brings no new bytes
        need = sum(len(c.manifest_bytes) + (0 if c.in_store else sum(len(d) for d in c.chunks.values())) for c in cubes)
        now = int(self.clock())
        return self._write(lambda txn: [self._put(txn, c, pin_reason, now) for c in cubes], need)

    def _put(self, txn: lmdb.Transaction, cube: Cube, pin_reason: str | None, now: int) -> bool:
        db = self._db
        cube_id, m = cube.cube_id, cube.manifest
        if pin_reason is not None:
            txn.put(cube_id, canonical.encode({"reason": pin_reason, "at": now}), db=db["pins"])
        if txn.get(cube_id, db=db["manifests"]) is not None:
            return False
        if m.name is not None:
            self._check_version(txn, cube_id, m)
            txn.put(_name_key(m.author, m.name, m.version), cube_id, db=db["names"])
        # a cube read back from this store (a fetch, every chunk staged) has no bytes to write;
        # its chunks are not even looked at (py-lmdb touches every page of a value it finds)
        in_store = cube.in_store
        for chunk_id in set(m.chunks):
            raw = txn.get(chunk_id, db=db["refs"])
            count = struct.unpack(">I", raw)[0] if raw else 0
            if count == 0:  # a staged (or orphaned) copy was verified on its way in: keep it
                if not in_store:
                    txn.put(chunk_id, cube.chunks[chunk_id], db=db["chunks"], overwrite=False)
                txn.delete(chunk_id, db=db["staged"])
            txn.put(chunk_id, struct.pack(">I", count + 1), db=db["refs"])
        txn.put(cube_id, cube.manifest_bytes, db=db["manifests"])
        for key in index_keys(cube_id, m):
            txn.put(key, b"", db=db["index"])
        txn.put(cube_id, canonical.encode({"added": now, "hits": 0, "last": 0}), db=db["stats"])
        return True

    def _check_version(self, txn: lmdb.Transaction, cube_id: bytes, m: Manifest) -> None:
        latest = self._latest(txn, m.author, m.name)
        if latest is None:
            return
        version, other = latest
        if version > m.version:
            raise PolicyError(f"{m.name} version {m.version} is older than the stored version {version}")
        if version == m.version and other != cube_id:
            raise PolicyError(f"{m.name} version {m.version} already names another cube {cid.to_text(other)}")

    def stage_chunks(self, chunks: list[tuple[bytes, bytes]]) -> None:
        """Write verified chunks of a cube still being fetched, so the disk work overlaps the
        transfer and an interrupted fetch resumes. They belong to no cube until put() commits
        one; GC leaves them alone for STAGING_GRACE seconds."""
        need = sum(len(data) for _, data in chunks)
        stamp = struct.pack(">Q", int(self.clock()))

        def fn(txn: lmdb.Transaction) -> None:
            for chunk_id, data in chunks:
                txn.put(chunk_id, data, db=self._db["chunks"], overwrite=False)
                txn.put(chunk_id, stamp, db=self._db["staged"])

        self._write(fn, need)

    def pin(self, cube_id: bytes, reason: str) -> None:
        def fn(txn: lmdb.Transaction) -> None:
            if txn.get(cube_id, db=self._db["manifests"]) is None:
                raise NotFoundError(f"no cube {cid.to_text(cube_id)} in the store")
            txn.put(cube_id, canonical.encode({"reason": reason, "at": int(self.clock())}), db=self._db["pins"])

        self._write(fn)

    def unpin(self, cube_id: bytes) -> bool:
        return self._write(lambda txn: txn.delete(cube_id, db=self._db["pins"]))

    def record_access(self, cube_id: bytes) -> None:
        def fn(txn: lmdb.Transaction) -> None:
            raw = txn.get(cube_id, db=self._db["stats"])
            if raw is None:
                return
            stats = canonical.decode(raw, 1024)
            stats.update(hits=stats["hits"] + 1, last=int(self.clock()))
            txn.put(cube_id, canonical.encode(stats), db=self._db["stats"])

        self._write(fn)

    # -- reading -------------------------------------------------------------------------------

    def has(self, cube_id: bytes) -> bool:
        return self._read(lambda txn: txn.get(cube_id, db=self._db["manifests"]) is not None)

    def manifest_bytes(self, cube_id: bytes) -> bytes:
        raw = self._read(lambda txn: txn.get(cube_id, db=self._db["manifests"]))
        if raw is None:
            raise NotFoundError(f"no cube {cid.to_text(cube_id)} in the store")
        return raw

    def manifest(self, cube_id: bytes) -> Manifest:
        # Stored manifests were authenticated on the way in; decoding them again is cheap.
        return manifest_mod.from_map(canonical.decode(self.manifest_bytes(cube_id), 1 << 30))

    def chunk(self, chunk_id: bytes) -> bytes | None:
        return self._read(lambda txn: txn.get(chunk_id, db=self._db["chunks"]))

    def has_chunks(self, chunk_ids: list[bytes]) -> list[bool]:
        return self._read(lambda txn: [txn.get(c, db=self._db["chunks"]) is not None for c in chunk_ids])

    def read_payload(self, cube_id: bytes) -> bytes:
        # the chunks as views of the map, joined once: the join is the only copy
        return self.with_payload_views(cube_id, b"".join)

    def with_payload_views(self, cube_id: bytes, fn: Callable[[list[memoryview]], T]) -> T:
        """fn(the payload's chunks as views of the map, in order), inside one read transaction:
        nothing is copied or joined (a 46 MB join is page-faulted in afresh every time). The views
        are valid only during fn, which must copy out what it keeps."""
        m = self.manifest(cube_id)

        def run(txn: lmdb.Transaction) -> T:
            views = []
            for chunk_id in m.chunks:
                data = txn.get(chunk_id, db=self._db["chunks"])
                if data is None:
                    raise StoreError(f"store is missing chunk {cid.to_text(chunk_id)}")
                views.append(data)
            if sum(len(v) for v in views) != m.size:
                raise StoreError(f"stored chunks hold the wrong number of bytes, the manifest says {m.size}")
            return fn(views)

        return self._read(run, buffers=True)

    def verify(self, cube_id: bytes) -> Cube:
        """Re-check a stored cube from scratch: hash, signature, every chunk, payload structure."""
        raw = self.manifest_bytes(cube_id)
        return self._read(
            lambda txn: verify(raw, cube_id, lambda c: txn.get(c, db=self._db["chunks"]), check_expiry=False)
        )

    def latest(self, author: bytes, name: str) -> tuple[int, bytes] | None:
        return self._read(lambda txn: self._latest(txn, author, name))

    def _latest(self, txn: lmdb.Transaction, author: bytes, name: str) -> tuple[int, bytes] | None:
        prefix = author + name.encode() + b"\x00"
        cursor = txn.cursor(db=self._db["names"])
        found = None
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                found = (struct.unpack(">Q", key[len(prefix):])[0], value)
        return found

    def _ids_with(self, txn: lmdb.Transaction, tag: bytes, value: bytes) -> Iterator[bytes]:
        prefix = tag + value + b"\x00"
        cursor = txn.cursor(db=self._db["index"])
        if cursor.set_range(prefix):
            for key in cursor.iternext(keys=True, values=False):
                if not key.startswith(prefix):
                    break
                yield key[len(prefix):]

    def find(self, tag: str, value: bytes) -> list[bytes]:
        """Cube ids by index field: kind, author, tag, model (or base model), prefix (key)."""
        return self._read(lambda txn: list(self._ids_with(txn, _INDEX_TAGS[tag], value)))

    def entries(self, **filters: Any) -> list[Entry]:
        """Stored cubes, newest first, filtered by kind, author, tag, model, name, pinned."""
        pinned = filters.pop("pinned", None)
        name = filters.pop("name", None)

        def fn(txn: lmdb.Transaction) -> list[Entry]:
            ids: set[bytes] | None = None
            for field, value in filters.items():
                if value is None:
                    continue
                raw = value.encode() if isinstance(value, str) else value
                found = set(self._ids_with(txn, _INDEX_TAGS[field], raw))
                ids = found if ids is None else ids & found
            if ids is None:
                ids = set(txn.cursor(db=self._db["manifests"]).iternext(keys=True, values=False))
            result = []
            for cube_id in ids:
                entry = self._entry(txn, cube_id)
                if name is not None and entry.manifest.name != name:
                    continue
                if pinned is not None and (entry.pin is not None) != pinned:
                    continue
                result.append(entry)
            result.sort(key=lambda e: (-e.manifest.created, e.cube_id))
            return result

        return self._read(fn)

    def entry(self, cube_id: bytes) -> Entry:
        """One stored cube with its pin and access statistics."""
        def fn(txn: lmdb.Transaction) -> Entry:
            if txn.get(cube_id, db=self._db["manifests"]) is None:
                raise NotFoundError(f"no cube {cid.to_text(cube_id)} in the store")
            return self._entry(txn, cube_id)

        return self._read(fn)

    def _entry(self, txn: lmdb.Transaction, cube_id: bytes) -> Entry:
        m = manifest_mod.from_map(canonical.decode(txn.get(cube_id, db=self._db["manifests"]), 1 << 30))
        pin_raw = txn.get(cube_id, db=self._db["pins"])
        stats_raw = txn.get(cube_id, db=self._db["stats"])
        return Entry(cube_id, m, canonical.decode(pin_raw, 4096) if pin_raw else None,
                     canonical.decode(stats_raw, 1024) if stats_raw else {})

    def usage(self) -> dict[str, int]:
        def fn(txn: lmdb.Transaction) -> dict[str, int]:
            return {
                "cubes": txn.stat(self._db["manifests"])["entries"],
                "chunks": txn.stat(self._db["chunks"])["entries"],
                "pins": txn.stat(self._db["pins"])["entries"],
            }

        result = self._read(fn)
        info, page = self.env.info(), self.env.stat()["psize"]
        result["used_bytes"] = (info["last_pgno"] + 1) * page
        return result

    # -- records of the layers above ----------------------------------------------------------

    @staticmethod
    def _record_key(table: str, key: bytes) -> bytes:
        if not table or "\x00" in table:
            raise StoreError(f"bad record table name {table!r}")
        return table.encode() + b"\x00" + key

    def put_records(self, table: str, items: list[tuple[bytes, bytes]]) -> None:
        """Write (key, value) records of one table in one transaction."""
        pairs = [(self._record_key(table, k), v) for k, v in items]

        def fn(txn: lmdb.Transaction) -> None:
            for k, v in pairs:
                txn.put(k, v, db=self._db["records"])

        self._write(fn, sum(len(k) + len(v) for k, v in pairs))

    def get_record(self, table: str, key: bytes) -> bytes | None:
        full = self._record_key(table, key)
        return self._read(lambda txn: txn.get(full, db=self._db["records"]))

    def delete_records(self, table: str, keys: list[bytes]) -> int:
        full = [self._record_key(table, k) for k in keys]
        return self._write(lambda txn: sum(txn.delete(k, db=self._db["records"]) for k in full))

    def records(self, table: str, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """(key, value) of a table's records whose key starts with prefix, in key order."""
        start = self._record_key(table, prefix)
        skip = len(table) + 1

        def fn(txn: lmdb.Transaction) -> list[tuple[bytes, bytes]]:
            out = []
            cursor = txn.cursor(db=self._db["records"])
            if cursor.set_range(start):
                for k, v in cursor:
                    if not k.startswith(start):
                        break
                    out.append((k[skip:], v))
            return out

        return self._read(fn)
