"""Sealed (private) cubes: recipient keys, the seal construction, sealed manifests, publishing and
reading on a real store, the CLI, the golden vectors (protocol/vectors/sealed.json), and a real
swarm in which a provider that is not a recipient stores, verifies and serves a private cube."""

from __future__ import annotations

import base64
import json
import signal
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from memnet import home as home_mod
from memnet import local
from memnet.cube import build, canonical, cid, keys, limits, manifest, payloads, sealed
from memnet.errors import (CIDError, FormatError, LimitError, PolicyError, SealError, SignatureError,
                           UsageError)
from tests import factories
from tests.cli_helpers import assert_one_line_error, memnet
from tests.swarm_helpers import Swarm, stored, tamper
from tests.test_golden_vectors import load, raises_exactly, unrender

ALICE, BOB, CAROL = factories.key("alice"), factories.key("bob"), factories.key("carol")
TEXTS = ("the launch code is 0000", "do not tell the providers")


def recipient(identity: Ed25519PrivateKey) -> keys.Recipient:
    return keys.recipient_of(identity)


def sealed_plaintext(readers=(ALICE,), texts=TEXTS, author=ALICE, **kw) -> build.Cube:
    items = [{"text": t} for t in texts]
    return build.build(author, "plaintext", payloads.encode_items(items), {"items": len(items)},
                       created=factories.FIXED_CREATED, chunk_size=1024,
                       recipients=[recipient(k) for k in readers], **kw)


def reopen(cube: build.Cube, identity: Ed25519PrivateKey) -> bytes:
    verified = build.verify(cube.manifest_bytes, cube.cube_id, cube.chunks.get, check_expiry=False)
    return build.open_payload(verified.manifest, verified.payload(), identity)


# -- recipient keys ------------------------------------------------------------------------------

def test_x25519_key_is_derived_from_the_identity_and_differs_per_node():
    one = keys.x25519_key(ALICE).private_bytes_raw()
    assert one == keys.x25519_key(factories.key("alice")).private_bytes_raw()  # no key file needed
    assert one != keys.x25519_key(BOB).private_bytes_raw()
    assert one != ALICE.private_bytes_raw()  # the signing secret is never the DH secret


def test_recipient_string_round_trip_names_the_peer():
    r = recipient(BOB)
    text = r.text()
    assert text.startswith(keys.peer_id(keys.public_bytes(BOB)) + ":")
    assert keys.parse_recipient(text) == r
    assert keys.parse_recipient(f"  {text.upper().replace(r.peer_id.upper(), r.peer_id)}\n") == r


def test_forged_recipient_string_is_refused():
    bob, carol = recipient(BOB), recipient(CAROL)
    forged = keys.Recipient(bob.author, carol.x25519, carol.sig).text()  # Bob's name, Carol's key
    with pytest.raises(SignatureError, match="not signed by"):
        keys.parse_recipient(forged)
    flipped = bytearray(bob.x25519)
    flipped[0] ^= 1
    with pytest.raises(SignatureError):
        keys.parse_recipient(keys.Recipient(bob.author, bytes(flipped), bob.sig).text())


@pytest.mark.parametrize("text, phrase", [
    ("", "expected PEERID:KEY"),
    ("12D3KooWQCkBm1BYtkHpocxCwMgR8yjitEeHGx8spzcDLGt2gkBm", "expected PEERID:KEY"),
    ("a:b:c", "expected PEERID:KEY"),
    ("notapeer:aaaa", "PeerID"),
    ("x" * 600, "at most 512"),
])
def test_malformed_recipient_strings_are_refused(text, phrase):
    with pytest.raises(FormatError, match=phrase):
        keys.parse_recipient(text)


def test_recipient_key_of_wrong_length_or_alphabet_is_refused():
    r = recipient(BOB)
    head, code = r.text().split(":")
    short = base64.b32encode(r.x25519 + r.sig[:-1]).decode().rstrip("=").lower()
    for bad, phrase in ((f"{head}:{short}", "has 95 bytes"), (f"{head}:{code[:-1]}", "base32"),
                        (f"{head}:{code[:-5]}!!!!!", "base32"), (f"{head}:", "has 0 bytes")):
        with pytest.raises(FormatError, match=phrase):
            keys.parse_recipient(bad)
    with pytest.raises(UsageError, match="base32"):  # what publish --to reports, one line
        local.parse_recipients([f"{head}:{code[:-1]}"])


# -- the construction ----------------------------------------------------------------------------

def test_round_trip_one_recipient():
    cube = sealed_plaintext(readers=[ALICE])
    assert cube.manifest.recipients == [keys.public_bytes(ALICE)]
    assert payloads.decode_items(reopen(cube, ALICE)) == [{"text": t} for t in TEXTS]


def test_round_trip_several_recipients_each_reads_the_same_payload():
    cube = sealed_plaintext(readers=[ALICE, BOB, CAROL])
    opened = {reopen(cube, k) for k in (ALICE, BOB, CAROL)}
    assert opened == {payloads.encode_items([{"text": t} for t in TEXTS])}
    tos = [e["to"] for e in cube.manifest.seal["recipients"]]
    assert tos == sorted(tos) and len(tos) == 3


def test_ciphertext_does_not_contain_the_payload_and_providers_see_only_ciphertext():
    cube = sealed_plaintext(readers=[BOB])
    stored_bytes = cube.payload()
    assert b"launch code" not in stored_bytes and b"launch code" not in cube.manifest_bytes
    assert cube.manifest.size == len(stored_bytes) == sealed.sealed_size(len(reopen(cube, BOB)))


def test_non_recipient_cannot_open_even_with_ciphertext_and_manifest():
    cube = sealed_plaintext(readers=[ALICE, BOB])
    verified = build.verify(cube.manifest_bytes, cube.cube_id, cube.chunks.get, check_expiry=False)
    with pytest.raises(PolicyError, match="this node is not one of its recipients"):
        build.open_payload(verified.manifest, verified.payload(), CAROL)
    # and pretending to be Bob (his "to") with Carol's X25519 key fails authentication
    bob_entry = next(e for e in cube.manifest.seal["recipients"] if e["to"] == keys.public_bytes(BOB))
    carol_as_bob = {**cube.manifest.seal, "recipients": [{**bob_entry, "to": keys.public_bytes(CAROL)}]}
    with pytest.raises(SealError, match="does not open"):
        sealed.open_sealed(cube.payload(), carol_as_bob, kind="plaintext", author=keys.public_bytes(ALICE),
                           identity=CAROL)


@pytest.mark.parametrize("size", [0, 1, sealed.SEGMENT - 1, sealed.SEGMENT, sealed.SEGMENT + 1,
                                  2 * sealed.SEGMENT, 2 * sealed.SEGMENT + 17])
def test_segment_boundaries_round_trip_and_sizes_invert(size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ciphertext, seal_map = sealed.seal(payload, [recipient(BOB)], kind="parameter", author=b"a" * 32)
    assert len(ciphertext) == sealed.sealed_size(size)
    assert sealed.plaintext_size(len(ciphertext)) == size
    assert sealed.open_sealed(ciphertext, seal_map, kind="parameter", author=b"a" * 32, identity=BOB) == payload


def test_segments_cannot_be_dropped_reordered_or_truncated():
    payload = bytes(3 * sealed.SEGMENT)
    ciphertext, seal_map = sealed.seal(payload, [recipient(BOB)], kind="plaintext", author=b"a" * 32)
    step = sealed.SEGMENT + sealed.TAG
    segs = [ciphertext[i:i + step] for i in range(0, len(ciphertext), step)]
    for bad in (segs[0] + segs[1],            # last segment dropped: segment 1 lacks the last flag
                segs[1] + segs[0] + segs[2],  # reordered: nonces are per index
                ciphertext[:-1]):             # truncated inside the tag
        with pytest.raises(SealError):
            sealed.open_sealed(bad, seal_map, kind="plaintext", author=b"a" * 32, identity=BOB)


@pytest.mark.parametrize("size", [1, 15, sealed.SEGMENT + sealed.TAG + 5, 2 * (sealed.SEGMENT + sealed.TAG) + 16])
def test_lengths_no_sealing_produces_are_refused(size):
    with pytest.raises(SealError, match="not the length of a sealed payload"):
        sealed.plaintext_size(size)


def test_fresh_secrets_per_cube():
    one, two = sealed_plaintext(readers=[BOB]), sealed_plaintext(readers=[BOB])
    assert one.cube_id != two.cube_id and one.manifest.seal["epk"] != two.manifest.seal["epk"]


def test_recipient_limits_and_conflicts():
    many = [recipient(factories.key(f"peer{i}")) for i in range(limits.MAX_RECIPIENTS + 1)]
    with pytest.raises(LimitError, match="the limit is 64"):
        sealed.seal(b"x", many, kind="plaintext", author=b"a" * 32)
    _, seal_map = sealed.seal(b"x", many[:limits.MAX_RECIPIENTS], kind="plaintext", author=b"a" * 32)
    assert len(seal_map["recipients"]) == limits.MAX_RECIPIENTS
    with pytest.raises(FormatError, match="at least one recipient"):
        sealed.seal(b"x", [], kind="plaintext", author=b"a" * 32)
    bob = recipient(BOB)
    _, once = sealed.seal(b"x", [bob, bob], kind="plaintext", author=b"a" * 32)
    assert len(once["recipients"]) == 1
    with pytest.raises(FormatError, match="two different keys"):
        sealed.seal(b"x", [bob, replace(bob, x25519=recipient(CAROL).x25519)], kind="plaintext", author=b"a" * 32)


def test_activation_cubes_cannot_be_sealed():
    meta, payload = factories.kv_meta_and_payload()
    with pytest.raises(FormatError, match="prefix keys"):
        build.build(ALICE, "activation", payload, meta, recipients=[recipient(ALICE)])


def test_sealed_parameter_cube_round_trip():
    public = factories.parameter_cube()
    sealed_cube = factories.parameter_cube(recipients=[recipient(BOB)])
    assert reopen(sealed_cube, BOB) == public.payload()
    assert sealed_cube.manifest.meta == public.manifest.meta  # meta stays readable (and leaks)


# -- manifest, verification and the CID -----------------------------------------------------------

def test_cid_covers_the_ciphertext():
    cube = sealed_plaintext(readers=[BOB], texts=("x" * 3000,))
    assert len(cube.manifest.chunks) > 1
    first = cube.manifest.chunks[0]
    assert first == cid.cid_of(cube.payload()[:1024])  # chunks hash ciphertext
    chunks = dict(cube.chunks)
    data = bytes(chunks[first])
    chunks[first] = bytes([data[0] ^ 1]) + data[1:]
    with pytest.raises(CIDError):
        build.verify(cube.manifest_bytes, cube.cube_id, chunks.get)


def test_verify_checks_a_sealed_cube_without_a_key_and_open_checks_the_payload():
    # an author who seals garbage: providers can only check chunks; the recipient finds out
    garbage = canonical.encode({"notes": ["not the plaintext payload format"]})
    ciphertext, seal_map = sealed.seal(garbage, [recipient(BOB)], kind="plaintext", author=keys.public_bytes(ALICE))
    m = manifest.Manifest(kind="plaintext", author=keys.public_bytes(ALICE), created=factories.FIXED_CREATED,
                          size=len(ciphertext), chunk_size=1024, chunks=(cid.cid_of(ciphertext),),
                          meta={"items": 1}, seal=seal_map).sign(ALICE)
    data = m.encode()
    verified = build.verify(data, cid.cid_of(data), {cid.cid_of(ciphertext): ciphertext}.get)
    with pytest.raises(FormatError, match="plaintext payload"):
        build.open_payload(verified.manifest, verified.payload(), BOB)


def test_sealed_manifest_round_trips_and_the_seal_is_signed():
    cube = sealed_plaintext(readers=[ALICE, BOB])
    decoded = manifest.decode(cube.manifest_bytes, cube.cube_id)
    assert decoded == cube.manifest and decoded.seal == cube.manifest.seal
    raw = canonical.decode(cube.manifest_bytes, limits.MAX_MANIFEST)
    raw["seal"] = {**raw["seal"], "recipients": raw["seal"]["recipients"][:1]}  # drop a reader
    with pytest.raises(SignatureError):
        manifest.decode(canonical.encode(raw))


def resigned(cube: build.Cube, **changes) -> bytes:
    unsigned = {k: v for k, v in canonical.decode(cube.manifest_bytes, limits.MAX_MANIFEST).items() if k != "sig"}
    unsigned.update(changes)
    return canonical.encode({**unsigned, "sig": ALICE.sign(manifest.SIGN_DOMAIN + canonical.encode(unsigned))})


@pytest.mark.parametrize("change, error, phrase", [
    (lambda s: {**s, "recipients": s["recipients"] * 2}, SealError, "sorted"),
    (lambda s: {**s, "recipients": [{**s["recipients"][0], "key": s["recipients"][0]["key"][:-1]}]},
     SealError, "48 bytes"),
    (lambda s: {**s, "recipients": [{"to": bytes([i]) * 32, "key": bytes(48)} for i in range(65)]},
     LimitError, "limit is 64"),
    (lambda s: {**s, "epk": s["epk"] + b"\x00"}, SealError, "32 bytes"),
    (lambda s: {k: v for k, v in s.items() if k != "epk"}, SealError, "lacks epk"),
    (lambda s: {**s, "note": "x"}, SealError, "unknown field"),
    (lambda s: {**s, "alg": "none"}, SealError, "not supported"),
    (lambda s: "sealed", SealError, "must be a map"),
    (lambda s: {**s, "recipients": [[1, 2]]}, SealError, "must be a map"),
])
def test_malformed_seal_maps_are_refused_after_a_valid_signature(change, error, phrase):
    cube = sealed_plaintext(readers=[BOB])
    with pytest.raises(error, match=phrase):
        manifest.decode(resigned(cube, seal=change(cube.manifest.seal)))


def test_oversized_sealed_plaintext_is_refused_on_its_opened_size():
    cube = sealed_plaintext(readers=[BOB])
    size = sealed.sealed_size(limits.MAX_PLAINTEXT_PAYLOAD + 1)
    chunks = [cube.manifest.chunks[0]] * -(-size // (4 << 20))
    with pytest.raises(LimitError, match="plaintext payload"):
        manifest.decode(resigned(cube, size=size, chunk_size=4 << 20, chunks=chunks))


# -- the golden vectors --------------------------------------------------------------------------

VECTORS = load("sealed.json")


@pytest.mark.parametrize("case", VECTORS["recipient_keys"], ids=lambda c: c["name"])
def test_vector_recipient_keys(case):
    identity = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(case["private_seed"]))
    assert keys.x25519_key(identity).private_bytes_raw().hex() == case["x25519_private"]
    r = keys.parse_recipient(case["recipient"])
    assert (r.x25519.hex(), r.sig.hex(), r.peer_id) == (case["x25519_public"], case["signature"], case["peer_id"])
    assert keys.recipient_of(identity).text() == case["recipient"]


def vector_payload(case: dict) -> bytes:
    inputs = case["inputs"]
    if "payload" in inputs:
        return bytes.fromhex(inputs["payload"])
    if "items_recipe" in inputs:
        return payloads.encode_items([{"text": "0123456789abcdef" * 8192}])
    parameter = next(c for c in load("cubes.json")["cases"] if c["name"] == "parameter")
    return bytes.fromhex(parameter["inputs"]["payload"])


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_vector_sealed_cubes_rebuild_byte_for_byte(case):
    import hashlib

    inputs, expected = case["inputs"], case["expected"]
    payload = vector_payload(case)
    assert hashlib.sha256(payload).hexdigest() == inputs["payload_sha256"]
    golden = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(load("keys.json")["cases"][0]["private_seed"]))
    secrets = sealed.Secrets(bytes.fromhex(inputs["content_key"]), bytes.fromhex(inputs["ephemeral_private"]))
    cube = build.build(golden, inputs["kind"], payload, unrender(inputs["meta"], top=("meta",)),
                       chunk_size=inputs["chunk_size"], created=inputs["created"],
                       recipients=[keys.parse_recipient(t) for t in inputs["recipients"]], secrets=secrets)
    ciphertext = cube.payload()
    assert hashlib.sha256(ciphertext).hexdigest() == expected["ciphertext_sha256"]
    assert ciphertext[-64:].hex() == expected["ciphertext_tail"]
    if "ciphertext" in expected:
        assert ciphertext.hex() == expected["ciphertext"]
    assert cube.manifest_bytes.hex() == expected["manifest"]
    assert cid.to_text(cube.cube_id) == expected["cube_id"]
    assert [cid.to_text(c) for c in cube.manifest.chunks] == expected["chunks"]
    assert canonical.decode(cube.manifest_bytes, limits.MAX_MANIFEST) == unrender(expected["manifest_json"])
    # a reader following MIP section 19 by hand reaches the same intermediate values
    assert sealed._hkdf(secrets.content_key, sealed.PAYLOAD_INFO).hex() == expected["payload_key"]
    assert cube.manifest.seal["commit"].hex() == expected["commit"]
    for text in inputs["recipients"]:
        r = keys.parse_recipient(text)
        identity = next(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["private_seed"]))
                        for k in VECTORS["recipient_keys"] if k["peer_id"] == r.peer_id)
        mine = keys.x25519_key(identity)
        assert sealed._wrap_key(mine, cube.manifest.seal["epk"], cube.manifest.seal["epk"], r.x25519).hex() \
            == expected["wrap_keys"][r.peer_id]
        assert build.open_payload(cube.manifest, ciphertext, identity) == payload


@pytest.mark.parametrize("case", VECTORS["openings"], ids=lambda c: c["name"])
def test_vector_openings(case):
    reader = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(case["reader_seed"]))
    args = (bytes.fromhex(case["ciphertext"]), unrender(case["seal"], top=("seal",)))
    kwargs = dict(kind=case["kind"], author=bytes.fromhex(case["author"]), identity=reader)
    if case["error"] is None:
        assert sealed.open_sealed(*args, **kwargs) == bytes.fromhex(VECTORS["cases"][0]["inputs"]["payload"])
    else:
        raises_exactly(case["error"], sealed.open_sealed, *args, **kwargs)


@pytest.mark.parametrize("case", VECTORS["invalid_manifests"], ids=lambda c: c["name"])
def test_vector_invalid_sealed_manifests(case):
    raises_exactly(case["error"], manifest.decode, bytes.fromhex(case["manifest"]))


def test_vector_sealed_manifests_validate_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from tests.test_golden_vectors import SCHEMA

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    for case in VECTORS["cases"]:
        validator.validate(case["expected"]["manifest_json"])
    kv = next(c for c in load("cubes.json")["cases"] if c["name"].startswith("activation"))
    sealed_kv = {**kv["expected"]["manifest_json"], "seal": VECTORS["cases"][0]["expected"]["seal"]}
    assert not validator.is_valid(sealed_kv)


# -- a node: publish and read ---------------------------------------------------------------------

@pytest.fixture
def nodes(tmp_path):
    made = {name: home_mod.init(tmp_path / name) for name in ("alice", "bob", "carol")}
    yield made
    for node in made.values():
        node.store.close()


def publish_text(node, *texts, recipients=None):
    items = [{"text": t} for t in texts]
    return node.publisher.publish("plaintext", payloads.encode_items(items), {"items": len(items)},
                         recipients=recipients)


def test_publish_private_then_read_as_author_recipient_and_stranger(nodes):
    alice, bob, carol = nodes["alice"], nodes["bob"], nodes["carol"]
    cube = publish_text(alice, "for bob only", recipients=[keys.recipient_of(bob.key).text()])
    assert set(cube.manifest.recipients) == {alice.author, bob.author}  # the author always reads
    assert payloads.decode_items(alice.publisher.read_payload(cube.cube_id)) == [{"text": "for bob only"}]
    bob.store.put(alice.store.verify(cube.cube_id))  # as a fetch would: verified without a key
    carol.store.put(bob.store.verify(cube.cube_id))
    assert payloads.decode_items(bob.publisher.read_payload(cube.cube_id)) == [{"text": "for bob only"}]
    with pytest.raises(PolicyError, match="not one of its recipients"):
        carol.publisher.read_payload(cube.cube_id)
    assert carol.store.verify(cube.cube_id).cube_id == cube.cube_id  # carol still stores and checks it


def test_private_means_only_me_and_public_stays_readable(nodes):
    alice, bob = nodes["alice"], nodes["bob"]
    mine = publish_text(alice, "diary", recipients=[])
    assert mine.manifest.recipients == [alice.author]
    public = publish_text(alice, "hello world")
    assert public.manifest.seal is None
    for cube in (mine, public):
        bob.store.put(alice.store.verify(cube.cube_id))
    assert payloads.decode_items(bob.publisher.read_payload(public.cube_id)) == [{"text": "hello world"}]
    with pytest.raises(PolicyError):
        bob.publisher.read_payload(mine.cube_id)


def test_bad_recipient_publishes_nothing(nodes):
    alice = nodes["alice"]
    forged = keys.Recipient(nodes["bob"].author, keys.recipient_of(nodes["carol"].key).x25519,
                            keys.recipient_of(nodes["carol"].key).sig).text()
    with pytest.raises(UsageError, match="not signed by"):
        publish_text(alice, "x", recipients=[forged])
    assert alice.store.entries() == []


def test_tampered_stored_ciphertext_is_caught_on_opening(tmp_path):
    alice = home_mod.init(tmp_path / "alice")
    cube = publish_text(alice, "private words", recipients=[])
    alice.store.close()
    chunk_id = cube.manifest.chunks[0]
    data = stored(alice.home)[chunk_id]
    tamper(alice.home, "chunks", chunk_id, data[:5] + bytes([data[5] ^ 1]) + data[6:])
    again = home_mod.open_node(alice.home)
    try:
        with pytest.raises(SealError, match="altered"):
            again.publisher.read_payload(cube.cube_id)
        with pytest.raises(CIDError):
            again.store.verify(cube.cube_id)
    finally:
        again.store.close()


# -- the command line ------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_private_publish_show_ls_cat(tmp_path):
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    memnet(alice, "init")
    memnet(bob, "init")
    bob_id = json.loads(memnet(bob, "id", "--json").out)
    assert keys.parse_recipient(bob_id["recipient"]).peer_id == bob_id["peer_id"]
    assert bob_id["recipient"] in memnet(bob, "id").out
    notes = tmp_path / "notes.md"
    notes.write_text("only for bob\n\nand me\n")
    published = memnet(alice, "publish", notes, "--to", bob_id["recipient"])
    assert "private to 2 recipient(s)" in published.err
    cube = published.out.strip()
    shown = json.loads(memnet(alice, "show", "--json", cube).out)
    assert shown["visibility"] == "private" and bob_id["peer_id"] in shown["recipients"]
    assert bob_id["peer_id"] in memnet(alice, "show", cube).out
    assert "plaintext (private)" in memnet(alice, "ls").out
    assert memnet(alice, "cat", cube).out.split("\n\n")[:2] == ["only for bob", "and me"]
    assert memnet(alice, "verify", cube).out.startswith("ok ")  # opened and checked: alice can read it

    memnet(alice, "export", cube, "-o", tmp_path / "x.car")
    memnet(bob, "import", tmp_path / "x.car")
    assert memnet(bob, "cat", cube).out.startswith("only for bob")

    mine = json.loads(memnet(alice, "show", "--json", memnet(alice, "publish", notes, "--private").out.strip()).out)
    assert mine["recipients"] == [json.loads(memnet(alice, "id", "--json").out)["peer_id"]]

    bad = bob_id["recipient"][:-3]
    assert_one_line_error(memnet(alice, "publish", notes, "--to", bad, check=False), "recipient key")
    assert_one_line_error(memnet(alice, "publish", notes, "--to", bob_id["peer_id"], check=False), "PEERID:KEY")
    assert_one_line_error(memnet(alice, "publish", notes, "--private", "--to", bob_id["recipient"], check=False),
                          "--private")


# -- a real swarm ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(90)
def test_provider_that_is_not_a_recipient_stores_verifies_and_serves(tmp_path):
    """A seals a cube to C; B (no key) fetches, verifies and provides it; A goes away; C fetches
    it from B and reads it; B cannot."""
    swarm = Swarm(tmp_path)
    try:
        c_home = swarm.home("c")
        to_c = json.loads(memnet(c_home, "id", "--json").out)["recipient"]
        notes = tmp_path / "notes.md"
        notes.write_text("meet at the old mill\n\nbring the map\n")
        a = swarm.start("a")
        b = swarm.start("b", bootstrap=[a])
        cube = a.cli("publish", notes, "--to", to_c).out.strip()

        got_b = b.cli("get", cube)
        assert "fetched" in got_b.err and a.peer_id[-8:] in got_b.err
        assert "payload unreadable here" in b.cli("verify", cube).out  # chunks and signature checked
        assert b"meet at the old mill" not in b"".join(stored(b.home).values())  # B holds ciphertext only
        assert_one_line_error(b.cli("cat", cube, check=False), "not one of its recipients")

        a.stop(signal.SIGTERM)
        c = swarm.start("c", bootstrap=[b])
        got_c = c.cli("get", cube)
        assert b.peer_id[-8:] in got_c.err, got_c.err  # served by the provider that cannot read it
        assert c.cli("cat", cube).out.split("\n\n")[:2] == ["meet at the old mill", "bring the map"]
    finally:
        swarm.close()
