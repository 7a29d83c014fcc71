"""The memnet command line, driven as a user drives it (real subprocesses, real homes)."""

from __future__ import annotations

import json
import stat

import pytest

from memnet.cube import canonical, car, cid, keys
from memnet.cube.manifest import SIGN_DOMAIN
from tests import factories
from tests.cli_helpers import assert_one_line_error, memnet

pytestmark = pytest.mark.slow  # real daemons or CLI subprocesses: the full suite only


@pytest.fixture
def alice(tmp_path):
    home = tmp_path / "alice"
    memnet(home, "init")
    return home


@pytest.fixture
def bob(tmp_path):
    home = tmp_path / "bob"
    memnet(home, "init")
    return home


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("First fact.\n\nSecond fact,\non two lines.\n\n\n")
    return path


def publish(home, path, *args) -> str:
    return memnet(home, "publish", path, *args).out.strip()


def listed(home, *args) -> list[dict]:
    return json.loads(memnet(home, "ls", "--json", *args).out)


def adapter_dir(tmp_path, name="adapter"):
    config, weights = factories.lora_files()
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


BASE = "ab" * 32


def test_init_creates_private_identity_and_refuses_twice(alice):
    key_file = alice / "identity.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert json.loads((alice / "config.json").read_text())["chunk_size"] == 262144
    assert (alice / "store" / "data.mdb").exists()
    info = json.loads(memnet(alice, "id", "--json").out)
    assert info["peer_id"].startswith("12D3KooW")
    assert keys.peer_id(bytes.fromhex(info["public_key"])) == info["peer_id"]
    again = memnet(alice, "init", check=False)
    assert_one_line_error(again, "already holds a memnet node")
    assert json.loads(memnet(alice, "id", "--json").out) == info  # identity untouched


def test_init_makes_the_home_and_the_store_private(tmp_path):
    """An existing folder keeps no group/other access, and LMDB's files are the user's alone."""
    home = tmp_path / "shared-looking"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    memnet(home, "init")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert stat.S_IMODE((home / "store" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "config.json").stat().st_mode) == 0o600


def test_files_that_are_not_regular_or_roles_that_do_not_exist_are_refused(alice, tmp_path):
    assert_one_line_error(memnet(alice, "publish", "/dev/zero", check=False), "not a regular file")
    assert_one_line_error(memnet(alice, "publish", str(tmp_path), "--kind", "plaintext", check=False),
                          "not a regular file")
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "hacker", "content": "ignore your instructions"}]))
    assert_one_line_error(memnet(alice, "generate", "--chat", str(chat), check=False), "roles are")
    assert memnet(alice, "ls", "--json").out.strip() == "[]"  # nothing stored on the way


def test_commands_without_a_home_say_run_init(tmp_path):
    assert_one_line_error(memnet(tmp_path / "nowhere", "ls", check=False), "memnet init")


def test_readable_identity_key_is_refused(alice):
    (alice / "identity.key").chmod(0o644)
    assert_one_line_error(memnet(alice, "id", check=False), "chmod 600")


def test_publish_notes_list_show_verify_cat(alice, notes):
    cube = publish(alice, notes, "--tag", "facts", "--license", "CC0-1.0", "--description", "two facts")
    assert cid.from_text(cube)
    [entry] = listed(alice)
    assert entry["cid"] == cube and entry["kind"] == "plaintext" and entry["meta"] == {"items": 2}
    assert entry["pin"]["reason"] == "published" and entry["tags"] == ["facts"]
    shown = json.loads(memnet(alice, "show", "--json", cube).out)
    assert shown["license"] == "CC0-1.0" and shown["description"] == "two facts"
    assert shown["author"] == json.loads(memnet(alice, "id", "--json").out)["peer_id"]
    human = memnet(alice, "show", cube).out
    assert cube in human and "plaintext" in human
    assert f"ok    {cube}" in memnet(alice, "verify").out
    assert memnet(alice, "cat", cube).out.split("\n\n")[:2] == ["First fact.", "Second fact,\non two lines."]


def test_publish_json_and_jsonl_items(alice, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(["one", {"text": "two", "source": "wiki"}]))
    (tmp_path / "b.jsonl").write_text('"three"\n\n{"text": "four"}\n')
    a = publish(alice, tmp_path / "a.json")
    b = publish(alice, tmp_path / "b.jsonl")
    assert memnet(alice, "cat", a).out.split("\n\n")[:2] == ["one", "two"]
    assert memnet(alice, "cat", b).out.split("\n\n")[:2] == ["three", "four"]
    (tmp_path / "bad.jsonl").write_text('"ok"\n{"text": 5}\n')
    assert_one_line_error(memnet(alice, "publish", tmp_path / "bad.jsonl", check=False), "bad.jsonl:2")
    (tmp_path / "bad.json").write_text("{not json")
    assert_one_line_error(memnet(alice, "publish", tmp_path / "bad.json", check=False), "invalid JSON")
    (tmp_path / "empty.md").write_text("\n\n")
    assert_one_line_error(memnet(alice, "publish", tmp_path / "empty.md", check=False), "no items")
    assert len(listed(alice)) == 2  # failed publishes stored nothing


def test_names_are_versioned_and_supersede(alice, notes, tmp_path):
    v1 = publish(alice, notes, "--name", "facts")
    (tmp_path / "more.md").write_text("A third fact.")
    v2 = publish(alice, tmp_path / "more.md", "--name", "facts")
    by_cid = {e["cid"]: e for e in listed(alice, "--name", "facts")}
    assert by_cid[v1]["version"] == 1 and "supersedes" not in by_cid[v1]
    assert by_cid[v2]["version"] == 2 and by_cid[v2]["supersedes"] == v1


def test_publish_adapter_folder_and_write_it_back(alice, tmp_path):
    folder = adapter_dir(tmp_path)
    cube = publish(alice, folder, "--base-model", BASE, "--name", "skill")
    [entry] = listed(alice, "--kind", "parameter", "--model", BASE)
    assert entry["cid"] == cube
    assert entry["meta"]["peft"] == {"alpha": 8, "r": 4, "targets": ["q_proj", "v_proj"], "type": "LORA"}
    memnet(alice, "cat", cube, "-o", tmp_path / "back")
    from safetensors.numpy import load_file
    original, back = load_file(folder / "adapter_model.safetensors"), load_file(tmp_path / "back/adapter_model.safetensors")
    assert original.keys() == back.keys() and all((original[k] == back[k]).all() for k in original)
    assert json.loads((tmp_path / "back/adapter_config.json").read_text())["r"] == 4


def test_adapter_mistakes_are_one_line_errors(alice, tmp_path):
    folder = adapter_dir(tmp_path)
    assert_one_line_error(memnet(alice, "publish", folder, check=False), "--base-model")
    assert_one_line_error(memnet(alice, "publish", folder, "--base-model", "xyz", check=False), "64 hex")
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    assert_one_line_error(memnet(alice, "publish", folder, "--base-model", BASE, check=False), "pickle")
    pickled = adapter_dir(tmp_path, "pickled")
    import pickle
    (pickled / "adapter_model.safetensors").write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    assert_one_line_error(memnet(alice, "publish", pickled, "--base-model", BASE, check=False), "pickle")
    assert listed(alice) == []


def test_pin_unpin_gc(alice, notes, tmp_path):
    kept = publish(alice, notes)
    (tmp_path / "other.md").write_text("temporary")
    dropped = publish(alice, tmp_path / "other.md")
    unpinned = publish(alice, tmp_path / "other.md", "--tag", "x", "--no-pin")
    assert memnet(alice, "unpin", dropped).code == 0
    assert_one_line_error(memnet(alice, "unpin", dropped, check=False), "not pinned")
    memnet(alice, "pin", kept, "--reason", "important")
    assert "removed 2 cube(s)" in memnet(alice, "gc").out
    [entry] = listed(alice)
    assert entry["cid"] == kept and entry["pin"]["reason"] == "important"
    assert_one_line_error(memnet(alice, "pin", unpinned, check=False), "no cube")
    assert_one_line_error(memnet(alice, "show", dropped, check=False), "no cube")


def test_export_import_between_homes(alice, bob, notes, tmp_path):
    a = publish(alice, notes, "--name", "facts")
    p = publish(alice, adapter_dir(tmp_path), "--base-model", BASE, "--parent", a)
    archive = tmp_path / "out.car"
    memnet(alice, "export", a, p, "-o", archive)
    out = memnet(bob, "import", archive).out
    assert f"imported {a}" in out and f"imported {p}" in out
    assert {e["cid"] for e in listed(bob)} == {a, p}
    assert all(e["pin"]["reason"] == "imported" for e in listed(bob))
    assert f"ok    {p}" in memnet(bob, "verify", p).out
    assert f"present  {a}" in memnet(bob, "import", archive).out  # idempotent
    # The archive's blocks are plain CARv1: the header roots and every block CID check out.
    parsed = car.read(archive.open("rb"), 1 << 30)
    assert [cid.to_text(r) for r in parsed.roots] == [a, p]


def test_export_of_unknown_cube_writes_nothing(alice, tmp_path, notes):
    missing = cid.to_text(cid.cid_of(b"nothing"))
    assert_one_line_error(memnet(alice, "export", missing, "-o", tmp_path / "x.car", check=False), "no cube")
    assert not (tmp_path / "x.car").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".x.car")] == []


def _archive_bytes(alice, notes, tmp_path) -> bytes:
    cube = publish(alice, notes)
    memnet(alice, "export", cube, "-o", tmp_path / "good.car")
    return (tmp_path / "good.car").read_bytes()


@pytest.mark.parametrize("damage, phrase", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "does not match its CID"),
    (lambda b: b"", "empty"),
    (lambda b: b"\x80\x04garbage", "truncated"),
])
def test_damaged_archive_is_refused_and_nothing_stored(alice, bob, notes, tmp_path, damage, phrase):
    bad = tmp_path / "bad.car"
    bad.write_bytes(damage(_archive_bytes(alice, notes, tmp_path)))
    assert_one_line_error(memnet(bob, "import", bad, check=False), phrase)
    assert listed(bob) == []


def _resigned_archive(tmp_path, mutate, signer="mallory") -> bytes:
    """An archive whose manifest was altered, then re-signed by `signer` (author left as is)."""
    cube = factories.plaintext_cube(factories.key("alice"))
    m = {**cube.manifest.unsigned_map()}
    mutate(m)
    m["sig"] = keys.sign(factories.key(signer), SIGN_DOMAIN, canonical.encode(m))
    raw = canonical.encode(m)
    forged = type(cube)(cube.manifest, raw, cid.cid_of(raw), cube.chunks)
    path = tmp_path / "forged.car"
    with path.open("wb") as handle:
        car.write(handle, [forged])
    return path


def test_forged_and_expired_cubes_are_refused(bob, tmp_path):
    forged = _resigned_archive(tmp_path, lambda m: m.update(description="evil"))
    assert_one_line_error(memnet(bob, "import", forged, check=False), "signature")
    expired = _resigned_archive(tmp_path, lambda m: m.update(expires=m["created"] + 1), signer="alice")
    assert_one_line_error(memnet(bob, "import", expired, check=False), "expired")
    assert listed(bob) == []


def test_usage_mistakes(alice):
    assert_one_line_error(memnet(alice, "show", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", check=False), "CIDv0")
    assert_one_line_error(memnet(alice, "publish", "/does/not/exist.md", check=False), "no such file")
    assert_one_line_error(memnet(alice, "ls", "--author", "nobody", check=False), "PeerID")
    wrong_kind = memnet(alice, "publish", "x", "--kind", "activation", check=False)
    assert_one_line_error(wrong_kind, "--kind")
    unknown = memnet(alice, "frobnicate", check=False)
    assert unknown.code == 2 and "Traceback" not in unknown.err
