"""MIP v1 golden vectors (protocol/vectors/*.json) checked byte for byte against memnet.cube.

Each vector is rebuilt or parsed with the memnet implementation and, where an independent
implementation is at hand, cross-checked with it (multiformats for CIDs, libipld for the CAR
header's DAG-CBOR, cryptography for bare Ed25519, libp2p for PeerIDs).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from memnet import errors
from memnet.cube import build, canonical, car, cid, keys, limits, manifest, meta, payloads, prefix

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocol" / "vectors"
SCHEMA = ROOT / "protocol" / "schema" / "manifest.schema.json"

# Binary fields of the manifest's JSON rendering ("*" = every entry of a list).
BINARY_PATHS = {
    ("author",), ("sig",), ("supersedes",), ("chunks", "*"), ("parents", "*"),
    ("meta", "embedding"), ("meta", "model"), ("meta", "tokenizer"), ("meta", "adapter"),
    ("meta", "prefix_keys", "*"), ("meta", "token_ids"), ("meta", "base_model"),
    ("seal", "epk"), ("seal", "commit"), ("seal", "recipients", "*", "to"), ("seal", "recipients", "*", "key"),
}


@functools.cache

def read_leb128(data: bytes, position: int) -> tuple[int, int]:
    """An unsigned LEB128 varint read by hand (independent of memnet's codecs): (value, end)."""
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position

def load(name: str) -> dict:
    doc = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert doc["mip"] == limits.MIP_VERSION
    return doc


def cases(name: str, key: str = "cases") -> list:
    return [pytest.param(case, id=case["name"]) for case in load(name)[key]]


def from_typed(value: Any) -> Any:
    """Typed JSON (canonical.json's conventions) -> Python value."""
    if isinstance(value, list):
        return [from_typed(v) for v in value]
    if isinstance(value, dict):
        (tag, inner), = value.items()
        if tag == "bytes":
            return bytes.fromhex(inner)
        if tag == "float":
            return float(inner)
        if tag == "map":
            result = {}
            for k, v in inner:
                result[from_typed(k)] = from_typed(v)
            return result
        raise AssertionError(f"unknown typed-JSON tag {tag}")
    return value


def unrender(value: Any, path: tuple[str, ...] = (), top: tuple[str, ...] = ()) -> Any:
    """JSON rendering (hex for binary fields) -> manifest map values."""
    if isinstance(value, dict):
        return {k: unrender(v, path + (k,), top) for k, v in value.items()}
    if isinstance(value, list):
        return [unrender(v, path + ("*",), top) for v in value]
    if isinstance(value, str) and top + path in BINARY_PATHS:
        return bytes.fromhex(value)
    return value


def unrender_meta(value: dict) -> dict:
    return unrender(value, top=("meta",))


def raises_exactly(name: str, fn, *args, **kwargs) -> errors.MemnetError:
    """fn must raise memnet.errors.<name> itself (not a subclass, not a non-memnet exception)."""
    assert issubclass(getattr(errors, name), errors.MemnetError)
    with pytest.raises(errors.MemnetError) as info:
        fn(*args, **kwargs)
    assert type(info.value).__name__ == name, f"{type(info.value).__name__}: {info.value}"
    return info.value


def golden_key() -> Ed25519PrivateKey:
    case = load("keys.json")["cases"][0]
    assert bytes.fromhex(case["private_seed"]) == hashlib.sha256(case["seed_text"].encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(case["private_seed"]))


def cube_case(name: str) -> dict:
    return next(c for c in load("cubes.json")["cases"] if c["name"] == name)


def rebuild(case: dict) -> build.Cube:
    inputs = case["inputs"]
    optional = unrender(inputs["optional"])
    for name in ("parents", "tags"):
        if name in optional:
            optional[name] = tuple(optional[name])
    return build.build(golden_key(), inputs["kind"], bytes.fromhex(inputs["payload"]),
                       unrender_meta(inputs["meta"]), chunk_size=inputs["chunk_size"],
                       created=inputs["created"], **optional)


# -- canonical msgpack -------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("canonical.json", "valid"))
def test_canonical_valid(case):
    value, data = from_typed(case["value"]), bytes.fromhex(case["hex"])
    assert canonical.encode(value).hex() == case["hex"]
    decoded = canonical.decode(data, len(data))
    assert decoded == value
    assert canonical.encode(decoded) == data


@pytest.mark.parametrize("case", cases("canonical.json", "reject_decode"))
def test_canonical_reject_decode(case):
    raises_exactly(case["error"], canonical.decode, bytes.fromhex(case["hex"]), 1 << 20)


@pytest.mark.parametrize("case", cases("canonical.json", "reject_encode"))
def test_canonical_reject_encode(case):
    raises_exactly(case["error"], canonical.encode, from_typed(case["value"]))


def test_canonical_max_depth_and_size_limit():
    assert load("canonical.json")["max_depth"] == canonical.MAX_DEPTH
    raises_exactly("LimitError", canonical.decode, canonical.encode("abc"), 3)


# -- CIDs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("cid.json", "valid"))
def test_cid(case):
    from multiformats import CID, multihash

    data = bytes.fromhex(case["data"])
    binary = bytes.fromhex(case["binary"])
    assert hashlib.sha256(data).hexdigest() == case["sha256"]
    assert cid.cid_of(data) == binary
    assert cid.to_text(binary) == case["text"]
    assert cid.from_text(case["text"]) == binary
    cid.verify_block(binary, data)
    # independent implementation
    parsed = CID.decode(case["text"])
    assert (parsed.version, parsed.codec.code, parsed.hashfun.code) == (1, 0x55, 0x12)
    assert parsed.raw_digest == hashlib.sha256(data).digest()
    assert bytes(parsed) == binary
    assert str(CID("base32", 1, "raw", multihash.digest(data, "sha2-256"))) == case["text"]


@pytest.mark.parametrize("case", cases("cid.json", "invalid_text"))
def test_cid_invalid_text(case):
    raises_exactly(case["error"], cid.from_text, case["text"])


# -- keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("keys.json"))
def test_peer_id(case):
    import base58
    from multiformats import multihash

    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(case["private_seed"]))
    public = bytes.fromhex(case["public_key"])
    assert keys.public_bytes(key) == public
    assert keys.peer_id(public) == case["peer_id"]
    assert keys.author_from_peer_id(case["peer_id"]) == public
    raw = base58.b58decode(case["peer_id"])
    if "peer_id_multihash" in case:
        assert raw.hex() == case["peer_id_multihash"]
        assert multihash.unwrap(raw).hex() == case["libp2p_public_key_protobuf"]


def test_peer_id_matches_libp2p():
    libp2p_id = pytest.importorskip("libp2p.peer.id")
    libp2p_ed25519 = pytest.importorskip("libp2p.crypto.ed25519")
    case = load("keys.json")["cases"][0]
    pub = libp2p_ed25519.Ed25519PublicKey.from_bytes(bytes.fromhex(case["public_key"]))
    assert libp2p_id.ID.from_pubkey(pub).to_base58() == case["peer_id"]


def test_sign_domain():
    assert bytes.fromhex(load("keys.json")["sign_domain"]) == manifest.SIGN_DOMAIN == b"memnet/mip/v1/manifest\x00"


# -- cubes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("cubes.json"))
def test_cube_rebuilds_byte_for_byte(case):
    expected = case["expected"]
    cube = rebuild(case)
    m = cube.manifest
    assert m.author.hex() == load("keys.json")["cases"][0]["public_key"]
    assert m.size == expected["size"]
    assert [cid.to_text(c) for c in m.chunks] == expected["chunks"]
    assert len(cube.chunks) == expected["distinct_chunks"]
    assert canonical.encode(m.unsigned_map()).hex() == expected["unsigned_manifest"]
    assert m.signing_bytes().hex() == expected["signing_bytes"]
    assert m.sig.hex() == expected["signature"]
    assert cube.manifest_bytes.hex() == expected["manifest"]
    assert cid.to_text(cube.cube_id) == expected["cube_id"]
    assert cube.cube_id.hex() == expected["cube_id_binary"]
    assert cube.payload().hex() == case["inputs"]["payload"]


@pytest.mark.parametrize("case", cases("cubes.json"))
def test_cube_manifest_decodes_and_verifies(case):
    expected = case["expected"]
    data = bytes.fromhex(expected["manifest"])
    cube_id = cid.from_text(expected["cube_id"])
    m = manifest.decode(data, cube_id)
    assert m.encode() == data
    assert m.cube_id == cube_id
    decoded = canonical.decode(data, limits.MAX_MANIFEST)
    assert decoded == unrender(expected["manifest_json"])
    assert list(decoded) == list(expected["manifest_json"])  # canonical key order
    # the signature, checked with bare Ed25519 over the documented bytes
    signing = bytes.fromhex(expected["signing_bytes"])
    unsigned = {k: v for k, v in decoded.items() if k != "sig"}
    assert signing == manifest.SIGN_DOMAIN + canonical.encode(unsigned)
    assert signing[len(manifest.SIGN_DOMAIN):].hex() == expected["unsigned_manifest"]
    Ed25519PublicKey.from_public_bytes(decoded["author"]).verify(decoded["sig"], signing)
    assert decoded["sig"].hex() == expected["signature"]


@pytest.mark.parametrize("case", cases("cubes.json"))
def test_cube_chunks_and_verify(case):
    from multiformats import CID, multihash

    inputs, expected = case["inputs"], case["expected"]
    payload, size = bytes.fromhex(inputs["payload"]), inputs["chunk_size"]
    pieces = [payload[i:i + size] for i in range(0, len(payload), size)]
    assert [str(CID("base32", 1, "raw", multihash.digest(p, "sha2-256"))) for p in pieces] == expected["chunks"]
    store = {cid.cid_of(p): p for p in pieces}
    cube = build.verify(bytes.fromhex(expected["manifest"]), cid.from_text(expected["cube_id"]), store.get,
                        check_expiry=False)
    assert cube.payload() == payload
    # the cube id is the CID of the manifest bytes, computed independently too
    assert str(CID("base32", 1, "raw", multihash.digest(bytes.fromhex(expected["manifest"]), "sha2-256"))) \
        == expected["cube_id"]


def test_plaintext_payload_from_items():
    inputs = cube_case("plaintext")["inputs"]
    assert payloads.encode_items(inputs["items"]).hex() == inputs["payload"]
    assert payloads.decode_items(bytes.fromhex(inputs["payload"])) == inputs["items"]


def test_parameter_payload_carries_peft_config():
    inputs = cube_case("parameter")["inputs"]
    payload = bytes.fromhex(inputs["payload"])
    assert payloads.peft_config_of(payload) == inputs["adapter_config"]
    assert payloads.peft_summary(inputs["adapter_config"]) == inputs["meta"]["peft"]
    optional = inputs["optional"]
    assert optional["parents"] == [cube_case("plaintext")["expected"]["cube_id_binary"]]


@pytest.mark.parametrize("name", ["activation_int8", "activation_float32_minimal"])
def test_activation_prefix_keys_come_from_token_ids(name):
    inputs = cube_case(name)["inputs"]
    m = unrender_meta(inputs["meta"])
    salt = prefix.salt(m["model"], m["tokenizer"], m.get("adapter"), m["dtype"])
    assert prefix.prefix_keys(inputs["token_ids"], salt, m["block_size"]) == m["prefix_keys"]
    assert m["n_tokens"] == len(inputs["token_ids"])


def test_prefix_keys_case_matches_the_int8_cube():
    case = next(c for c in load("prefix_keys.json")["cases"] if c["name"] == "the golden int8 activation cube")
    assert case["keys"] == cube_case("activation_int8")["inputs"]["meta"]["prefix_keys"]


# -- prefix keys -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("prefix_keys.json"))
def test_prefix_keys(case):
    adapter = bytes.fromhex(case["adapter"]) if case["adapter"] else None
    model, tokenizer = bytes.fromhex(case["model"]), bytes.fromhex(case["tokenizer"])
    salt_input = prefix.SALT_DOMAIN + model + tokenizer + (adapter or bytes(32)) + case["dtype"].encode()
    assert salt_input.hex() == case["salt_input"]
    salt = prefix.salt(model, tokenizer, adapter, case["dtype"])
    assert salt.hex() == case["salt"] == hashlib.sha256(salt_input).hexdigest()
    got = prefix.prefix_keys(case["token_ids"], salt, case["block_size"])
    assert [k.hex() for k in got] == case["keys"]
    # the chain, recomputed by hand
    previous, block = salt, case["block_size"]
    ids = case["token_ids"]
    for i, key in enumerate(case["keys"]):
        chunk = b"".join(t.to_bytes(4, "little") for t in ids[i * block:(i + 1) * block])
        previous = hashlib.sha256(previous + chunk).digest()
        assert previous.hex() == key
    assert len(case["keys"]) == -(-len(ids) // block)


# -- CAR ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("car.json"))
def test_car(case):
    import libipld

    cubes = [rebuild(cube_case(name)) for name in case["cubes"]]
    out = io.BytesIO()
    written = car.write(out, cubes)
    data = bytes.fromhex(case["car"])
    assert out.getvalue() == data and written == len(data)
    # header: an independent DAG-CBOR decoder sees {"roots": [CID...], "version": 1}
    header = bytes.fromhex(case["header"])
    assert data.startswith(car.encode_varint(len(header)) + header)
    decoded = libipld.decode_dag_cbor(header)
    assert decoded == {"roots": [cid.from_text(r) for r in case["roots"]], "version": 1}
    # blocks, walked by hand: varint(len) + 36-byte CID + data, in the documented order
    position, order = len(car.encode_varint(len(header))) + len(header), []
    while position < len(data):
        length, position = read_leb128(data, position)
        block_cid, block = data[position:position + 36], data[position + 36:position + length]
        assert hashlib.sha256(block).digest() == block_cid[4:] and block_cid[:4] == bytes.fromhex("01551220")
        order.append(cid.to_text(block_cid))
        position += length
    assert order == case["blocks"]
    archive = car.read(io.BytesIO(data), load("car.json")["max_total"])
    assert [cid.to_text(r) for r in archive.roots] == case["roots"]
    assert [cid.to_text(b) for b in archive.blocks] == case["blocks"]
    for root in archive.roots:
        cube = build.verify(archive.blocks[root], root, archive.blocks.get, check_expiry=False)
        assert cid.to_text(cube.cube_id) in case["roots"]


@pytest.mark.parametrize("case", cases("car.json", "invalid"))
def test_car_invalid(case):
    raises_exactly(case["error"], car.read, io.BytesIO(bytes.fromhex(case["car"])), load("car.json")["max_total"])


# -- invalid inputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", cases("invalid_manifests.json"))
def test_invalid_manifest(case):
    expected_cid = cid.from_text(case["expected_cid"]) if "expected_cid" in case else None
    raises_exactly(case["error"], manifest.decode, bytes.fromhex(case["manifest"]), expected_cid)


@pytest.mark.parametrize("case", cases("invalid_payloads.json"))
def test_payload_cases(case):
    meta_map = unrender_meta(case["meta"])
    meta.validate_meta(case["kind"], meta_map)  # the meta itself is always valid
    payload = bytes.fromhex(case["payload"])
    if case["error"] is None:
        payloads.validate_payload(case["kind"], payload, meta_map)
    else:
        raises_exactly(case["error"], payloads.validate_payload, case["kind"], payload, meta_map)
    if case["kind"] == "plaintext":   # a fetched cube's items are checked as a stream of chunks: same verdict
        pieces = [payload[i:i + 5] for i in range(0, len(payload), 5)]
        check = lambda: payloads.check_items_stream(pieces, meta_map["items"],  # noqa: E731
                                                    embedded="embedding" in meta_map)
        if case["error"] is None:
            check()
        else:
            raises_exactly(case["error"], check)


# -- schema ------------------------------------------------------------------------------------

def test_schema_agrees_with_the_code():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == [*manifest.REQUIRED, "sig"]
    assert set(schema["properties"]) == {*manifest.REQUIRED, *manifest.OPTIONAL, "sig"}
    defs = schema["$defs"]
    assert set(defs["plaintextMeta"]["properties"]) == {"items", "embedding"}
    assert set(defs["activationMeta"]["properties"]["dtype"]["enum"]) == set(meta.KV_DTYPES)
    assert schema["properties"]["kind"]["enum"] == list(limits.KINDS)
    assert schema["properties"]["chunk_size"]["minimum"] == limits.MIN_CHUNK_SIZE
    assert schema["properties"]["chunk_size"]["maximum"] == limits.MAX_CHUNK_SIZE

    def ecma(pattern: str) -> str:  # Python-only \Z -> an end-of-input both dialects agree on
        return pattern.replace("\\Z", "(?![\\s\\S])")

    assert schema["properties"]["name"]["pattern"] == ecma(manifest.NAME_RE.pattern)
    assert schema["properties"]["tags"]["items"]["pattern"] == ecma(manifest.TAG_RE.pattern)
    assert defs["parameterMeta"]["properties"]["peft"]["properties"]["targets"]["items"]["pattern"] \
        == ecma(meta.MODULE_RE.pattern)

    def binary_paths(node: Any, path: tuple[str, ...], found: set) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                target = defs[node["$ref"].rsplit("/", 1)[1]]
                if target.get("contentEncoding") == "base16":
                    found.add(path)
                binary_paths(target, path, found)
            if node.get("contentEncoding") == "base16":
                found.add(path)
            for key, sub in node.get("properties", {}).items():
                binary_paths(sub, path + (key,), found)
            if "items" in node:
                binary_paths(node["items"], path + ("*",), found)

    found: set = set()
    binary_paths(schema, (), found)
    for name in ("plaintextMeta", "activationMeta", "parameterMeta"):
        binary_paths(defs[name], ("meta",), found)
    assert found == BINARY_PATHS


def test_manifest_json_renderings_validate_against_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for case in load("cubes.json")["cases"]:
        validator.validate(case["expected"]["manifest_json"])


# -- name records ------------------------------------------------------------------------------

def test_name_record_valid():
    from memnet.cube import name_record

    doc = load("names.json")
    assert bytes.fromhex(doc["sign_domain"]) == name_record.SIGN_DOMAIN == b"memnet/mip/v1/name\x00"
    assert bytes.fromhex(doc["key_domain"]) == name_record.KEY_DOMAIN
    assert (doc["namespace"], doc["max_record"], doc["max_ttl"], doc["default_ttl"]) == (
        name_record.NAMESPACE, name_record.MAX_RECORD, name_record.MAX_TTL, name_record.DEFAULT_TTL)
    for case in doc["valid"]:
        data, f = bytes.fromhex(case["record"]), case["fields"]
        author, cube = bytes.fromhex(f["author"]), bytes.fromhex(f["cube"])
        assert author.hex() == load("keys.json")["cases"][0]["public_key"]
        assert cid.to_text(cube) == case["cube_text"] == cube_case("plaintext")["expected"]["cube_id"]
        # the signer reproduces the bytes
        assert name_record.sign(golden_key(), f["name"], cube, f["seq"], f["expires"]) == data
        for now in case["valid_at"]:
            rec = name_record.decode(data, key=case["dht_key"], now=now)
            assert (rec.author, rec.name, rec.cube, rec.seq, rec.expires) == (
                author, f["name"], cube, f["seq"], f["expires"])
            assert rec.encode() == data
        # signature, DHT key and path, recomputed by hand
        unsigned = canonical.encode({**f, "author": author, "cube": cube})
        assert unsigned.hex() == case["unsigned"]
        assert case["signing_bytes"] == (name_record.SIGN_DOMAIN + unsigned).hex()
        Ed25519PublicKey.from_public_bytes(author).verify(bytes.fromhex(case["signature"]),
                                                          bytes.fromhex(case["signing_bytes"]))
        key_input = name_record.KEY_DOMAIN + author + f["name"].encode()
        assert key_input.hex() == case["dht_key_input"]
        assert case["dht_key"] == "/memnet-name/" + hashlib.sha256(key_input).hexdigest()
        assert name_record.dht_key(author, f["name"]) == case["dht_key"]
        assert name_record.parse_path(case["path"]) == (author, f["name"])


@pytest.mark.parametrize("case", cases("names.json", "invalid"))
def test_name_record_invalid(case):
    from memnet.cube import name_record

    raises_exactly(case["error"], name_record.decode, bytes.fromhex(case["record"]), key=case.get("key"),
                   now=case["now"])


@pytest.mark.parametrize("case", cases("names.json", "select"))
def test_name_record_select(case):
    from libp2p.records.utils import InvalidRecordType

    from memnet.net.names import validator

    v = validator(lambda: case["now"])
    records = [bytes.fromhex(r) for r in case["records"]]
    assert v.select(case["key"], records) == case["best"]
    v.validate(case["key"], records[case["best"]])
    for other in (r for i, r in enumerate(records) if i != case["best"]):
        try:
            v.validate(case["key"], other)
        except InvalidRecordType:
            continue
        assert v.select(case["key"], [other, records[case["best"]]]) == 1


# -- wire protocol -----------------------------------------------------------------------------

WIRE_BINARY = {"cube", "cid", "data", "bits", "key"}


def unrender_message(rendered: dict) -> dict:
    """wire.json's JSON rendering -> the message map (hex -> bytes for the bin fields)."""
    out = {k: bytes.fromhex(v) if k in WIRE_BINARY else v for k, v in rendered.items()}
    for field in ("chunks", "cubes"):
        if field in out:
            out[field] = [bytes.fromhex(c) for c in out[field]]
    return out


def test_wire_constants():
    from memnet.net import wire

    doc = load("wire.json")
    assert doc["protocol_id"] == wire.PROTOCOL_ID and wire.SUPPORTED[0] == wire.PROTOCOL_ID
    assert doc["limits"] == {"max_frame": wire.MAX_FRAME, "max_batch": wire.MAX_BATCH,
                             "max_message_text": wire.MAX_MESSAGE_TEXT, "max_have_bytes": wire.MAX_HAVE_BYTES,
                             "max_id": wire.MAX_ID, "max_prefix_cubes": wire.MAX_PREFIX_CUBES}
    assert doc["limits"]["max_frame"] == limits.MAX_CHUNK_SIZE + 65536
    assert set(doc["error_codes"]) == wire.ERROR_CODES
    assert {case["message"]["t"] for case in doc["valid"]} == set(wire.FIELDS)


@pytest.mark.parametrize("case", cases("wire.json", "valid"))
def test_wire_valid(case):
    import msgpack

    from memnet.net import wire

    message, data = unrender_message(case["message"]), bytes.fromhex(case["frame"])
    assert wire.encode_frame(message).hex() == case["frame"]
    decoder = wire.FrameDecoder()
    decoder.feed(data)
    assert decoder.next().to_map() == message and decoder.next() is None
    decoder.eof()
    # by hand: a minimal LEB128 length, then a map an ordinary msgpack decoder reads the same way
    length, position = read_leb128(data, 0)
    assert length == len(data) - position and position == len(wire._varint(length))
    assert msgpack.unpackb(data[position:], raw=False) == message
    # the golden bytes are the golden cubes' own: what a receiver verifies (MIP section 11)
    if message["t"] == "manifest":
        assert cid.to_text(cid.cid_of(message["data"])) == cube_case("plaintext")["expected"]["cube_id"]
    if message["t"] == "chunk":
        cid.verify_block(message["cid"], message["data"])
        assert cid.to_text(message["cid"]) in cube_case("plaintext")["expected"]["chunks"]


@pytest.mark.parametrize("case", cases("wire.json", "invalid"))
def test_wire_invalid(case):
    from memnet.net import wire

    def decode() -> None:
        decoder = wire.FrameDecoder(load("wire.json")["limits"]["max_frame"])
        decoder.feed(bytes.fromhex(case["frame"]))
        while decoder.next() is not None:
            pass
        decoder.eof()

    raises_exactly(case["error"], decode)


def test_wire_bitfields():
    from memnet.net import wire

    doc = load("wire.json")
    for case in doc["bitfields"]:
        bits = bytes.fromhex(case["bits"])
        assert wire.bits_from_flags(case["flags"]) == bits
        assert wire.flags_from_bits(bits, len(case["flags"])) == case["flags"]
        assert all(bool(bits[i // 8] & (0x80 >> (i % 8))) == f for i, f in enumerate(case["flags"]))
    for case in doc["invalid_bitfields"]:
        raises_exactly(case["error"], wire.flags_from_bits, bytes.fromhex(case["bits"]), case["n"])


# -- the generator -----------------------------------------------------------------------------

def test_make_vectors_check_passes():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_vectors.py"), "--check"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# -- the span protocol (MIP section 21) -------------------------------------------------------------

def unrender_span(rendered: dict) -> dict:
    out = {k: bytes.fromhex(v) if k in ("model", "hidden") else v for k, v in rendered.items()}
    if "seed" in out:
        out["seed"] = {**out["seed"], "cube": bytes.fromhex(out["seed"]["cube"])}
    return out


def test_span_constants():
    from memnet.span import protocol as sp

    doc = load("span.json")
    assert doc["protocol_id"] == sp.PROTOCOL_ID == "/memnet/span/1.0.0"
    assert doc["limits"] == {"max_frame": sp.MAX_FRAME, "max_layers": sp.MAX_LAYERS, "max_tokens": sp.MAX_TOKENS}
    assert set(doc["error_codes"]) == sp.ERROR_CODES
    assert {case["message"]["t"] for case in doc["valid"]} == set(sp.FIELDS)


@pytest.mark.parametrize("case", cases("span.json", "valid"))
def test_span_valid(case):
    from memnet.span import protocol as sp

    message = sp.from_map(unrender_span(case["message"]))
    assert sp.encode(message).hex() == case["frame"]
    decoder = sp.Decoder()
    decoder.feed(bytes.fromhex(case["frame"]))
    assert decoder.next() == message and decoder.next() is None


@pytest.mark.parametrize("case", cases("span.json", "invalid"))
def test_span_invalid(case):
    from memnet.span import protocol as sp

    def decode():
        decoder = sp.Decoder()
        decoder.feed(bytes.fromhex(case["frame"]))
        decoder.next()
    raises_exactly(case["error"], decode)


def test_span_records():
    from memnet.span import records as sr

    doc = load("span.json")["records"]
    model = bytes.fromhex(doc["model"])
    assert sr.block_key(model, 3) == doc["key_of_layer_3"]
    valid = doc["valid"]
    record = sr.parse(valid["peer"], valid["value"], model, valid["layer"])
    assert record is not None and record.to_value() == valid["value"]
    for case in doc["ignored"]:
        assert sr.parse(case["peer"], case["value"], model, case["layer"]) is None, case["name"]


# -- reachability probes (MIP section 22.2) --------------------------------------------------------

def test_autonat_constants():
    from memnet.net import autonat_wire as aw

    doc = load("autonat.json")
    assert doc["protocol_id"] == aw.PROTOCOL_ID == "/memnet/autonat/1.0.0"
    assert doc["limits"] == {"max_frame": aw.MAX_FRAME, "max_ports": aw.MAX_PORTS, "max_addr": aw.MAX_ADDR}
    assert tuple(doc["statuses"]) == aw.STATUSES


@pytest.mark.parametrize("case", cases("autonat.json", "valid"))
def test_autonat_valid(case):
    from memnet.net import autonat_wire as aw

    message = case["message"]
    if case["expect"] == "dial_me":
        typed, encoded = aw.DialMe(tuple(message["ports"])), aw.encode_dial_me(message["ports"])
    else:
        typed = aw.DialResult(message["status"], message["addr"])
        encoded = aw.encode_dial_result(typed)
    assert encoded.hex() == case["frame"]
    assert aw.Reader(case["expect"]).feed(bytes.fromhex(case["frame"])) == typed


@pytest.mark.parametrize("case", cases("autonat.json", "invalid"))
def test_autonat_invalid(case):
    from memnet.net import autonat_wire as aw

    raises_exactly(case["error"], aw.Reader(case["expect"]).feed, bytes.fromhex(case["frame"]))
