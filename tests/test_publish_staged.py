"""Publishing a large payload in pieces (reliability finding 5, the publish side): an adapter's
weights are read from its file a chunk at a time (ingest.FileBytes behind a Spliced header),
chunks are staged in bounded transactions, the manifest committed last. Real LMDB stores."""

from __future__ import annotations

import json
import os
import random
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memnet import ingest
from memnet.cube import build, payloads
from memnet.cube.payload_views import Spliced
from memnet.errors import UsageError
from memnet.local import Publisher
from memnet.store import Store, gc
from tests import factories

MIB = 1 << 20


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    yield s
    s.close()


def publisher(store: Store, stage_above: int = 0, chunk_size: int = 1024) -> Publisher:
    return Publisher(store, factories.key("author"), chunk_size=chunk_size, stage_above=stage_above)


def adapter_folder(folder: Path, **lora) -> tuple[Path, bytes]:
    """A PEFT adapter folder as PEFT writes one; returns it and the payload the in-memory path
    builds from it (the reference)."""
    config, weights = factories.lora_files(**lora)
    folder.mkdir(parents=True)
    (folder / ingest.ADAPTER_CONFIG).write_text(json.dumps(config))
    (folder / ingest.ADAPTER_WEIGHTS).write_bytes(weights)
    return folder, payloads.build_parameter_payload(config, weights)


def staged_entries(store: Store) -> int:
    return store._read(lambda txn: txn.stat(store._db["staged"])["entries"])


# -- the views ---------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(head=st.binary(max_size=40), body=st.binary(max_size=200), data=st.data())
def test_spliced_slices_equal_the_joined_bytes(head, body, data):
    start = data.draw(st.integers(0, len(body)))
    joined = head + body[start:]
    view = Spliced(head, body, start)
    assert len(view) == len(joined)
    a = data.draw(st.integers(-5, len(joined) + 5))
    b = data.draw(st.integers(-5, len(joined) + 5))
    assert view[a:b] == joined[a:b]
    assert view[:] == joined


def test_spliced_refuses_steps_indexes_and_a_bad_start():
    view = Spliced(b"ab", b"cdef", 1)
    with pytest.raises(ValueError):
        view[::2]
    with pytest.raises(TypeError):
        view[0]
    with pytest.raises(ValueError):
        Spliced(b"", b"abc", 4)


def test_file_bytes_reads_slices_and_refuses_what_is_not_a_regular_file(tmp_path):
    path = tmp_path / "w.bin"
    data = random.Random(1).randbytes(10_000)
    path.write_bytes(data)
    view = ingest.FileBytes(path)
    assert len(view) == 10_000 and view[123:4567] == data[123:4567] and view[9_990:20_000] == data[9_990:]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for bad, says in ((tmp_path, "not a regular file"), (fifo, "not a regular file"),
                      (tmp_path / "absent", "no such file")):
        with pytest.raises(UsageError, match=says):
            ingest.FileBytes(bad)


def test_a_file_that_shrinks_while_read_is_one_line(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 5000)
    view = ingest.FileBytes(path)
    os.truncate(path, 1000)
    with pytest.raises(UsageError, match="changed while it was read"):
        view[0:5000]


# -- the staged publish ------------------------------------------------------------------------

def test_a_staged_publish_gives_the_chunks_and_payload_of_the_in_memory_one(store, tmp_path):
    folder, reference = adapter_folder(tmp_path / "adapter", r=8, hidden=64, layers=3)
    payload, meta = ingest.adapter_from_dir(folder, factories.fingerprint("base"))
    assert isinstance(payload, Spliced) and payload[:] == reference
    staged = publisher(store).publish("parameter", payload, meta, name="skill")
    in_memory = build.build(factories.key("author"), "parameter", reference, meta, chunk_size=1024)
    assert staged.manifest.chunks == in_memory.manifest.chunks and staged.manifest.size == len(reference)
    assert store.verify(staged.cube_id).payload() == reference
    assert store.entry(staged.cube_id).pin["reason"] == "published" and staged_entries(store) == 0
    assert store.latest(staged.manifest.author, "skill") == (1, staged.cube_id)


def test_repeated_chunks_are_stored_once_and_counted_right(store):
    # a plaintext payload whose items repeat: several chunks share one CID
    items = [{"text": "same paragraph " * 300}] * 12
    payload, meta = payloads.encode_items(items), {"items": 12}
    cube = publisher(store).publish("plaintext", payload, meta, pin=False)
    assert len(set(cube.manifest.chunks)) < len(cube.manifest.chunks)
    assert store.verify(cube.cube_id).payload() == payload
    store.clock = lambda: time.time() + gc.STAGING_GRACE + 1
    report = store.gc()  # unpinned: it goes whole, and no chunk is left behind or missing
    assert report.cubes == 1 and report.chunks == len(set(cube.manifest.chunks))
    assert store.usage()["chunks"] == 0


def test_small_payloads_keep_the_one_transaction_path(store, tmp_path):
    folder, reference = adapter_folder(tmp_path / "adapter")
    payload, meta = ingest.adapter_from_dir(folder, factories.fingerprint("base"))
    cube = publisher(store, stage_above=len(reference)).publish("parameter", payload, meta)
    assert isinstance(cube.chunks, dict) and store.verify(cube.cube_id).payload() == reference


def test_a_publish_that_dies_midway_leaves_no_cube_and_gc_reclaims_its_chunks(store, tmp_path, monkeypatch):
    folder, reference = adapter_folder(tmp_path / "adapter", r=8, hidden=128, layers=4)
    payload, meta = ingest.adapter_from_dir(folder, factories.fingerprint("base"))
    monkeypatch.setattr("memnet.local.STAGE_BATCH", 8 * 1024)
    calls = 0
    real = store.stage_chunks

    def dies_on_the_third(chunks):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) between two staging transactions
        real(chunks)

    monkeypatch.setattr(store, "stage_chunks", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        publisher(store).publish("parameter", payload, meta)
    assert store.entries() == [] and staged_entries(store) > 0
    assert store.gc().chunks == 0  # within the grace: kept, as a fetch's would be
    store.clock = lambda: time.time() + gc.STAGING_GRACE + 1
    assert store.gc().chunks > 0 and store.usage()["chunks"] == 0


def test_a_bad_payload_is_refused_before_anything_is_staged(store, tmp_path):
    folder, _ = adapter_folder(tmp_path / "adapter")
    payload, meta = ingest.adapter_from_dir(folder, factories.fingerprint("base"))
    wrong = {**meta, "peft": {**meta["peft"], "r": 5}}
    with pytest.raises(UsageError, match="PEFT config"):
        publisher(store).publish("parameter", payload, wrong)
    assert staged_entries(store) == 0 and store.usage()["chunks"] == 0


def test_a_large_sealed_payload_is_refused_with_one_line(store, tmp_path, monkeypatch):
    monkeypatch.setattr("memnet.local.MAX_SEALED", 1024)
    folder, _ = adapter_folder(tmp_path / "adapter")
    payload, meta = ingest.adapter_from_dir(folder, factories.fingerprint("base"))
    with pytest.raises(UsageError, match="sealed cube is encrypted in memory"):
        publisher(store).publish("parameter", payload, meta, recipients=[])
    assert store.entries() == []


def test_staged_publish_holds_a_bounded_part_of_the_payload(store, tmp_path):
    """48 MiB of adapter weights published through the file view: Python's allocations stay
    near one staging batch (16 MiB), not the payload (the in-memory path held 2-3 copies)."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    hidden, r, layers = 1024, 64, 48   # 48 layers x 2 modules x (A + B) x 64 x 1024 x 4 bytes = 48 MiB
    config, _ = factories.lora_files(r=1, hidden=4, layers=1)
    config["r"] = r
    header = {}
    offset = 0
    for layer in range(layers):
        for module in ("q_proj", "v_proj"):
            base = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            for half, shape in (("lora_A", [r, hidden]), ("lora_B", [hidden, r])):
                header[f"{base}.{half}.weight"] = {"dtype": "F32", "shape": shape,
                                                   "data_offsets": [offset, offset + r * hidden * 4]}
                offset += r * hidden * 4
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with (folder / ingest.ADAPTER_WEIGHTS).open("wb") as out:
        out.write(len(text).to_bytes(8, "little") + text)
        rng = random.Random(3)
        for _ in range(offset // MIB):
            out.write(rng.randbytes(MIB))
    (folder / ingest.ADAPTER_CONFIG).write_text(json.dumps(config))
    payload, meta = ingest.adapter_from_dir(folder, factories.fingerprint("base"))
    tracemalloc.start()
    try:
        cube = replace(publisher(store, chunk_size=256 * 1024), stage_above=0).publish("parameter", payload, meta)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cube.manifest.size > 48 * MIB
    assert peak < 24 * MIB, f"{peak / MIB:.1f} MiB of Python allocations for a 48 MiB publish"
    assert store.verify(cube.cube_id).manifest.size == cube.manifest.size


# -- plaintext read and encoded an item at a time -------------------------------------------------

def whole_text_items(text: str) -> list[dict]:
    """The notes of a text as the whole-file reader split them (the reference)."""
    return [{"text": p.strip()} for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.sampled_from(["a", "é", "字", " ", "\n", "\r", "\r\n", "\n\n"]), min_size=1,
                     max_size=120).map("".join),
       block=st.integers(1, 9))
def test_notes_read_in_blocks_split_as_the_whole_text_does(tmp_path_factory, text, block):
    path = tmp_path_factory.mktemp("notes") / "n.md"
    path.write_bytes(text.encode())
    saved = ingest.READ_BLOCK
    ingest.READ_BLOCK = block    # blocks that cut "\r\n", "\n\n" and multi-byte characters
    try:
        assert list(ingest._file_items(path)) == whole_text_items(text)
    finally:
        ingest.READ_BLOCK = saved


@pytest.mark.parametrize("name, body, items", [
    ("n.md", "first note\r\n\r\nsecond\nline\n\n\n\nthird ✓\n", ["first note", "second\nline", "third ✓"]),
    ("n.jsonl", '"one"\n\n{"text": "two", "source": "wiki"}\n"three"', ["one", "two", "three"]),
    ("n.json", '["one", {"text": "two", "source": "wiki"}]', ["one", "two"]),
])
def test_plaintext_from_file_streams_the_payload_encode_items_gives(tmp_path, monkeypatch, name, body, items):
    monkeypatch.setattr(ingest, "READ_BLOCK", 5)
    path = tmp_path / name
    path.write_text(body)
    payload, meta = ingest.plaintext_from_file(path)
    expected = [{"text": t} for t in items]
    if "wiki" in body:
        expected[1]["meta"] = {"source": "wiki"}
    reference = payloads.encode_items(expected)
    assert meta == {"items": len(items)} and len(payload) == len(reference)
    assert b"".join(payload.pieces()) == reference == b"".join(payload.pieces())  # and again


def test_a_staged_plaintext_publish_equals_the_in_memory_one(store, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "READ_BLOCK", 1000)
    rng = random.Random(4)
    notes = ["".join(rng.choice("abcdefgh ") for _ in range(rng.randrange(10, 3000))).strip() or "x"
             for _ in range(60)]
    path = tmp_path / "notes.md"
    path.write_text("\n\n".join(notes))
    payload, meta = ingest.plaintext_from_file(path)
    cube = publisher(store).publish("plaintext", payload, meta)
    reference = payloads.encode_items(whole_text_items(path.read_text()))
    assert isinstance(cube.chunks, build.ChunkReader) and store.verify(cube.cube_id).payload() == reference
    small = publisher(store, stage_above=len(reference)).publish("plaintext", payload, meta, pin=False)
    assert small.manifest.chunks == cube.manifest.chunks


def test_a_notes_file_changed_between_its_two_reads_is_refused(store, tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("one\n\ntwo\n\nthree")
    payload, meta = ingest.plaintext_from_file(path)
    path.write_text("one\n\ntwo")
    with pytest.raises(UsageError, match="2 given"):
        publisher(store).publish("plaintext", payload, meta)
    path.write_text("one\n\ntwo\n\nthree\n\nfour")
    with pytest.raises(UsageError, match="more given"):
        publisher(store).publish("plaintext", payload, meta)
    path.write_text("one\n\ntwo, longer\n\nthree")   # as many items, more bytes than announced
    with pytest.raises(UsageError, match="announced"):
        publisher(store, stage_above=0).publish("plaintext", payload, meta)
    assert store.entries() == []


def test_a_paragraph_longer_than_an_item_is_refused_as_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr("memnet.cube.limits.MAX_ITEM_TEXT", 100)
    path = tmp_path / "notes.md"
    path.write_text("short\n\n" + "x" * 5000)
    with pytest.raises(UsageError, match="paragraph is longer"):
        ingest.plaintext_from_file(path)
