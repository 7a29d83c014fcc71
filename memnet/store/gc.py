"""Garbage collection of the store: unpinned cubes and the chunks no stored cube lists, in
bounded transactions so a daemon keeps serving between them; staged chunks of unfinished fetches
are spared for STAGING_GRACE."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import lmdb

from memnet.cube import canonical, cid
from memnet.cube import manifest as manifest_mod
from memnet.errors import NotFoundError, PolicyError
from memnet.store.index_keys import index_keys
from memnet.store.transactions import Transactions

STAGING_GRACE = 3600  # seconds a staged chunk of an unfinished fetch is safe from GC


@dataclass
class GCReport:
    cubes: int = 0
    chunks: int = 0
    bytes: int = 0


def _reset(report: GCReport) -> GCReport:
    report.cubes = report.chunks = report.bytes = 0
    return report


def _add(total: GCReport, step: GCReport) -> None:
    total.cubes += step.cubes
    total.chunks += step.chunks
    total.bytes += step.bytes


class Collector(Transactions):
    def gc(self, batch: int = 64) -> GCReport:
        """Remove every unpinned cube and every chunk no stored cube lists, a batch of cubes per
        transaction so a daemon can keep serving between them."""
        report = GCReport()
        resume = b""
        while True:
            # A transaction retried after the map grew must not count its deletions twice, so
            # each one counts into a fresh report, added to the total once it has committed.
            step = GCReport()
            resume, done = self._write(lambda txn: self._gc_batch(txn, resume, batch, _reset(step)))
            _add(report, step)
            if done:
                break
        step = GCReport()
        freed = report.cubes > 0
        self._write(lambda txn: self._sweep_orphans(txn, _reset(step), commit=freed))
        _add(report, step)
        return report

    def delete(self, cube_id: bytes) -> GCReport:
        """Remove one unpinned cube now (eviction), with the chunks no other stored cube lists.
        PolicyError if it is pinned (checked inside the deleting transaction, so a pin from
        another process in between wins), NotFoundError if it is not stored."""
        report = GCReport()

        def fn(txn: lmdb.Transaction) -> None:
            if txn.get(cube_id, db=self._db["manifests"]) is None:
                raise NotFoundError(f"no cube {cid.to_text(cube_id)} in the store")
            if txn.get(cube_id, db=self._db["pins"]) is not None:
                raise PolicyError(f"cube {cid.to_text(cube_id)} is pinned; unpin it first")
            self._delete_cube(txn, cube_id, _reset(report))

        self._write(fn)
        return report

    def _gc_batch(self, txn: lmdb.Transaction, resume: bytes, batch: int, report: GCReport) -> tuple[bytes, bool]:
        """Delete up to batch unpinned cubes after key resume; return (new resume, finished)."""
        cursor = txn.cursor(db=self._db["manifests"])
        victims, finished = [], True
        if cursor.set_range(resume):
            for cube_id in cursor.iternext(keys=True, values=False):
                if cube_id <= resume:
                    continue
                resume = cube_id
                if txn.get(cube_id, db=self._db["pins"]) is None:
                    victims.append(cube_id)
                    if len(victims) >= batch:
                        finished = False
                        break
        for cube_id in victims:
            self._delete_cube(txn, cube_id, report)
        return resume, finished

    def _delete_cube(self, txn: lmdb.Transaction, cube_id: bytes, report: GCReport) -> None:
        db = self._db
        m = manifest_mod.from_map(canonical.decode(txn.get(cube_id, db=db["manifests"]), 1 << 30))
        # chunk lengths from the manifest (checked against the data when the cube came in):
        # reading a chunk only to count its bytes copied it, and from disk when not cached
        lengths = {chunk_id: m.chunk_length(i) for i, chunk_id in enumerate(m.chunks)}
        for chunk_id, length in lengths.items():
            raw = txn.get(chunk_id, db=db["refs"])
            count = struct.unpack(">I", raw)[0] if raw else 0
            if count <= 1:
                if txn.delete(chunk_id, db=db["chunks"]):
                    report.bytes += length
                    report.chunks += 1
                txn.delete(chunk_id, db=db["refs"])
            else:
                txn.put(chunk_id, struct.pack(">I", count - 1), db=db["refs"])
        for key in index_keys(cube_id, m):
            txn.delete(key, db=db["index"])
        # names entries stay: they are the high-water mark that refuses older versions later
        txn.delete(cube_id, db=db["stats"])
        txn.delete(cube_id, db=db["manifests"])
        report.bytes += len(m.encode())
        report.cubes += 1

    def _sweep_orphans(self, txn: lmdb.Transaction, report: GCReport, commit: bool = False) -> None:
        if commit:
            # A write transaction reuses only pages freed by transactions older than the last
            # committed one (mdb_find_oldest: txnid - 1). A sweep that changes nothing commits
            # nothing, so without this write the next publish could not reuse what the last GC
            # batch freed, and data.mdb settles at twice the largest collection.
            txn.put(b"\x00gc", b"", db=self._db["stats"])
            txn.delete(b"\x00gc", db=self._db["stats"])
        cursor = txn.cursor(db=self._db["chunks"])
        fresh = int(self.clock()) - STAGING_GRACE
        staged = {key: struct.unpack(">Q", value)[0]
                  for key, value in txn.cursor(db=self._db["staged"]).iternext()}
        # keys only: reading every value would copy the whole store into memory on each GC
        orphans = [
            key for key in cursor.iternext(keys=True, values=False)
            if txn.get(key, db=self._db["refs"]) is None and staged.get(key, 0) < fresh
        ]
        for key, at in staged.items():
            if at < fresh:
                txn.delete(key, db=self._db["staged"])
        for key in orphans:
            report.bytes += len(txn.get(key, db=self._db["chunks"]))
            txn.delete(key, db=self._db["chunks"])
            report.chunks += 1
