"""Revocations in the local store: the records table "revoked", key = cube id, value = the
verified record bytes. A cube with a record here is never served, injected, fetched or pinned.

Every record is decoded and checked against the revoked cube's author before it is stored, from
wherever it came (the DHT, a peer, this node's own CLI).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from memnet.cube import cid, revocation
from memnet.cube.revocation import Revocation
from memnet.errors import FormatError, NotFoundError, PolicyError, UsageError
from memnet.store.lmdb_store import Store

if TYPE_CHECKING:
    from memnet.local import Publisher

TABLE = "revoked"


def stored(store: Store, cube_id: bytes) -> Revocation | None:
    data = store.get_record(TABLE, cube_id)
    return revocation.decode(data) if data is not None else None


def is_revoked(store: Store, cube_id: bytes) -> bool:
    return store.get_record(TABLE, cube_id) is not None


def all_records(store: Store) -> list[bytes]:
    return [value for _, value in store.records(TABLE)]


def refuse_revoked(store: Store, cube_id: bytes) -> None:
    """PolicyError naming the cube if its author has withdrawn it."""
    record = stored(store, cube_id)
    if record is not None:
        why = f" ({record.reason})" if record.reason else ""
        raise PolicyError(f"cube {cid.to_text(cube_id)} was revoked by its author{why}")


def verify(data: bytes, cube_id: bytes, cube_author: bytes) -> Revocation:
    """The revocation in data if it is signed and by cube_id's author; FormatError/PolicyError."""
    record = revocation.decode(data)
    revocation.check_author(record, cube_id, cube_author)
    return record


def accept(store: Store, data: bytes, cube_id: bytes, cube_author: bytes) -> Revocation:
    """Verify a revocation of cube_id (signature, then that it is the cube's author's), store
    it, and drop the cube from the store (its chunks that another stored cube lists stay).
    Returns the record; FormatError/PolicyError if it does not hold."""
    record = verify(data, cube_id, cube_author)
    if not is_revoked(store, cube_id):
        store.put_records(TABLE, [(cube_id, record.encode())])
    store.unpin(cube_id)
    try:
        store.delete(cube_id)  # the record stays: the cube is refused wherever it comes from
    except NotFoundError:
        pass
    return record


def revoke(publisher: Publisher, cube_id: bytes, reason: str | None = None) -> tuple[bytes, bool]:
    """Withdraw one of this node's own cubes: sign a revocation, store it, drop the cube.
    Returns (record bytes, whether it is new); revoking again returns the stored record."""
    store = publisher.store
    existing = store.get_record(TABLE, cube_id)
    if existing is not None and revocation.decode(existing).author == publisher.author:
        return existing, False  # revoked before (and dropped then): the same record
    manifest = store.manifest(cube_id)  # NotFoundError: we cannot tell whose it is
    if manifest.author != publisher.author:
        raise UsageError(f"cube {cid.to_text(cube_id)} is not this node's: only its author can revoke it")
    if reason is not None:
        reason = reason.strip() or None
    try:
        data = revocation.sign(publisher.key, cube_id, int(time.time()), reason)
    except FormatError as exc:  # the reason the user typed: too long
        raise UsageError(f"--reason: {exc}") from None
    accept(store, data, cube_id, manifest.author)
    return data, True
