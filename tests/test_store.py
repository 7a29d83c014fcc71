"""The LMDB cube store, on a real LMDB in tmp_path, with real subprocesses where processes matter."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memnet.cube import build, payloads
from memnet.errors import NotFoundError, PolicyError, StoreError
from memnet.store import GCReport, Store, environment
from tests import factories

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


# -- helpers ------------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    yield s
    s.close()


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (python -c) with memnet importable; killed by pid on timeout."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_child(pid: int, timeout: float) -> int:
    """Exit code of a forked child, which is killed if it has not ended within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child {pid} did not finish within {timeout} s")


def text_cube(texts, *, seed: str = "alice", chunk_size: int = 1024, created: int = factories.FIXED_CREATED,
              **optional) -> build.Cube:
    items = [{"text": t} for t in texts]
    return build.build(factories.key(seed), "plaintext", payloads.encode_items(items), {"items": len(items)},
                       chunk_size=chunk_size, created=created, **optional)


def big_text_cube(n_bytes: int, seed: int, **optional) -> build.Cube:
    """A plaintext cube of about n_bytes of random hex text in 1 MB items (the item limit is 1 MiB)."""
    rnd = random.Random(seed)
    items, left = [], n_bytes
    while left > 0:
        n = min(left, 1_000_000)
        items.append(rnd.randbytes(n // 2 + 1).hex()[:n])
        left -= n
    return text_cube(items, chunk_size=256 * 1024, created=factories.FIXED_CREATED + seed, **optional)


def ids(entries) -> set[bytes]:
    return {e.cube_id for e in entries}


def stored_chunks_are_exactly(store: Store, cubes) -> None:
    """The store holds exactly the chunks its cubes list: nothing leaked, nothing missing."""
    wanted = set().union(*(set(c.manifest.chunks) for c in cubes)) if cubes else set()
    assert store.usage()["chunks"] == len(wanted)
    assert all(store.has_chunks(sorted(wanted)))


KINDS = {
    "plaintext": lambda: factories.plaintext_cube(),
    "parameter": lambda: factories.parameter_cube(),
    "activation": lambda: factories.activation_cube(),
}


# -- (a) round trip, indexes, idempotence --------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip_per_kind(store, kind):
    cube = KINDS[kind]()
    assert not store.has(cube.cube_id)
    assert store.put(cube) is True
    assert store.has(cube.cube_id)
    assert store.manifest_bytes(cube.cube_id) == cube.manifest_bytes
    manifest = store.manifest(cube.cube_id)
    assert manifest == cube.manifest and manifest.sig == cube.manifest.sig
    assert manifest.kind == kind
    assert store.read_payload(cube.cube_id) == cube.payload()
    verified = store.verify(cube.cube_id)
    assert verified.cube_id == cube.cube_id and verified.payload() == cube.payload()
    for chunk_id in cube.manifest.chunks:
        assert store.chunk(chunk_id) == bytes(cube.chunks[chunk_id])
    assert store.has_chunks(list(cube.manifest.chunks)) == [True] * len(cube.manifest.chunks)
    usage = store.usage()
    assert (usage["cubes"], usage["chunks"], usage["pins"]) == (1, len(set(cube.manifest.chunks)), 0)
    [entry] = store.entries()
    assert entry.cube_id == cube.cube_id and entry.pin is None and entry.stats["hits"] == 0


def test_missing_cube_is_not_found(store):
    absent = factories.plaintext_cube().cube_id
    assert not store.has(absent)
    for read in (store.manifest_bytes, store.manifest, store.read_payload, store.verify):
        with pytest.raises(NotFoundError):
            read(absent)
    assert store.chunk(factories.plaintext_cube().manifest.chunks[0]) is None


def test_entries_filters(store):
    alice, bob = factories.key("alice"), factories.key("bob")
    notes = factories.plaintext_cube(alice, texts=("alice's notes",), name="notes", version=1, tags=("news",))
    misc = factories.plaintext_cube(bob, texts=("bob's misc",), tags=("misc", "news"))
    lora = factories.parameter_cube(bob, base=factories.fingerprint("other-base"), tags=("lora",))
    kv = factories.activation_cube(alice)
    newest = text_cube(["written later"], seed="carol", created=factories.FIXED_CREATED + 100)
    for cube in (notes, misc, lora, kv, newest):
        assert store.put(cube)
    store.pin(notes.cube_id, "mine")
    store.pin(lora.cube_id, "adapter in use")

    everything = store.entries()
    assert len(everything) == 5
    assert everything[0].cube_id == newest.cube_id  # newest first
    assert ids(store.entries(kind="plaintext")) == {notes.cube_id, misc.cube_id, newest.cube_id}
    assert ids(store.entries(kind="parameter")) == {lora.cube_id}
    assert ids(store.entries(kind="activation")) == {kv.cube_id}
    assert ids(store.entries(author=alice.public_key().public_bytes_raw())) == {notes.cube_id, kv.cube_id}
    assert ids(store.entries(author=notes.manifest.author, kind="plaintext")) == {notes.cube_id}
    assert ids(store.entries(tag="news")) == {notes.cube_id, misc.cube_id}
    assert ids(store.entries(tag="news", author=misc.manifest.author)) == {misc.cube_id}
    assert ids(store.entries(tag="nonexistent")) == set()
    assert ids(store.entries(model=factories.fingerprint("model"))) == {kv.cube_id}
    assert ids(store.entries(model=factories.fingerprint("other-base"))) == {lora.cube_id}
    assert ids(store.entries(name="notes")) == {notes.cube_id}
    assert ids(store.entries(name="absent")) == set()
    assert ids(store.entries(pinned=True)) == {notes.cube_id, lora.cube_id}
    assert ids(store.entries(pinned=False)) == {misc.cube_id, kv.cube_id, newest.cube_id}
    assert ids(store.entries(pinned=True, kind="plaintext")) == {notes.cube_id}
    assert set(store.find("kind", b"activation")) == {kv.cube_id}
    assert set(store.find("author", bob.public_key().public_bytes_raw())) == {misc.cube_id, lora.cube_id}


def test_find_by_prefix_keys(store):
    shared = list(range(1000, 1008))  # two blocks of 4 tokens in common
    a = factories.activation_cube(token_ids=shared + [1, 2], n_tokens=10)
    b = factories.activation_cube(token_ids=shared + [3, 4, 5, 6], n_tokens=12, seed=1)
    assert store.put(a) and store.put(b)
    keys_a, keys_b = a.manifest.meta["prefix_keys"], b.manifest.meta["prefix_keys"]
    assert len(keys_a) == 3 and len(keys_b) == 3
    assert keys_a[:2] == keys_b[:2] and keys_a[2] != keys_b[2]
    for key in keys_a[:2]:
        assert set(store.find("prefix", key)) == {a.cube_id, b.cube_id}
    assert store.find("prefix", keys_a[2]) == [a.cube_id]
    assert store.find("prefix", keys_b[2]) == [b.cube_id]
    assert store.find("prefix", bytes(32)) == []
    # gc drops the index entries of what it removes
    store.pin(b.cube_id, "keep")
    store.gc()
    for key in keys_b:
        assert store.find("prefix", key) == [b.cube_id]
    assert store.find("prefix", keys_a[2]) == []


def test_put_twice_is_idempotent(store):
    cube = text_cube(["one " * 600, "two " * 600])
    assert store.put(cube) is True
    before = store.usage()
    assert store.put(cube) is False
    assert store.put_many([cube, cube]) == [False, False]
    assert store.usage() == before
    # a repeated put may still pin
    assert store.put(cube, pin_reason="later pin") is False
    assert store.entries()[0].pin["reason"] == "later pin"
    # refcounts were not raised by the repeats: one unpin + one gc frees every chunk
    store.unpin(cube.cube_id)
    report = store.gc()
    assert report.cubes == 1 and report.chunks == len(set(cube.manifest.chunks))
    usage = store.usage()
    assert (usage["cubes"], usage["chunks"], usage["pins"]) == (0, 0, 0)


def test_put_many_with_a_repeat_counts_it_once(store):
    cube = text_cube(["repeated " * 300])
    assert store.put_many([cube, cube]) == [True, False]
    store.gc()
    assert store.usage()["chunks"] == 0


# -- (b) pins -------------------------------------------------------------------------------------

def test_pin_unpin(store):
    cube = factories.plaintext_cube()
    store.put(cube)
    assert store.entries()[0].pin is None
    before = int(time.time())
    store.pin(cube.cube_id, "needed by the demo")
    [entry] = store.entries(pinned=True)
    assert entry.pin["reason"] == "needed by the demo"
    assert before <= entry.pin["at"] <= int(time.time())
    store.pin(cube.cube_id, "new reason")
    assert store.entries()[0].pin["reason"] == "new reason"
    assert store.unpin(cube.cube_id) is True
    assert store.entries()[0].pin is None and store.entries(pinned=True) == []
    assert store.unpin(cube.cube_id) is False


def test_pin_at_put_time(store):
    cube = factories.activation_cube()
    store.put(cube, pin_reason="prefix cache")
    assert store.entries()[0].pin["reason"] == "prefix cache"
    assert store.gc() == GCReport()
    assert store.has(cube.cube_id)


def test_pin_unknown_cube(store):
    with pytest.raises(NotFoundError):
        store.pin(factories.plaintext_cube().cube_id, "nope")
    assert store.usage()["pins"] == 0


# -- (c) garbage collection -------------------------------------------------------------------------

def sharing_pair():
    common = "shared prefix " * 400  # 5,600 bytes: the first 5 chunks of 1 KiB are the same
    a = text_cube([common, "the pinned one " * 100])
    b = text_cube([common, "the unpinned one " * 100])
    return a, b


def test_gc_keeps_shared_chunks(store):
    a, b = sharing_pair()
    shared = set(a.manifest.chunks) & set(b.manifest.chunks)
    only_b = set(b.manifest.chunks) - shared
    assert len(shared) >= 4 and only_b
    store.put(a, pin_reason="keep")
    store.put(b)
    report = store.gc()
    assert report.cubes == 1
    assert report.chunks == len(only_b)
    assert report.bytes == sum(len(b.chunks[c]) for c in only_b) + len(b.manifest_bytes)
    assert store.has(a.cube_id) and not store.has(b.cube_id)
    assert all(store.has_chunks(sorted(shared)))
    assert not any(store.has_chunks(sorted(only_b)))
    assert store.verify(a.cube_id).payload() == a.payload()
    stored_chunks_are_exactly(store, [a])
    # unpinning the survivor lets the next gc free everything
    store.unpin(a.cube_id)
    report = store.gc()
    assert report.cubes == 1 and report.chunks == len(set(a.manifest.chunks))
    assert store.usage()["chunks"] == 0 and store.entries() == []


def test_gc_unpinned_sharer_then_put_again(store):
    """A cube collected while another still holds its shared chunks can come back whole."""
    a, b = sharing_pair()
    store.put(a, pin_reason="keep")
    store.put(b)
    store.gc()
    assert store.put(b) is True
    assert store.verify(b.cube_id).payload() == b.payload()
    stored_chunks_are_exactly(store, [a, b])


def test_gc_never_removes_pinned(store):
    cubes = [text_cube([f"cube {i} " * 50], seed=f"author-{i % 3}") for i in range(30)]
    pinned = {c.cube_id for c in cubes[::3]}
    for cube in cubes:
        store.put(cube, pin_reason="keep" if cube.cube_id in pinned else None)
    for _ in range(2):
        report = store.gc(batch=4)
        assert ids(store.entries()) == pinned
    assert report == GCReport()  # the second pass found nothing to do
    for cube_id in pinned:
        store.verify(cube_id)
    stored_chunks_are_exactly(store, [c for c in cubes if c.cube_id in pinned])


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_gc_in_batches(store, batch):
    cubes = [text_cube([f"item {i} " * 300, "common tail " * 200], seed=f"s{i}") for i in range(25)]
    keep = cubes[7]
    for cube in cubes:
        store.put(cube)
    store.pin(keep.cube_id, "keep")
    report = store.gc(batch=batch)
    assert report.cubes == 24
    freed = set().union(*(set(c.manifest.chunks) for c in cubes)) - set(keep.manifest.chunks)
    assert report.chunks == len(freed)
    assert report.bytes == (sum(len(c.manifest_bytes) for c in cubes if c is not keep)
                            + sum(len(store_chunk_bytes(cubes, chunk)) for chunk in freed))
    assert ids(store.entries()) == {keep.cube_id}
    stored_chunks_are_exactly(store, [keep])
    store.verify(keep.cube_id)


def store_chunk_bytes(cubes, chunk_id: bytes) -> bytes:
    for cube in cubes:
        if chunk_id in cube.chunks:
            return bytes(cube.chunks[chunk_id])
    raise KeyError(chunk_id)


@functools.cache
def gc_pool() -> list[build.Cube]:
    """Cubes that share chunk-aligned prefixes (same item count, same first items) and whole
    payloads (same payload under another author)."""
    texts = [f"text {t} " * 350 for t in "ABCD"]  # ~2,400 bytes each
    orders = [(0, 1, 2), (0, 1, 3), (0, 2, 1), (1, 0, 2), (0, 1, 2), (3, 2, 1)]
    pool = [text_cube([texts[i] for i in order], seed=f"author-{n}") for n, order in enumerate(orders)]
    pool.append(text_cube([texts[0], texts[1], texts[2]], seed="author-0", tags=("copy",)))
    return pool


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 6), st.booleans()),
        st.tuples(st.just("pin"), st.integers(0, 6)),
        st.tuples(st.just("unpin"), st.integers(0, 6)),
        st.tuples(st.just("gc"), st.sampled_from([1, 2, 64])),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_refcounts_match_a_model(ops):
    """Any sequence of put/pin/unpin/gc leaves exactly the chunks the stored cubes list."""
    pool = gc_pool()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "store"))
        try:
            present: set[int] = set()
            pinned: set[int] = set()
            for op in ops:
                if op[0] == "put":
                    _, i, pin = op
                    assert store.put(pool[i], pin_reason="p" if pin else None) is (i not in present)
                    present.add(i)
                    if pin:
                        pinned.add(i)
                elif op[0] == "pin":
                    if op[1] in present:
                        store.pin(pool[op[1]].cube_id, "p")
                        pinned.add(op[1])
                    else:
                        with pytest.raises(NotFoundError):
                            store.pin(pool[op[1]].cube_id, "p")
                elif op[0] == "unpin":
                    assert store.unpin(pool[op[1]].cube_id) is (op[1] in pinned)
                    pinned.discard(op[1])
                else:
                    report = store.gc(batch=op[1])
                    assert report.cubes == len(present - pinned)
                    present &= pinned
                assert ids(store.entries()) == {pool[i].cube_id for i in present}
                assert ids(store.entries(pinned=True)) == {pool[i].cube_id for i in pinned}
                stored_chunks_are_exactly(store, [pool[i] for i in present])
            for i in present:
                store.verify(pool[i].cube_id)
        finally:
            store.close()


# -- (d) names and versions ----------------------------------------------------------------------

def named(version: int, text: str = "", seed: str = "alice", **optional) -> build.Cube:
    return factories.plaintext_cube(factories.key(seed), texts=(text or f"notes v{version}",),
                                    name="notes", version=version, **optional)


def test_versions_only_go_up(store):
    v1 = named(1)
    v2 = named(2, supersedes=v1.cube_id)
    author = v1.manifest.author
    assert store.latest(author, "notes") is None
    assert store.put(v1) and store.put(v2, pin_reason="current")
    assert store.latest(author, "notes") == (2, v2.cube_id)
    assert store.put(v1) is False  # still stored: an idempotent repeat, not a downgrade
    store.gc()  # removes v1 (unpinned)
    assert not store.has(v1.cube_id)
    with pytest.raises(PolicyError):
        store.put(v1)
    with pytest.raises(PolicyError):
        store.put(named(2, "another v2"))
    # the refused puts left nothing behind
    assert ids(store.entries()) == {v2.cube_id}
    stored_chunks_are_exactly(store, [v2])
    assert store.put(named(3)) is True
    assert store.latest(author, "notes")[0] == 3


def test_older_version_refused_fresh(store):
    v1, v2 = named(1), named(2)
    store.put(v2)
    with pytest.raises(PolicyError):
        store.put(v1, pin_reason="should not stick")
    assert not store.has(v1.cube_id) and store.entries(pinned=True) == []


def test_same_version_other_cube_refused(store):
    store.put(named(1))
    with pytest.raises(PolicyError):
        store.put(named(1, "a different first version"))
    assert len(store.entries()) == 1


def test_high_water_mark_survives_gc(store):
    v1, v2 = named(1), named(2)
    store.put(v1)
    store.put(v2)
    report = store.gc()
    assert report.cubes == 2 and store.entries() == []
    assert store.latest(v1.manifest.author, "notes") == (2, v2.cube_id)
    with pytest.raises(PolicyError):
        store.put(v1)
    assert store.put(v2) is True  # the same cube again is fine
    store.verify(v2.cube_id)


def test_put_many_is_all_or_nothing(store):
    store.put(named(2))
    fine = factories.plaintext_cube(texts=("unrelated",))
    with pytest.raises(PolicyError):
        store.put_many([fine, named(1)])
    assert not store.has(fine.cube_id)
    assert len(store.entries()) == 1


def test_names_are_per_author(store):
    store.put(named(5, seed="alice"))
    bob_v1 = named(1, seed="bob")
    assert store.put(bob_v1) is True
    assert store.latest(bob_v1.manifest.author, "notes") == (1, bob_v1.cube_id)
    assert store.latest(bob_v1.manifest.author, "notes-2") is None


# -- (e) access stats ---------------------------------------------------------------------------

def test_record_access(store):
    cube = factories.parameter_cube()
    store.put(cube)
    stats = store.entries()[0].stats
    assert stats["hits"] == 0 and stats["last"] == 0 and stats["added"] > 0
    before = int(time.time())
    store.record_access(cube.cube_id)
    store.record_access(cube.cube_id)
    stats = store.entries()[0].stats
    assert stats["hits"] == 2 and before <= stats["last"] <= int(time.time())
    store.record_access(factories.plaintext_cube().cube_id)  # unknown: ignored, nothing created
    assert store.usage()["cubes"] == 1


# -- (f) map growth -------------------------------------------------------------------------------

def test_large_cube_grows_the_map(store):
    assert store.env.info()["map_size"] == environment.INITIAL_MAP_SIZE
    big = big_text_cube(100 * MiB, seed=1)
    assert big.manifest.size > 100 * MiB
    assert store.put(big) is True
    assert store.env.info()["map_size"] > 100 * MiB
    assert store.verify(big.cube_id).payload() == big.payload()


def test_small_initial_map_grows(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "INITIAL_MAP_SIZE", 1 * MiB)
    store = Store(str(tmp_path / "small"))
    try:
        assert store.env.info()["map_size"] == 1 * MiB
        cubes = [big_text_cube(3 * MiB, seed=s) for s in range(4)]
        for cube in cubes:
            assert store.put(cube) is True
        assert store.env.info()["map_size"] >= store.usage()["used_bytes"] > 12 * MiB
        for cube in cubes:
            assert store.read_payload(cube.cube_id) == cube.payload()
    finally:
        store.close()
    reopened = Store(str(tmp_path / "small"))  # opens with the small map again: LMDB adopts the file's
    try:
        assert len(reopened.entries()) == 4
        reopened.pin(cubes[0].cube_id, "write after reopen")
        for cube in cubes:
            reopened.verify(cube.cube_id)
    finally:
        reopened.close()


def reserved_map_size(used: int, need: int) -> int:
    """The map size Store._reserve grows to before a write of need bytes (same rule)."""
    wanted = used + int(need * 1.25) + 16 * MiB
    return 1 << max(wanted - 1, 1).bit_length()


def test_map_full_error_is_retried(tmp_path, monkeypatch):
    """Cubes whose indexes outweigh their bytes (tens of thousands of prefix keys each) overrun
    the space reserved from their byte size: LMDB raises MapFullError mid-transaction, and the
    store grows the map and retries the whole transaction."""
    monkeypatch.setattr(environment, "INITIAL_MAP_SIZE", 1 * MiB)
    cubes = [
        factories.activation_cube(n_tokens=60_000, block_size=1, layers=1, kv_heads=1, head_dim=1,
                                  dtype="float16", token_ids=[n * 100_000 + t for t in range(60_000)], seed=n)
        for n in range(4)
    ]
    store = Store(str(tmp_path / "keys"))
    try:
        info, page = store.env.info(), store.env.stat()["psize"]
        need = sum(len(c.manifest_bytes) + sum(len(d) for d in c.chunks.values()) for c in cubes)
        reserved = reserved_map_size((info["last_pgno"] + 1) * page, need)
        assert store.put_many(cubes) == [True] * 4
        used = store.usage()["used_bytes"]
        assert used > reserved  # more than the reservation was written...
        assert store.env.info()["map_size"] > reserved  # ...so the map grew during the retries
        for cube in cubes:
            assert store.find("prefix", cube.manifest.meta["prefix_keys"][-1]) == [cube.cube_id]
            store.verify(cube.cube_id)
    finally:
        store.close()


def test_map_grown_by_another_process(tmp_path, monkeypatch):
    """Another process writes past this process's map: reads and writes here adopt its size."""
    monkeypatch.setattr(environment, "INITIAL_MAP_SIZE", 1 * MiB)
    path = str(tmp_path / "shared")
    store = Store(path)
    try:
        assert store.entries() == []
        result = run_python(
            """
            import sys
            from memnet.store import Store
            from tests.test_store import big_text_cube
            store = Store(sys.argv[1])
            cube = big_text_cube(8 * 1024 * 1024, seed=int(sys.argv[2]))
            store.put(cube)
            print(cube.cube_id.hex())
            """,
            path, "42",
        )
        assert result.returncode == 0, result.stderr
        other = bytes.fromhex(result.stdout.strip())
        assert store.env.info()["map_size"] == 1 * MiB
        assert store.has(other)  # a reader meets MapResizedError and adopts the bigger map
        assert store.env.info()["map_size"] > 8 * MiB
        store.pin(other, "from the other process")  # and a writer too
        store.verify(other)
        first = factories.plaintext_cube()
        assert store.put(first) is True
        assert ids(store.entries()) == {first.cube_id, other}
    finally:
        store.close()


# -- (g) processes ------------------------------------------------------------------------------

def test_second_process_sees_cubes(store):
    cubes = [KINDS[k]() for k in sorted(KINDS)]
    for cube in cubes:
        store.put(cube, pin_reason="shared")
    result = run_python(
        """
        import json, sys
        from memnet.cube import build
        from memnet.store import Store
        from tests import factories
        store = Store(sys.argv[1])
        seen = []
        for entry in store.entries():
            store.verify(entry.cube_id)
            seen.append([entry.cube_id.hex(), entry.manifest.kind, entry.pin["reason"]])
        mine = factories.plaintext_cube(texts=("written by the second process",))
        store.put(mine)
        print(json.dumps({"seen": seen, "mine": mine.cube_id.hex()}))
        """,
        store.path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {bytes.fromhex(i) for i, _, _ in report["seen"]} == {c.cube_id for c in cubes}
    assert sorted(kind for _, kind, _ in report["seen"]) == sorted(KINDS)
    assert {reason for _, _, reason in report["seen"]} == {"shared"}
    mine = bytes.fromhex(report["mine"])
    assert store.has(mine)  # this process's open store sees the other's commit
    store.verify(mine)


def test_store_used_across_fork_raises(tmp_path):
    path = str(tmp_path / "forked")
    store = Store(path)
    before = factories.plaintext_cube(texts=("before the fork",))
    store.put(before)
    from_child = factories.plaintext_cube(texts=("written by the child",))
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 99
        try:
            try:
                store.has(before.cube_id)
                code = 10  # the inherited store was usable
            except StoreError as exc:
                if type(exc) is not StoreError or "fork" not in str(exc):
                    code = 11
                else:
                    try:
                        store.put(from_child)
                        code = 12
                    except StoreError:
                        fresh = Store(path)  # opening again in the child works
                        ok = fresh.has(before.cube_id) and fresh.put(from_child)
                        fresh.verify(from_child.cube_id)
                        code = 0 if ok else 13
        except BaseException:
            code = 14
        finally:
            os._exit(code)
    assert wait_child(pid, timeout=60) == 0
    # the parent's store is unharmed and sees what the child wrote through its own environment
    assert store.has(from_child.cube_id)
    store.verify(from_child.cube_id)
    assert store.put(factories.plaintext_cube(texts=("after the fork",))) is True
    assert len(store.entries()) == 3
    store.close()


# -- (h) disk full -------------------------------------------------------------------------------

DISK_FULL_CHILD = """
import json, os, resource, signal, sys
from memnet.errors import MemnetError
from memnet.store import Store
from tests import factories
from tests.test_store import big_text_cube
path, headroom = sys.argv[1], int(sys.argv[2])
store = Store(path)
big = big_text_cube(16 * 1024 * 1024, seed=99)
small = factories.plaintext_cube(texts=("small, after the failure",))
size = os.path.getsize(os.path.join(path, "data.mdb"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + headroom, resource.RLIM_INFINITY))
report = {"big": big.cube_id.hex(), "big_chunks": [c.hex() for c in big.manifest.chunks],
          "small": small.cube_id.hex()}
try:
    store.put(big, pin_reason="big")
    report["error"] = None
except MemnetError as exc:
    report["error"], report["message"] = type(exc).__name__, str(exc)
try:
    store.put(small, pin_reason="small")
    report["small_put"] = "stored"
except MemnetError as exc:
    report["small_put"] = type(exc).__name__
print(json.dumps(report))
"""


@pytest.mark.parametrize("headroom", [0, 4 * MiB])
def test_disk_full_is_store_full_error(tmp_path, headroom):
    path = str(tmp_path / "full")
    store = Store(path)
    before = [text_cube([f"existing {i} " * 500], seed=f"e{i}") for i in range(6)]
    for i, cube in enumerate(before):
        store.put(cube, pin_reason="keep" if i % 2 == 0 else None)
    store.gc()  # some churn, so the file has free pages too
    kept = [c for i, c in enumerate(before) if i % 2 == 0]
    store.close()

    result = run_python(DISK_FULL_CHILD, path, str(headroom))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["error"] == "StoreFullError"
    assert "\n" not in report["message"] and "full" in report["message"]
    if headroom:  # the failed write left room in the file for a small one
        assert report["small_put"] == "stored"
    else:
        assert report["small_put"] in ("stored", "StoreFullError")

    store = Store(path)  # no limit here
    try:
        big = bytes.fromhex(report["big"])
        assert not store.has(big)
        assert not any(store.has_chunks([bytes.fromhex(c) for c in report["big_chunks"]]))
        expected = {c.cube_id for c in kept}
        if report["small_put"] == "stored":
            expected.add(bytes.fromhex(report["small"]))
        assert ids(store.entries()) == expected
        for entry in store.entries():
            store.verify(entry.cube_id)
        # and the store takes big writes again once there is room
        again = big_text_cube(16 * MiB, seed=99)
        assert store.put(again) is True and again.cube_id == big
        store.verify(big)
    finally:
        store.close()


# -- (i) GC beside a concurrent publisher ------------------------------------------------------------

PUBLISHER = """
import json, sys, time
from memnet.cube import build, payloads
from memnet.store import Store
from tests import factories
path, n = sys.argv[1], int(sys.argv[2])
store = Store(path)
common = "common to every cube " * 200  # shared chunk-aligned prefix: refcounts under contention
pinned, unpinned = [], []
print("ready", flush=True)
for i in range(n):
    for label, pin, out in (("pinned", "keep", pinned), ("unpinned", None, unpinned)):
        items = [{"text": common}, {"text": f"{label} {i} " * 100}]
        cube = build.build(factories.key(f"publisher-{i % 4}"), "plaintext", payloads.encode_items(items),
                           {"items": 2}, chunk_size=1024, created=factories.FIXED_CREATED + i)
        store.put(cube, pin_reason=pin)
        out.append(cube.cube_id.hex())
    time.sleep(0.01)
print(json.dumps({"pinned": pinned, "unpinned": unpinned}), flush=True)
"""


def test_gc_beside_concurrent_publish(store):
    n = 30
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, store.path, str(n)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        removed_while_publishing, runs = 0, 0
        deadline = time.monotonic() + 120
        while proc.poll() is None:
            assert time.monotonic() < deadline, "publisher did not finish in time"
            report = store.gc(batch=2)
            runs += 1
            if proc.poll() is None:
                removed_while_publishing += report.cubes
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    published = json.loads(out.splitlines()[-1])
    pinned = {bytes.fromhex(h) for h in published["pinned"]}
    unpinned = {bytes.fromhex(h) for h in published["unpinned"]}
    assert len(pinned) == n and len(unpinned) == n
    assert removed_while_publishing > 0, f"no gc overlapped the publisher ({runs} runs)"

    listed = ids(store.entries())
    assert pinned <= listed and listed <= pinned | unpinned
    for cube_id in listed:
        store.verify(cube_id)
    store.gc()
    assert ids(store.entries()) == pinned
    manifests = [store.manifest(c) for c in pinned]
    wanted = set().union(*(set(m.chunks) for m in manifests))
    assert store.usage()["chunks"] == len(wanted)
    for cube_id in pinned:
        store.unpin(cube_id)
    store.gc()
    assert store.usage()["chunks"] == 0 and store.usage()["cubes"] == 0  # no refcount leaked


def test_entry_of_one_cube_and_of_a_missing_one(tmp_path):
    store = Store(str(tmp_path / "one"))
    cube = factories.plaintext_cube()
    store.put(cube, "because")
    entry = store.entry(cube.cube_id)
    assert entry.manifest == cube.manifest and entry.pin["reason"] == "because" and entry.stats["hits"] == 0
    with pytest.raises(NotFoundError, match="no cube"):
        store.entry(factories.parameter_cube().cube_id)


# -- staging (chunks of a fetch in progress) -------------------------------------------------------

def test_staged_chunks_survive_gc_within_the_grace_then_go(store):
    from memnet.store import gc

    cube = factories.plaintext_cube(texts=["staged " * 400, "chunks " * 400], chunk_size=1024)
    staged = [(c, bytes(cube.chunks[c])) for c in list(cube.chunks)[:3]]
    store.stage_chunks(staged)
    assert store.has_chunks([c for c, _ in staged]) == [True] * 3
    assert store.gc().chunks == 0  # a fetch still running must not lose its chunks
    assert store.has_chunks([c for c, _ in staged]) == [True] * 3
    store.clock = lambda: time.time() + gc.STAGING_GRACE + 1  # as if the fetch died long ago
    report = store.gc()
    assert report.chunks == 3 and report.bytes == sum(len(d) for _, d in staged)
    assert store.has_chunks([c for c, _ in staged]) == [False] * 3


def test_a_cube_read_back_from_staging_commits_without_its_bytes(store):
    """A fetched cube is verified from the store (a ChunkReader) and committed: only its manifest
    and references are written, no chunk is read for it."""
    from memnet.cube.build import ChunkReader

    cube = factories.plaintext_cube(texts=["staged " * 500, "then committed " * 300], chunk_size=1024)
    store.stage_chunks([(c, bytes(d)) for c, d in cube.chunks.items()])
    reads = []

    def chunk(chunk_id):
        reads.append(chunk_id)
        return store.chunk(chunk_id)

    lazy = build.verify(cube.manifest_bytes, cube.cube_id, chunk, keep_chunks=False)
    assert isinstance(lazy.chunks, ChunkReader) and lazy.payload() == cube.payload()
    reads.clear()
    assert store.put(lazy, "fetched")
    assert reads == []
    assert store.verify(cube.cube_id).manifest == cube.manifest
    assert store._read(lambda txn: txn.stat(store._db["staged"])["entries"]) == 0


def test_put_after_staging_keeps_the_staged_copy_and_clears_the_marker(store):
    from memnet.store import gc

    cube = factories.plaintext_cube(texts=["resumable " * 400, "fetch " * 400], chunk_size=1024)
    store.stage_chunks([(c, bytes(d)) for c, d in cube.chunks.items()])
    assert store.put(cube, "fetched")
    assert store.verify(cube.cube_id).manifest == cube.manifest
    store.clock = lambda: time.time() + gc.STAGING_GRACE + 1
    store.unpin(cube.cube_id)
    report = store.gc()  # refcounts are right: the cube and all its chunks go, nothing stays
    assert report.cubes == 1 and report.chunks == len(set(cube.manifest.chunks))
    assert store.usage()["chunks"] == 0


def test_records_tables_are_separate_ordered_and_survive_gc(tmp_path):
    store = Store(str(tmp_path / "s"))
    store.put_records("vectors", [(b"b", b"2"), (b"a", b"1"), (b"ab", b"3")])
    store.put_records("usage", [(b"a", b"other table")])
    assert store.records("vectors") == [(b"a", b"1"), (b"ab", b"3"), (b"b", b"2")]
    assert store.records("vectors", b"a") == [(b"a", b"1"), (b"ab", b"3")]
    assert store.get_record("usage", b"a") == b"other table"
    assert store.get_record("usage", b"b") is None
    store.gc()
    assert store.delete_records("vectors", [b"a", b"zz"]) == 1
    assert store.records("vectors") == [(b"ab", b"3"), (b"b", b"2")]
    with pytest.raises(StoreError, match="table name"):
        store.put_records("bad\x00name", [(b"k", b"v")])


# -- deleting one cube (eviction) -----------------------------------------------------------------

def test_delete_one_unpinned_cube_keeps_shared_chunks(store):
    a, b = sharing_pair()
    only_b = set(b.manifest.chunks) - set(a.manifest.chunks)
    store.put(a)  # unpinned too: delete takes only the cube it is asked for, unlike gc
    store.put(b)
    report = store.delete(b.cube_id)
    assert report.cubes == 1 and report.chunks == len(only_b)
    assert report.bytes == sum(len(b.chunks[c]) for c in only_b) + len(b.manifest_bytes)
    assert ids(store.entries()) == {a.cube_id}
    assert store.verify(a.cube_id).payload() == a.payload()
    stored_chunks_are_exactly(store, [a])
    assert store.find("kind", b"plaintext") == [a.cube_id]  # its index entries went with it
    store.delete(a.cube_id)  # refcounts are right: the last sharer frees every chunk
    assert store.usage() | {"used_bytes": 0} == {"cubes": 0, "chunks": 0, "pins": 0, "used_bytes": 0}
    assert store.put(b) is True  # and it can come back whole
    assert store.verify(b.cube_id).payload() == b.payload()


def test_delete_refuses_pinned_and_missing_cubes(store):
    cube = text_cube(["keep me " * 50])
    store.put(cube, pin_reason="keep")
    with pytest.raises(PolicyError, match="pinned"):
        store.delete(cube.cube_id)
    assert store.verify(cube.cube_id).payload() == cube.payload()
    stored_chunks_are_exactly(store, [cube])
    with pytest.raises(NotFoundError):
        store.delete(text_cube(["never stored"]).cube_id)
    store.unpin(cube.cube_id)
    assert store.delete(cube.cube_id).cubes == 1
    with pytest.raises(NotFoundError):
        store.delete(cube.cube_id)


def test_delete_keeps_the_version_high_water_mark(store):
    v2 = text_cube(["two"], name="notes", version=2)
    store.put(v2)
    store.delete(v2.cube_id)
    assert store.latest(v2.manifest.author, "notes") == (2, v2.cube_id)
    with pytest.raises(PolicyError, match="older"):
        store.put(text_cube(["one"], name="notes", version=1))
    assert store.put(v2) is True  # the same version may come back
