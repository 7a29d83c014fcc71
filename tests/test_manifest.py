"""The signed manifest (memnet/cube/manifest.py, meta.py) and cube verification (build.verify):
round trips for every kind, then every way a manifest from a peer can be wrong."""

from __future__ import annotations

import struct

import msgpack
import pytest

from memnet.cube import build, canonical, cid, keys, limits, manifest, payloads
from memnet.cube.manifest import Manifest
from memnet.errors import (
    CanonicalError, CIDError, FormatError, LimitError, PolicyError, SignatureError,
)
from tests import factories

ALICE, BOB = factories.key("alice"), factories.key("bob")
ALICE_PUB, BOB_PUB = keys.public_bytes(ALICE), keys.public_bytes(BOB)
KINDS = {
    "plaintext": factories.plaintext_cube,
    "parameter": factories.parameter_cube,
    "activation": factories.activation_cube,
}
SOME_CID = cid.cid_of(b"some other cube")


@pytest.fixture(scope="module", params=sorted(KINDS))
def cube(request):
    return KINDS[request.param]()


@pytest.fixture(scope="module")
def plain():
    return factories.plaintext_cube()


def as_map(data: bytes) -> dict:
    return canonical.decode(data, limits.MAX_MANIFEST)


def unsigned(c) -> dict:
    m = as_map(c.manifest_bytes)
    del m["sig"]
    return m


def sign_map(m: dict, key=ALICE) -> bytes:
    """Canonical bytes of m with a valid signature by key (whatever m holds)."""
    m = {k: v for k, v in m.items() if k != "sig"}
    return canonical.encode({**m, "sig": keys.sign(key, manifest.SIGN_DOMAIN, canonical.encode(m))})


def decode(data: bytes) -> Manifest:
    return manifest.decode(data, cid.cid_of(data))


def refused(m: dict, error: type, phrase: str, key=ALICE) -> None:
    """A properly signed manifest map that must still be refused, with error and phrase."""
    data = sign_map(m, key)
    with pytest.raises(error) as info:
        decode(data)
    assert phrase in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


# -- round trips -----------------------------------------------------------------------------------

def test_round_trip(cube):
    m = manifest.decode(cube.manifest_bytes, cube.cube_id)
    assert m == cube.manifest
    assert m.sig == cube.manifest.sig
    assert m.encode() == cube.manifest_bytes
    assert m.cube_id == cube.cube_id == cid.cid_of(cube.manifest_bytes)
    assert m.author == ALICE_PUB
    assert m.created == factories.FIXED_CREATED
    assert m.size == sum(len(cube.chunks[c]) for c in m.chunks)
    # the unsigned map is exactly what was signed
    keys.verify(m.author, manifest.SIGN_DOMAIN, canonical.encode(m.unsigned_map()), m.sig)
    assert m.signing_bytes() == manifest.SIGN_DOMAIN + canonical.encode(unsigned(cube))
    again = build.verify(cube.manifest_bytes, cube.cube_id, cube.chunks.get)
    assert again.payload() == cube.payload()
    assert again.manifest == cube.manifest


def test_round_trip_with_every_optional_field():
    c = factories.plaintext_cube(
        name="notes/sky.v2", version=3, supersedes=SOME_CID, parents=[SOME_CID, cid.cid_of(b"p")],
        expires=factories.FIXED_CREATED + 10**9, license="CC-BY-4.0", tags=("sky", "color", "a:b"),
        description="what colour the sky is", recipients=[keys.recipient_of(factories.key())],
    )
    m = decode(c.manifest_bytes)
    assert m == c.manifest
    assert m.tags == ("a:b", "color", "sky")          # signed sorted, and built sorted too
    assert m.parents == (SOME_CID, cid.cid_of(b"p"))  # order kept
    assert m.encode() == c.manifest_bytes
    assert set(as_map(c.manifest_bytes)) == set(manifest.REQUIRED) | set(manifest.OPTIONAL) | {"sig"}


def test_optional_fields_are_omitted_not_empty(plain):
    m = as_map(plain.manifest_bytes)
    assert set(m) == set(manifest.REQUIRED) | {"sig"}


def test_multi_chunk_cube_with_repeated_chunks():
    c = factories.plaintext_cube(texts=("a" * 5000, "b" * 3000), chunk_size=1024)
    m = c.manifest
    assert len(m.chunks) == -(-m.size // 1024) > 1
    assert len(set(m.chunks)) < len(m.chunks)  # runs of "a" make identical chunks, stored once
    assert len(c.chunks) == len(set(m.chunks))
    fetched = []

    def get(chunk_id):
        fetched.append(chunk_id)
        return memoryview(bytes(c.chunks[chunk_id]))

    again = build.verify(c.manifest_bytes, c.cube_id, get)
    assert sorted(fetched) == sorted(set(m.chunks))  # each distinct chunk fetched once
    assert payloads.decode_items(again.payload(), 2)[0]["text"] == "a" * 5000


# -- authenticity ----------------------------------------------------------------------------------

def test_forged_signature(cube):
    m = as_map(cube.manifest_bytes)
    for i in (0, 40, 63):
        sig = bytearray(m["sig"])
        sig[i] ^= 0x01
        data = canonical.encode({**m, "sig": bytes(sig)})
        with pytest.raises(SignatureError, match="does not verify"):
            decode(data)


def test_resigned_by_another_key_author_unchanged(cube):
    data = sign_map(unsigned(cube), BOB)
    assert as_map(data)["author"] == ALICE_PUB
    with pytest.raises(SignatureError, match="does not verify"):
        decode(data)


def test_author_swapped(cube):
    m = as_map(cube.manifest_bytes)
    data = canonical.encode({**m, "author": BOB_PUB})
    with pytest.raises(SignatureError, match="does not verify"):
        decode(data)
    # re-signed by the new author it is a valid, different cube
    other = decode(sign_map({**unsigned(cube), "author": BOB_PUB}, BOB))
    assert other.author == BOB_PUB and other.cube_id != cube.cube_id


def test_signature_field_malformed(plain):
    m = as_map(plain.manifest_bytes)
    for sig in (m["sig"][:-1], m["sig"] + b"\x00", "x" * 64):
        with pytest.raises(FormatError, match="64-byte signature"):
            decode(canonical.encode({**m, "sig": sig}))
    with pytest.raises(FormatError, match="64-byte signature"):
        decode(canonical.encode(unsigned(plain)))
    with pytest.raises(FormatError, match="32-byte Ed25519"):
        decode(canonical.encode({**m, "author": ALICE_PUB[:-1]}))


def test_signing_with_a_key_that_is_not_the_author(plain):
    with pytest.raises(SignatureError, match="not the manifest's author"):
        plain.manifest.sign(BOB)
    unsigned_manifest = Manifest(**{**plain.manifest.__dict__, "sig": None})
    with pytest.raises(FormatError, match="not signed"):
        unsigned_manifest.encode()


def test_hash_must_equal_the_expected_cid(cube, plain):
    with pytest.raises(CIDError, match="does not match"):
        manifest.decode(cube.manifest_bytes, SOME_CID)
    other = factories.plaintext_cube(texts=("something else",))
    with pytest.raises(CIDError):
        manifest.decode(plain.manifest_bytes, other.cube_id)
    # without an expected CID the bytes still authenticate themselves by signature
    assert manifest.decode(cube.manifest_bytes) == cube.manifest


# -- encoding --------------------------------------------------------------------------------------

def test_keys_reordered(plain):
    m = as_map(plain.manifest_bytes)
    data = msgpack.packb(dict(reversed(list(m.items()))), use_bin_type=True)
    assert sorted(data) == sorted(plain.manifest_bytes)
    with pytest.raises(CanonicalError, match="canonical form"):
        decode(data)


def test_non_minimal_int(plain):
    created = struct.pack(">I", factories.FIXED_CREATED)
    assert plain.manifest_bytes.count(b"\xce" + created) == 1  # uint32 is minimal for it
    data = plain.manifest_bytes.replace(b"\xce" + created, b"\xcf\x00\x00\x00\x00" + created)
    with pytest.raises(CanonicalError, match="canonical form"):
        decode(data)


def test_duplicate_keys(plain):
    m = as_map(plain.manifest_bytes)
    body = plain.manifest_bytes
    assert body[0] == 0x80 | len(m)  # a fixmap
    duplicated = bytes([body[0] + 1]) + body[1:] + canonical.encode("sig") + canonical.encode(m["sig"])
    with pytest.raises(CanonicalError, match="duplicate map key 'sig'"):
        decode(duplicated)


def test_trailing_bytes(plain):
    data = plain.manifest_bytes + b"\x00"
    with pytest.raises(CanonicalError, match="trailing bytes"):
        decode(data)
    # asked for by the original id, the hash check comes first
    with pytest.raises(CIDError):
        manifest.decode(data, plain.cube_id)


def test_not_a_map():
    with pytest.raises(FormatError, match="must be a map"):
        decode(canonical.encode([1, 2, 3]))
    with pytest.raises(CanonicalError):
        decode(b"")


def test_oversized_manifest_refused_before_parsing(plain):
    junk = b"\xc1" * (limits.MAX_MANIFEST + 1)  # not even msgpack
    with pytest.raises(LimitError, match="limit"):
        manifest.decode(junk, plain.cube_id)     # not a CIDError: the size cap is checked first
    with pytest.raises(LimitError):
        manifest.decode(junk)
    padded = plain.manifest_bytes + b"\x00" * (limits.MAX_MANIFEST + 1 - len(plain.manifest_bytes))
    with pytest.raises(LimitError):
        manifest.decode(padded, cid.cid_of(padded))


# -- fields ----------------------------------------------------------------------------------------

def test_fields_at_their_limits_are_accepted(plain):
    m = {**unsigned(plain), "name": "n" * limits.MAX_NAME, "version": 1,
         "description": "d" * limits.MAX_DESCRIPTION, "license": "l" * limits.MAX_LICENSE,
         "tags": sorted(f"{i:02d}" + "t" * (limits.MAX_TAG - 2) for i in range(limits.MAX_TAGS)),
         "parents": [cid.cid_of(bytes([i])) for i in range(limits.MAX_PARENTS)]}
    got = decode(sign_map(m))
    assert len(got.tags) == limits.MAX_TAGS and len(got.parents) == limits.MAX_PARENTS


@pytest.mark.parametrize("field, value, phrase", [
    ("name", "n" * (limits.MAX_NAME + 1), "name is longer"),
    ("name", "\u00e9" * (limits.MAX_NAME // 2 + 1), "name is longer"),   # bytes, not characters
    ("description", "d" * (limits.MAX_DESCRIPTION + 1), "description is longer"),
    ("license", "l" * (limits.MAX_LICENSE + 1), "license is longer"),
    ("tags", [f"t{i:03d}" for i in range(limits.MAX_TAGS + 1)], "tags, the limit"),
    ("tags", ["t" * (limits.MAX_TAG + 1)], "tag is longer"),
    ("parents", [cid.cid_of(bytes([i])) for i in range(limits.MAX_PARENTS + 1)], "parents has"),
])
def test_oversized_fields(plain, field, value, phrase):
    m = {**unsigned(plain), field: value}
    if field == "name":
        m["version"] = 1
    refused(m, LimitError, phrase)


def test_oversized_fields_refused_when_building():
    with pytest.raises(LimitError, match="name is longer"):
        factories.plaintext_cube(name="n" * (limits.MAX_NAME + 1), version=1)
    with pytest.raises(LimitError, match="tags"):
        factories.plaintext_cube(tags=tuple(f"t{i:03d}" for i in range(limits.MAX_TAGS + 1)))


def test_too_many_chunks(plain):
    chunk_size = limits.MIN_CHUNK_SIZE
    m = {**unsigned(plain), "chunk_size": chunk_size, "size": limits.MAX_CHUNKS * chunk_size,
         "chunks": [SOME_CID] * (limits.MAX_CHUNKS + 1)}
    refused(m, LimitError, f"chunks has {limits.MAX_CHUNKS + 1} entries")
    m["size"] = (limits.MAX_CHUNKS + 1) * chunk_size
    refused(m, LimitError, "size")


@pytest.mark.parametrize("field, value, phrase", [
    ("chunk_size", limits.MIN_CHUNK_SIZE - 1, "chunk_size must be at least"),
    ("chunk_size", limits.MAX_CHUNK_SIZE + 1, "chunk_size"),
    ("created", -1, "created must be at least 0"),
    ("created", True, "created must be an integer"),
    ("created", "2026", "created must be an integer"),
    ("size", -1, "size must be at least 0"),
    ("chunks", [b"\x00" * 36], "raw sha2-256"),
    ("chunks", "x", "chunks must be a list"),
    ("author", "a" * 32, "32-byte Ed25519"),
])
def test_bad_field_values(plain, field, value, phrase):
    refused({**unsigned(plain), field: value}, FormatError, phrase)


@pytest.mark.parametrize("name", [
    "has space", "-leading-dash", ".hidden", "/abs", "caf\u00e9", "tab\tname", "trailing\n",
    "semi;colon", "",
])
def test_bad_name_characters(plain, name):
    phrase = "must not be empty" if not name else "characters MIP v1 does not allow"
    refused({**unsigned(plain), "name": name, "version": 1}, FormatError, phrase)


@pytest.mark.parametrize("tag", ["with space", "trailing\n", "caf\u00e9", "a/b", ""])
def test_bad_tag_characters(plain, tag):
    refused({**unsigned(plain), "tags": [tag]}, FormatError, "tag")


def test_good_names_accepted(plain):
    for name in ("a", "notes/sky.v2", "A_b-c.d/e", "0"):
        assert decode(sign_map({**unsigned(plain), "name": name, "version": 1})).name == name


def test_unknown_kind_properly_signed(plain):
    refused({**unsigned(plain), "kind": "weights"}, FormatError, "unknown cube kind 'weights'")
    with pytest.raises(FormatError, match="unknown cube kind"):
        build.build(ALICE, "weights", b"x", {})


def test_kind_and_meta_must_agree(plain):
    refused({**unsigned(plain), "kind": "activation"}, FormatError, "activation meta")


@pytest.mark.parametrize("mip, phrase", [
    (2, "unsupported MIP version 2"),
    (0, "unsupported MIP version 0"),
    (True, "unsupported MIP version True"),   # True == 1 in Python, but it is not the integer 1
    ("1", "unsupported MIP version '1'"),
])
def test_mip_version(plain, mip, phrase):
    refused({**unsigned(plain), "mip": mip}, FormatError, phrase)


def test_missing_mip(plain):
    m = unsigned(plain)
    del m["mip"]
    refused(m, FormatError, "unsupported MIP version None")


def test_unknown_field(plain):
    refused({**unsigned(plain), "color": "blue"}, FormatError, "unknown manifest field(s): color")


@pytest.mark.parametrize("field", manifest.REQUIRED[1:])
def test_missing_field(plain, field):
    m = unsigned(plain)
    del m[field]
    if field == "author":
        with pytest.raises(FormatError, match="author must be"):
            decode(sign_map(m))
    else:
        refused(m, FormatError, f"lacks field(s): {field}")


def test_chunk_count_must_match_size():
    c = factories.plaintext_cube(texts=("x" * 3000,))
    m = unsigned(c)
    assert len(m["chunks"]) == 3
    refused({**m, "chunks": m["chunks"][:-1]}, FormatError, "lists 2 chunks but size")
    refused({**m, "chunks": m["chunks"] + [SOME_CID]}, FormatError, "lists 4 chunks but size")
    refused({**m, "size": m["size"] + 1024}, FormatError, "lists 3 chunks but size")


def test_empty_lists_rejected(plain):
    refused({**unsigned(plain), "tags": []}, FormatError, "non-empty list")
    refused({**unsigned(plain), "parents": []}, FormatError, "omitted rather than empty")
    refused({**unsigned(plain), "description": ""}, FormatError, "must not be empty")
    refused({**unsigned(plain), "license": ""}, FormatError, "must not be empty")


def test_tags_sorted_and_unique(plain):
    refused({**unsigned(plain), "tags": ["b", "a"]}, FormatError, "sorted and unique")
    refused({**unsigned(plain), "tags": ["a", "a"]}, FormatError, "sorted and unique")
    with pytest.raises(FormatError, match="sorted and unique"):
        factories.plaintext_cube(tags=("a", "a"))


def test_parents_unique(plain):
    refused({**unsigned(plain), "parents": [SOME_CID, SOME_CID]}, FormatError, "must not repeat")


def test_name_and_version_go_together(plain):
    refused({**unsigned(plain), "version": 1}, FormatError, "name and version go together")
    refused({**unsigned(plain), "name": "n"}, FormatError, "name and version go together")
    refused({**unsigned(plain), "name": "n", "version": 0}, FormatError, "version must be at least 1")
    with pytest.raises(FormatError, match="name and version"):
        factories.plaintext_cube(version=1)


def test_supersedes(plain):
    base = {**unsigned(plain), "name": "n"}
    refused({**base, "version": 1, "supersedes": SOME_CID}, FormatError, "supersedes needs")
    refused({**unsigned(plain), "supersedes": SOME_CID}, FormatError, "supersedes needs")
    refused({**base, "version": 2, "supersedes": b"\x00" * 36}, CIDError, "raw sha2-256")
    assert decode(sign_map({**base, "version": 2, "supersedes": SOME_CID})).supersedes == SOME_CID


def test_expires_after_created(plain):
    created = factories.FIXED_CREATED
    refused({**unsigned(plain), "expires": created}, FormatError, "expires must be after created")
    refused({**unsigned(plain), "expires": created - 1}, FormatError, "expires must be after created")
    assert decode(sign_map({**unsigned(plain), "expires": created + 1})).expires == created + 1


def test_expired_cube_refused_by_verify():
    items = payloads.encode_items([{"text": "old news"}])
    c = build.build(ALICE, "plaintext", items, {"items": 1}, created=1000, expires=2000, chunk_size=1024)
    with pytest.raises(PolicyError, match="expired at 2000"):
        build.verify(c.manifest_bytes, c.cube_id, c.chunks.get)
    assert build.verify(c.manifest_bytes, c.cube_id, c.chunks.get, check_expiry=False).payload() == items
    build.check_fresh(c.manifest, now=1999)
    with pytest.raises(PolicyError):
        build.check_fresh(c.manifest, now=2000)
    assert not issubclass(PolicyError, FormatError)


# -- kind-specific meta ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def act():
    return factories.activation_cube()


@pytest.fixture(scope="module")
def param():
    return factories.parameter_cube()


def with_meta(c, **changes) -> dict:
    m = unsigned(c)
    meta = {**m["meta"], **changes}
    return {**m, "meta": {k: v for k, v in meta.items() if v is not None}}


def test_activation_meta_errors(act):
    meta = act.manifest.meta
    refused(with_meta(act, prefix_keys=meta["prefix_keys"][:-1]), FormatError, "meta.prefix_keys has 2 keys")
    refused(with_meta(act, prefix_keys=meta["prefix_keys"] + [bytes(32)]), FormatError, "prefix_keys has 4")
    refused(with_meta(act, prefix_keys=[k[:31] for k in meta["prefix_keys"]]), FormatError, "32 bytes")
    refused(with_meta(act, dtype="float64"), FormatError, "meta.dtype 'float64'")
    refused(with_meta(act, dtype="F32"), FormatError, "meta.dtype")
    layout = {k: v for k, v in meta["layout"].items() if k != "head_dim"}
    refused(with_meta(act, layout=layout), FormatError, "meta.layout lacks head_dim")
    refused(with_meta(act, layout={**meta["layout"], "rope": 1}), FormatError, "unknown field(s) rope")
    refused(with_meta(act, layout={**meta["layout"], "layers": 0}), FormatError, "meta.layout.layers")
    refused(with_meta(act, n_tokens=0), FormatError, "meta.n_tokens must be at least 1")
    refused(with_meta(act, block_size=0), FormatError, "meta.block_size")
    refused(with_meta(act, model=b"short"), FormatError, "meta.model must be a 32-byte fingerprint")
    refused(with_meta(act, adapter=bytes(31)), FormatError, "meta.adapter")
    refused(with_meta(act, tokenizer=None), FormatError, "activation meta lacks tokenizer")
    refused(with_meta(act, extra=1), FormatError, "unknown field(s) extra")
    assert decode(sign_map(with_meta(act, adapter=bytes(32)))).meta["adapter"] == bytes(32)


def test_parameter_meta_errors(param):
    peft = param.manifest.meta["peft"]
    assert peft["type"] == "LORA" and peft["targets"] == ["q_proj", "v_proj"]
    refused(with_meta(param, peft={**peft, "type": "IA3"}), FormatError, "only LORA")
    refused(with_meta(param, peft={**peft, "targets": ["v_proj", "q_proj"]}), FormatError, "sorted and unique")
    refused(with_meta(param, peft={**peft, "targets": ["q_proj", "q_proj"]}), FormatError, "sorted and unique")
    refused(with_meta(param, peft={**peft, "targets": []}), FormatError, "non-empty list")
    refused(with_meta(param, peft={**peft, "targets": ["q_proj\n"]}), FormatError, "not a module name")
    refused(with_meta(param, peft={**peft, "targets": ["a b"]}), FormatError, "not a module name")
    refused(with_meta(param, peft={**peft, "r": 0}), FormatError, "meta.peft.r")
    refused(with_meta(param, peft={**peft, "alpha": True}), FormatError, "meta.peft.alpha")
    refused(with_meta(param, peft={k: v for k, v in peft.items() if k != "alpha"}), FormatError, "lacks alpha")
    refused(with_meta(param, base_model=bytes(33)), FormatError, "meta.base_model")
    many = sorted(f"m{i:03d}" for i in range(limits.MAX_TARGET_MODULES + 1))
    refused(with_meta(param, peft={**peft, "targets": many}), LimitError, "meta.peft.targets")


def test_plaintext_meta_errors(plain):
    refused(with_meta(plain, items=-1), FormatError, "meta.items must be at least 0")
    refused(with_meta(plain, items=True), FormatError, "meta.items must be an integer")
    refused(with_meta(plain, items=limits.MAX_PLAINTEXT_ITEMS + 1), LimitError, "meta.items")
    refused(with_meta(plain, embedding=bytes(31)), FormatError, "meta.embedding")
    refused(with_meta(plain, model=bytes(32)), FormatError, "unknown field(s) model")
    refused({**unsigned(plain), "meta": [1]}, FormatError, "plaintext meta must be a map")


# -- build.verify over chunks ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def multi():
    return factories.plaintext_cube(texts=("x" * 2500,), chunk_size=1024)


def test_flipped_chunk_byte(multi):
    target = multi.manifest.chunks[1]

    def get(chunk_id):
        data = bytearray(multi.chunks[chunk_id])
        if chunk_id == target:
            data[100] ^= 0x01
        return bytes(data)

    with pytest.raises(CIDError, match="does not match its CID"):
        build.verify(multi.manifest_bytes, multi.cube_id, get)


def test_missing_chunk(multi):
    gone = multi.manifest.chunks[-1]
    with pytest.raises(FormatError, match="chunk 2 .* is missing"):
        build.verify(multi.manifest_bytes, multi.cube_id, lambda c: None if c == gone else multi.chunks[c])


def test_chunk_of_wrong_length(multi):
    # a manifest whose last chunk repeats a full chunk: the bytes match the CID but not the length
    m = unsigned(multi)
    first = m["chunks"][0]
    m["chunks"] = [first, first, first]
    data = sign_map(m)
    with pytest.raises(FormatError, match="chunk 2 has 1024 bytes, expected"):
        build.verify(data, cid.cid_of(data), multi.chunks.get)


def test_verify_checks_the_payload_against_meta(multi):
    # validly signed and chunked, but the manifest claims more items than the payload holds
    data = sign_map(with_meta(multi, items=2))
    with pytest.raises(FormatError, match="manifest says 2"):
        build.verify(data, cid.cid_of(data), multi.chunks.get)


def test_verify_asks_for_the_right_cube(multi, plain):
    with pytest.raises(CIDError):
        build.verify(multi.manifest_bytes, plain.cube_id, multi.chunks.get)


def test_build_refuses_a_manifest_nobody_could_decode():
    # 65536 prefix keys (2.2 MB) plus 53248 chunk CIDs (2 MB) make a manifest over MAX_MANIFEST:
    # build must refuse it rather than sign a cube that every peer would reject
    n = limits.MAX_PREFIX_KEYS
    meta, payload = factories.kv_meta_and_payload(n_tokens=n, layers=1, kv_heads=1, head_dim=104, block_size=1)
    with pytest.raises(LimitError, match="manifest is .* bytes, the limit is"):
        build.build(ALICE, "activation", payload, meta, chunk_size=limits.MIN_CHUNK_SIZE,
                    created=factories.FIXED_CREATED)


def test_future_version_is_reported_as_such_even_unsigned(plain):
    """A later MIP may sign differently: its manifests say 'unsupported version', not 'forged'."""
    m = {**unsigned(plain), "mip": 2, "sig": bytes(64)}
    with pytest.raises(FormatError, match="unsupported MIP version 2"):
        decode(canonical.encode(m))


def test_plaintext_size_cap_before_any_chunk(plain):

    size = limits.MAX_PLAINTEXT_PAYLOAD + 1
    m = {**unsigned(plain), "size": size, "chunk_size": limits.MAX_CHUNK_SIZE,
         "chunks": [plain.manifest.chunks[0]] * -(-size // limits.MAX_CHUNK_SIZE)}
    refused(m, LimitError, "plaintext payload of")


@pytest.mark.parametrize("chunk_size", [0, -1, 1023, 4 * 1024 * 1024 + 1, 1024.0, "1024"])
def test_build_refuses_bad_chunk_size(chunk_size):
    build_mod = build
    with pytest.raises(FormatError, match="chunk_size must be an integer"):
        build_mod.build(ALICE, "plaintext", payloads.encode_items([{"text": "x"}]), {"items": 1},
                        chunk_size=chunk_size)


def test_build_refuses_too_many_chunks_before_hashing():
    build_mod = build
    with pytest.raises(LimitError, match="more than 65536 chunks"):
        build_mod.build(ALICE, "plaintext", bytes(limits.MIN_CHUNK_SIZE * limits.MAX_CHUNKS + 1),
                        {"items": 1}, chunk_size=limits.MIN_CHUNK_SIZE)
