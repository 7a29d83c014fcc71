"""Plaintext memory: remember texts and notes files as cubes, and recall items by meaning.

The recall index lives in the store's records table "vectors":
    cube id (36 bytes)                   -> canonical {"embedding": fingerprint, "items": n}
    cube id + item index (u32 BE)        -> the item's embedding, float16 little-endian
    CHANGE_KEY                           -> 16 random bytes, rewritten on every change
A cube is indexed when its marker names our embedder's fingerprint. Every recall first
reconciles the index with the store: plaintext cubes not indexed yet (fetched from a peer,
published with `memnet publish`, or indexed under another embedder) are indexed then, from their
own vectors when they carry our fingerprint, else by embedding their texts; records of cubes no
longer stored are deleted. Each process keeps the index as one float32 matrix and reloads it
when the change token differs from the one it loaded (another process wrote).
"""

from __future__ import annotations

import os
import random
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memnet.cube import canonical, cid, payloads
from memnet.cube.build import Cube
from memnet.cube.manifest import Manifest
from memnet.errors import FormatError, MemnetError, NotFoundError, UsageError
from memnet.local import Publisher
from memnet.store import Store
from memnet.memory import notes
from memnet.memory.embedder import Embedder, load_embedder

TABLE = "vectors"
CHANGE_KEY = b"\x00change"  # no cube id starts with 0x00 (CIDv1 starts with 0x01)
SPOT_CHECKS = 4             # items of a peer's cube re-embedded to check its shipped vectors
SPOT_MIN_COSINE = 0.95      # float16 rounding and BLAS differences stay above 0.999
ITEMS_CACHE = 32            # decoded cubes kept per process for hit texts

Accept = Callable[[bytes, Manifest], bool]


@dataclass(frozen=True)
class Hit:
    cube_id: bytes
    item: int
    text: str
    meta: dict[str, str]
    score: float  # cosine similarity to the query, -1 … 1
    author: bytes
    created: int


@dataclass
class SyncReport:
    indexed: int = 0   # cubes added to the index
    reused: int = 0    # items whose shipped vectors were used
    embedded: int = 0  # items embedded here
    pruned: int = 0    # cubes whose records were removed (no longer stored)


@dataclass
class _Matrix:
    """One process's copy of a store's index for one embedder."""

    token: bytes | None = None
    cubes: dict[bytes, int] = field(default_factory=dict)  # indexed cube -> item count
    others: set[bytes] = field(default_factory=set)        # indexed under another embedder
    order: list[bytes] = field(default_factory=list)       # cube of each row block
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    row_cube: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    row_item: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


_lock = threading.RLock()
_matrices: dict[tuple[str, bytes], _Matrix] = {}
_items: OrderedDict[tuple[str, bytes], list[dict[str, Any]]] = OrderedDict()


# -- writing memory ------------------------------------------------------------------------------

def remember(publisher: Publisher, text: str, *, tags: Sequence[str] = (), meta: dict[str, str] | None = None,
             name: str | None = None, **publish_options: Any) -> Cube:
    """Publish one text as a plaintext cube with its embedding (a text longer than the embedder
    reads becomes several items, cut at sentences). publish_options go to Publisher.publish."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("nothing to remember: the text is empty")
    if meta is not None and (not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        raise UsageError("meta must map names to strings")
    items = [{"text": piece, "meta": dict(meta)} if meta else {"text": piece}
             for piece in notes.split_text(text.strip())]
    return publish_items(publisher, items, tags=tags, name=name, **publish_options)


def import_notes(publisher: Publisher, path: Path, *, tags: Sequence[str] = (), name: str | None = None,
                 **publish_options: Any) -> Cube:
    """Publish a notes file (Markdown, text or JSON lines) as one plaintext cube with embeddings."""
    items = notes.items_from_path(Path(path))
    publish_options.setdefault("description", f"notes from {Path(path).name}"[:256])
    return publish_items(publisher, items, tags=tags, name=name, **publish_options)


def publish_items(publisher: Publisher, items: list[dict[str, Any]], *, tags: Sequence[str] = (),
                  name: str | None = None, **publish_options: Any) -> Cube:
    """Embed items, publish them as a plaintext cube carrying the vectors and the embedder's
    fingerprint, and index it."""
    embedder = load_embedder()
    vectors = to_float16(embedder.encode([item["text"] for item in items]))
    with_vec = [{**item, "vec": vectors[i].tobytes()} for i, item in enumerate(items)]
    try:
        payload = payloads.encode_items(with_vec, embedded=True)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    meta = {"items": len(items), "embedding": embedder.fingerprint}
    cube = publisher.publish("plaintext", payload, meta, name=name, tags=tuple(sorted(set(tags))),
                             **publish_options)
    _write(publisher.store, embedder, {cube.cube_id: vectors}, [])
    return cube


def to_float16(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype="<f2")


# -- the index -----------------------------------------------------------------------------------

def _marker(embedder: Embedder, n: int) -> bytes:
    return canonical.encode({"embedding": embedder.fingerprint, "items": n})


def _item_key(cube_id: bytes, index: int) -> bytes:
    return cube_id + struct.pack(">I", index)


def _load(store: Store, embedder: Embedder) -> _Matrix:
    """Read the whole table into a fresh matrix."""
    matrix = _Matrix()
    blocks: list[np.ndarray] = []
    current: tuple[bytes, int, list[bytes]] | None = None
    width = 2 * embedder.dim

    def close() -> None:
        if current is None:
            return
        cube_id, n, vecs = current
        if len(vecs) != n or any(len(v) != width for v in vecs):
            matrix.others.add(cube_id)  # incomplete: indexed again, or pruned
            return
        matrix.cubes[cube_id] = n
        if n:
            matrix.order.append(cube_id)
            blocks.append(np.frombuffer(b"".join(vecs), dtype="<f2").reshape(n, embedder.dim))

    for key, value in store.records(TABLE):
        if key == CHANGE_KEY:
            matrix.token = value
        elif len(key) == cid.CID_LEN:
            close()
            current = None
            try:
                mark = canonical.decode(value, 256)
                ours = mark["embedding"] == embedder.fingerprint and isinstance(mark["items"], int)
            except (MemnetError, KeyError, TypeError):
                ours = False
            if ours:
                current = (key, mark["items"], [])
            else:
                matrix.others.add(key)
        elif current is not None and key[:cid.CID_LEN] == current[0]:
            current[2].append(value)
    close()
    _set_rows(matrix, blocks, embedder.dim)
    return matrix


def _unit_rows(block: np.ndarray) -> np.ndarray:
    rows = np.asarray(block, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)  # undo float16 rounding; a zero vector scores 0


def _set_rows(matrix: _Matrix, blocks: list[np.ndarray], dim: int) -> None:
    sizes = [len(b) for b in blocks]
    matrix.rows = _unit_rows(np.concatenate(blocks)) if blocks else np.zeros((0, dim), np.float32)
    matrix.row_cube = np.repeat(np.arange(len(blocks)), sizes)
    matrix.row_item = np.concatenate([np.arange(s) for s in sizes]) if sizes else np.zeros(0, np.int64)


def _update(matrix: _Matrix, added: dict[bytes, np.ndarray], removed: list[bytes]) -> None:
    """Drop the rows of removed (and re-indexed) cubes, append the added ones."""
    gone = set(removed) | set(added)
    keep = np.array([c not in gone for c in matrix.order], dtype=bool)
    remap = np.cumsum(keep) - 1
    mask = keep[matrix.row_cube] if len(matrix.order) else np.zeros(0, dtype=bool)
    rows, row_cube, row_item = [matrix.rows[mask]], [remap[matrix.row_cube[mask]]], [matrix.row_item[mask]]
    order = [c for c in matrix.order if c not in gone]
    for cube_id, vectors in added.items():
        if len(vectors):
            rows.append(_unit_rows(vectors))
            row_cube.append(np.full(len(vectors), len(order)))
            row_item.append(np.arange(len(vectors)))
            order.append(cube_id)
    for cube_id in gone:
        matrix.cubes.pop(cube_id, None)
        matrix.others.discard(cube_id)
    matrix.cubes.update({c: len(v) for c, v in added.items()})
    matrix.order = order
    matrix.rows = np.concatenate(rows)
    matrix.row_cube = np.concatenate(row_cube).astype(np.int64)
    matrix.row_item = np.concatenate(row_item).astype(np.int64)


def _current(store: Store, embedder: Embedder) -> _Matrix:
    key = (store.path, embedder.fingerprint)
    cached = _matrices.get(key)
    token = store.get_record(TABLE, CHANGE_KEY)
    if cached is None or cached.token is None or cached.token != token:
        cached = _matrices[key] = _load(store, embedder)
    return cached


def _write(store: Store, embedder: Embedder, added: dict[bytes, np.ndarray], removed: list[bytes]) -> None:
    """Store the vectors of newly indexed cubes and drop removed cubes' records, with a new
    change token; keep this process's matrix in step without reloading it."""
    with _lock:
        before = store.get_record(TABLE, CHANGE_KEY)
        token = os.urandom(16)
        if removed:
            store.delete_records(TABLE, [k for c in removed for k, _ in store.records(TABLE, prefix=c)])
        records = [(CHANGE_KEY, token)]
        for cube_id, vectors in added.items():
            records.append((cube_id, _marker(embedder, len(vectors))))
            records += [(_item_key(cube_id, i), vectors[i].tobytes()) for i in range(len(vectors))]
        store.put_records(TABLE, records)
        matrix = _matrices.get((store.path, embedder.fingerprint))
        if matrix is None or matrix.token is None or matrix.token != before:
            if matrix is not None:
                matrix.token = None  # another process changed the table too: reload on next use
            return
        _update(matrix, added, removed)
        matrix.token = token


def _read_items(publisher: Publisher, cube_id: bytes) -> list[dict[str, Any]]:
    """A stored plaintext cube's items (a sealed one opened with this node's key)."""
    manifest = publisher.store.manifest(cube_id)
    payload = publisher.read_payload(cube_id)
    return payloads.decode_items(payload, manifest.meta["items"], embedded="embedding" in manifest.meta)


def _hit_items(publisher: Publisher, cube_id: bytes) -> list[dict[str, Any]]:
    """_read_items without the vectors, cached: cubes are immutable, and hits cluster."""
    cache_key = (publisher.store.path, cube_id)
    with _lock:
        if cache_key in _items:
            _items.move_to_end(cache_key)
            return _items[cache_key]
    items = [{k: v for k, v in item.items() if k != "vec"} for item in _read_items(publisher, cube_id)]
    with _lock:
        _items[cache_key] = items
        while len(_items) > ITEMS_CACHE:
            _items.popitem(last=False)
    return items


def item_text(publisher: Publisher, cube_id: bytes, item: int) -> str:
    """One stored item's text (NotFoundError when the cube or the item is not here)."""
    items = _hit_items(publisher, cube_id)
    if not 0 <= item < len(items):
        raise NotFoundError(f"cube {cid.to_text(cube_id)} has no item {item}")
    return items[item]["text"]


def _vectors_of(publisher: Publisher, embedder: Embedder, cube_id: bytes, report: SyncReport) -> np.ndarray:
    """float16 (items, dim) vectors for a stored cube: its own if they carry our fingerprint and
    pass a spot check, else embedded here. An unreadable cube (sealed to others) has none."""
    try:
        manifest = publisher.store.manifest(cube_id)
        items = _read_items(publisher, cube_id)
    except MemnetError:
        return np.zeros((0, embedder.dim), dtype="<f2")
    texts = [item["text"] for item in items]
    if items and manifest.meta.get("embedding") == embedder.fingerprint \
            and len(items[0]["vec"]) == 2 * embedder.dim:
        shipped = np.frombuffer(b"".join(item["vec"] for item in items), dtype="<f2").reshape(len(items), -1)
        if manifest.author == publisher.author or _spot_check(embedder, texts, shipped, report):
            report.reused += len(items)
            return shipped
    report.embedded += len(items)
    return to_float16(embedder.encode(texts))


def _spot_check(embedder: Embedder, texts: list[str], shipped: np.ndarray, report: SyncReport) -> bool:
    """Re-embed a few randomly chosen items: a peer's vectors decide what its cube is recalled
    for, so vectors that do not match their texts (forged to surface the cube for unrelated
    queries) make us embed the whole cube ourselves."""
    picks = random.SystemRandom().sample(range(len(texts)), min(SPOT_CHECKS, len(texts)))
    ours = embedder.encode([texts[i] for i in picks])
    theirs = shipped[picks].astype(np.float32)
    theirs /= np.maximum(np.linalg.norm(theirs, axis=1, keepdims=True), 1e-12)
    report.embedded += len(picks)
    return bool(np.all(np.sum(ours * theirs, axis=1) >= SPOT_MIN_COSINE))


def sync(publisher: Publisher, embedder: Embedder | None = None) -> SyncReport:
    """Bring the index in line with the store: index plaintext cubes that are not, drop records
    of cubes no longer stored. recall does this itself; a daemon may call it after fetches/GC."""
    embedder = embedder or load_embedder()
    report = SyncReport()
    store = publisher.store
    with _lock:
        matrix = _current(store, embedder)
        stored = set(store.find("kind", b"plaintext"))
        stale = [c for c in (set(matrix.cubes) | matrix.others) if c not in stored]
        missing = sorted(c for c in stored if c not in matrix.cubes)
    if stale:
        _write(store, embedder, {}, stale)
        report.pruned = len(stale)
    for cube_id in missing:  # one transaction per cube: a long first indexing keeps what it did
        _write(store, embedder, {cube_id: _vectors_of(publisher, embedder, cube_id, report)}, [])
        report.indexed += 1
    return report


def recall(publisher: Publisher, query: str, k: int = 5, *, accept: Accept | None = None) -> list[Hit]:
    """The k stored items closest in meaning to the query, best first (publisher: this node's
    store and key, which opens sealed cubes). Expired cubes and cubes accept(cube_id, manifest)
    refuses are skipped."""
    if not isinstance(query, str) or not query.strip():
        raise UsageError("the query is empty")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"k must be a whole number of at least 1, not {k!r}")
    embedder = load_embedder()
    sync(publisher, embedder)
    with _lock:
        matrix = _current(publisher.store, embedder)
        rows, row_cube, row_item, order = matrix.rows, matrix.row_cube, matrix.row_item, matrix.order
    if not len(rows):
        return []
    scores = rows @ embedder.encode([query.strip()])[0]
    verdicts: dict[bytes, Manifest | None] = {}
    hits: list[Hit] = []
    now = int(time.time())
    for row in _best_first(scores):
        cube_id = order[row_cube[row]]
        if cube_id not in verdicts:
            verdicts[cube_id] = _usable(publisher.store, cube_id, accept, now)
        manifest = verdicts[cube_id]
        if manifest is None:
            continue
        try:
            item = _hit_items(publisher, cube_id)[row_item[row]]
        except (MemnetError, IndexError):
            verdicts[cube_id] = None
            continue
        hits.append(Hit(cube_id, int(row_item[row]), item["text"], dict(item.get("meta", {})),
                        float(scores[row]), manifest.author, manifest.created))
        if len(hits) == k:
            break
    return hits


def _best_first(scores: np.ndarray, first: int = 64) -> Iterable[int]:
    """Row indices by descending score: a partial sort of the top rows, the rest only if the
    callers' filters reject that many."""
    if len(scores) > first:
        top = np.argpartition(-scores, first)[:first]
        yield from top[np.argsort(-scores[top], kind="stable")]
        rest = np.setdiff1d(np.arange(len(scores)), top)
        yield from rest[np.argsort(-scores[rest], kind="stable")]
    else:
        yield from np.argsort(-scores, kind="stable")


def _usable(store: Store, cube_id: bytes, accept: Accept | None, now: int) -> Manifest | None:
    try:
        manifest = store.manifest(cube_id)
    except NotFoundError:  # removed since the last sync
        return None
    if manifest.expires is not None and manifest.expires <= now:
        return None
    if accept is not None and not accept(cube_id, manifest):
        return None
    return manifest
