#!/usr/bin/env python3
"""Generate the MIP v1 golden vectors in protocol/vectors/*.json.

Deterministic: a fixed Ed25519 key (seed = sha256(b"memnet golden vector key 1")), a fixed
creation time, payloads built from fixed arange-like numpy values, and no randomness (Ed25519
signatures are deterministic, RFC 8032). Running it twice writes identical files.

    python scripts/make_vectors.py            # (re)write protocol/vectors/*.json
    python scripts/make_vectors.py --check    # exit 1 if the files differ from what it would write

Conventions inside the files (also in protocol/README.md and docs/MIP.md):
  * every byte string is lower-case hex;
  * manifests and meta maps appear in their "JSON rendering": the manifest map with every binary
    field as a hex string (protocol/schema/manifest.schema.json describes it);
  * canonical-encoding values use "typed JSON" (see canonical.json's "conventions").
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import struct
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cbor2  # noqa: E402
import msgpack  # noqa: E402
import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from safetensors.numpy import save as st_save  # noqa: E402

from memnet.cube import build, canonical, car, cid, keys, limits, manifest, payloads, prefix, sealed  # noqa: E402
from memnet.net import wire  # noqa: E402

VECTOR_DIR = ROOT / "protocol" / "vectors"
KEY_SEED = hashlib.sha256(b"memnet golden vector key 1").digest()
OTHER_KEY_SEED = hashlib.sha256(b"memnet golden vector key 2").digest()
CREATED = 1_790_000_000
CAR_MAX_TOTAL = 1 << 20

MODEL_FP = hashlib.sha256(b"memnet golden model").digest()
TOKENIZER_FP = hashlib.sha256(b"memnet golden tokenizer").digest()
ADAPTER_FP = hashlib.sha256(b"memnet golden adapter").digest()
BASE_FP = hashlib.sha256(b"memnet golden base model").digest()
EMBEDDING_FP = hashlib.sha256(b"memnet golden embedder").digest()
PREVIOUS_VERSION = cid.cid_of(b"memnet golden vector: the previous version of lora/golden")

# Binary fields of the manifest's JSON rendering (paths; "*" = every list entry).
BINARY_PATHS = (
    ("author",), ("sig",), ("supersedes",), ("chunks", "*"), ("parents", "*"),
    ("meta", "embedding"), ("meta", "model"), ("meta", "tokenizer"), ("meta", "adapter"),
    ("meta", "prefix_keys", "*"), ("meta", "base_model"),
    ("seal", "epk"), ("seal", "commit"), ("seal", "recipients", "*", "to"), ("seal", "recipients", "*", "key"),
)


def golden_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(KEY_SEED)


def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(OTHER_KEY_SEED)


def render(value: Any) -> Any:
    """JSON rendering: bytes -> lower-case hex, maps in canonical key order."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: render(value[k]) for k in sorted(value, key=lambda k: k.encode("utf-8"))}
    if isinstance(value, (list, tuple)):
        return [render(v) for v in value]
    return value


# -- (a) canonical msgpack ---------------------------------------------------------------------

def typed(value: Any) -> Any:
    """Typed JSON of a msgpack value (maps as ordered pairs, bytes as {"bytes": hex})."""
    if isinstance(value, bool) or isinstance(value, int) or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, float):
        return {"float": value}
    if value is None:
        return None
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, dict):
        return {"map": [[typed(k), typed(v)] for k, v in value.items()]}
    raise TypeError(type(value))


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def canonical_vectors() -> dict:
    valid_values: list[tuple[str, Any]] = [
        ("false", False), ("true", True),
        ("int 0", 0), ("int 127 (largest positive fixint)", 127), ("int 128 (uint8)", 128),
        ("int 255", 255), ("int 256 (uint16)", 256), ("int 65535", 65535), ("int 65536 (uint32)", 65536),
        ("int 2^32-1", 2**32 - 1), ("int 2^32 (uint64)", 2**32), ("int 2^63-1", 2**63 - 1),
        ("int 2^63 (uint64, above int64)", 2**63), ("int 2^64-1 (largest)", 2**64 - 1),
        ("int -1", -1), ("int -32 (smallest negative fixint)", -32), ("int -33 (int8)", -33),
        ("int -128", -128), ("int -129 (int16)", -129), ("int -32768", -32768),
        ("int -32769 (int32)", -32769), ("int -2^31", -(2**31)), ("int -2^31-1 (int64)", -(2**31) - 1),
        ("int -2^63 (smallest)", -(2**63)),
        ("empty str", ""), ("str 31 bytes (fixstr)", "s" * 31), ("str 32 bytes (str8)", "s" * 32),
        ("str 255 bytes", "s" * 255), ("str 256 bytes (str16)", "s" * 256),
        ("str non-ASCII (length counts UTF-8 bytes)", "h\u00e9 \u65e5\u672c \U0001f600"),
        ("empty bin (bin8)", b""), ("bin 1 byte", b"\x00"), ("bin 255 bytes", bytes(range(255))),
        ("bin 256 bytes (bin16)", bytes(256)),
        ("empty array", []), ("array of 15 (fixarray)", list(range(15))),
        ("array of 16 (array16)", list(range(16))),
        ("empty map", {}), ("map of 15 (fixmap)", {f"k{i:02d}": i for i in range(15)}),
        ("map of 16 (map16)", {f"k{i:02d}": i for i in range(16)}),
        ("keys sorted by UTF-8 bytes, not by length or UTF-16",
         {"\U0001f600": 1, "\uff61": 2, "b": 3, "aa": 4, "a": 5, "B": 6, "": 7, "\u00e9": 8}),
        ("nested map keys are sorted too", {"z": {"b": 1, "a": [{"d": 2, "c": 3}]}, "a": b"\x01"}),
        ("value at the deepest allowed level (16 containers)", nested(16)),
    ]
    valid = []
    for name, value in valid_values:
        encoded = canonical.encode(value)
        valid.append({"name": name, "value": typed(value), "hex": encoded.hex()})

    def hx(*parts: bytes) -> str:
        return b"".join(parts).hex()

    rejected_decode = [
        ("empty input", "", "CanonicalError"),
        ("truncated str", "a261", "CanonicalError"),
        ("trailing bytes", "0100", "CanonicalError"),
        ("reserved byte 0xc1", "c1", "CanonicalError"),
        ("5 as uint8", "cc05", "CanonicalError"),
        ("5 as int8 (positive in a signed format)", "d005", "CanonicalError"),
        ("200 as uint16", "cd00c8", "CanonicalError"),
        ("-100 as int16", "d1ff9c", "CanonicalError"),
        ("2^32 as int64", "d30000000100000000", "CanonicalError"),
        ("short str as str8", "d90161", "CanonicalError"),
        ("short str as str16", "da000161", "CanonicalError"),
        ("1-byte bin as bin16", "c5000100", "CanonicalError"),
        ("1-element array as array16", "dc000101", "CanonicalError"),
        ("1-pair map as map16", hx(b"\xde\x00\x01", canonical.encode("a"), b"\x01"), "CanonicalError"),
        ("keys out of order", hx(b"\x82", canonical.encode("b"), b"\x01", canonical.encode("a"), b"\x02"),
         "CanonicalError"),
        ("duplicate key", hx(b"\x82", canonical.encode("a"), b"\x01", canonical.encode("a"), b"\x02"),
         "CanonicalError"),
        ("integer key", "810102", "CanonicalError"),
        ("bin key", "81c4016102", "CanonicalError"),
        ("nil", "c0", "CanonicalError"),
        ("float32", "ca3fc00000", "CanonicalError"),
        ("float64", "cb3ff8000000000000", "CanonicalError"),
        ("fixext1", "d40100", "CanonicalError"),
        ("timestamp extension (-1)", "d6ff00000000", "CanonicalError"),
        ("str that is not UTF-8", "a1ff", "CanonicalError"),
        ("17 nested containers", "91" * 17 + "00", "CanonicalError"),
    ]
    rejected_encode = [
        ("float", {"float": 1.5}), ("nil", None), ("int 2^64", 2**64), ("int -2^63-1", -(2**63) - 1),
        ("integer map key", {"map": [[1, "x"]]}), ("17 nested containers", typed(nested(17))),
    ]
    return {
        "description": "Canonical msgpack (MIP v1, docs/MIP.md section 2). 'valid': encode(value) must equal "
                       "hex and decode(hex) must equal value. 'reject_decode': decoders must refuse these "
                       "bytes. 'reject_encode': encoders must refuse these values.",
        "conventions": "Typed JSON: true/false = bool; JSON integer = int (arbitrary precision, parse "
                       "as a big integer); JSON string = str; {\"bytes\": hex} = bin; JSON array = array; "
                       "{\"map\": [[key, value], ...]} = map whose pairs are given in this (input) order; "
                       "{\"float\": x} = float; null = nil.",
        "max_depth": canonical.MAX_DEPTH,
        "valid": valid,
        "reject_decode": [{"name": n, "hex": h, "error": e} for n, h, e in rejected_decode],
        "reject_encode": [{"name": n, "value": v, "error": "CanonicalError"} for n, v in rejected_encode],
    }


# -- (b) CIDs ----------------------------------------------------------------------------------

def cid_vectors() -> dict:
    blocks = [
        ("empty block", b""),
        ("hello", b"hello"),
        ("1024 zero bytes", bytes(1024)),
        ("bytes 0..255", bytes(range(256))),
    ]
    valid = []
    for name, data in blocks:
        binary = cid.cid_of(data)
        valid.append({"name": name, "data": data.hex(), "sha256": hashlib.sha256(data).hexdigest(),
                      "binary": binary.hex(), "text": cid.to_text(binary)})
    good = cid.to_text(cid.cid_of(b"hello"))
    dag_pb = bytes([0x01, 0x70, 0x12, 0x20]) + hashlib.sha256(b"hello").digest()
    import base64
    dag_pb_text = "b" + base64.b32encode(dag_pb).decode().lower().rstrip("=")
    invalid_text = [
        ("CIDv0", "QmXeE8ywkKkkK8LHEqkPgKL6pNvpYoHFZjE9cP4yoZvXq9"),
        ("upper-case base32", "B" + good[1:].upper()),
        ("base32 with padding", good + "===="),
        ("base58btc multibase", "z" + good[1:]),
        ("dag-pb codec", dag_pb_text),
        ("truncated digest", good[:-4]),
        ("not base32", "b" + "1" * 58),
        ("empty", ""),
    ]
    return {
        "description": "CIDv1, raw codec 0x55, sha2-256 (docs/MIP.md section 3). binary = 01 55 12 20 + "
                       "sha256(data) (36 bytes, the form inside manifests and CARs); text = 'b' + RFC 4648 "
                       "base32 of binary, lower case, no padding. 'invalid_text': parsers must refuse.",
        "valid": valid,
        "invalid_text": [{"name": n, "text": t, "error": "CIDError"} for n, t in invalid_text],
    }


# -- (c) keys ----------------------------------------------------------------------------------

def key_vectors() -> dict:
    pub = keys.public_bytes(golden_key())
    protobuf = bytes([0x08, 0x01, 0x12, 0x20]) + pub
    return {
        "description": "The golden author key and its libp2p PeerID (docs/MIP.md section 6). "
                       "private_seed = sha256(b'memnet golden vector key 1') is the RFC 8032 secret key; "
                       "peer_id = base58btc(identity multihash 00 24 + libp2p PublicKey protobuf "
                       "08 01 12 20 + public key).",
        "cases": [
            {"name": "golden key", "seed_text": "memnet golden vector key 1", "private_seed": KEY_SEED.hex(),
             "public_key": pub.hex(), "libp2p_public_key_protobuf": protobuf.hex(),
             "peer_id_multihash": (b"\x00\x24" + protobuf).hex(), "peer_id": keys.peer_id(pub)},
            {"name": "second key (used to forge signatures)", "seed_text": "memnet golden vector key 2",
             "private_seed": OTHER_KEY_SEED.hex(), "public_key": keys.public_bytes(other_key()).hex(),
             "peer_id": keys.peer_id(keys.public_bytes(other_key()))},
        ],
        "sign_domain": manifest.SIGN_DOMAIN.hex(),
    }


# -- payload builders --------------------------------------------------------------------------

PLAINTEXT_ITEMS = [
    {"text": "The MemCube format stores LLM memory as signed, content-addressed units. " * 3},
    {"text": "Plaintext cubes hold items of text; each item may carry string metadata.",
     "meta": {"source": "golden", "lang": "en"}},
    {"text": "H\u00e9las, les vecteurs dor\u00e9s doivent rester identiques octet pour octet. " * 2,
     "meta": {"lang": "fr"}},
    {"text": "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3082 UTF-8 \u3067\u7b26\u53f7\u5316\u3055\u308c\u307e\u3059\u3002 \U0001f600"},
    {"text": "".join(f"item {i}: the quick brown fox jumps over the lazy dog. " for i in range(12))},
]


def lora_payload() -> tuple[dict, bytes, str]:
    r, hidden = 4, 256
    tensors = {}
    for module in ("q_proj", "v_proj"):
        base = f"base_model.model.model.layers.0.self_attn.{module}"
        tensors[f"{base}.lora_A.weight"] = ((np.arange(r * hidden, dtype=np.float32) % 64) / 32 - 1).reshape(r, hidden)
        tensors[f"{base}.lora_B.weight"] = np.zeros((hidden, r), dtype=np.float32)
    config = {"base_model_name_or_path": "golden-base", "bias": "none", "lora_alpha": 8, "lora_dropout": 0.0,
              "peft_type": "LORA", "r": r, "target_modules": ["v_proj", "q_proj"], "task_type": "CAUSAL_LM"}
    weights = st_save(tensors, metadata={"format": "pt"})
    recipe = ("safetensors.numpy.save(metadata={'format': 'pt'}) of, for module in (q_proj, v_proj): "
              "'base_model.model.model.layers.0.self_attn.{module}.lora_A.weight' = "
              "((np.arange(1024, dtype=float32) % 64) / 32 - 1).reshape(4, 256) and '...lora_B.weight' = "
              "zeros((256, 4), float32) (PEFT initialises B to zero, so several 1024-byte chunks repeat); "
              "then payloads.build_parameter_payload(adapter_config, that file)")
    return config, payloads.build_parameter_payload(config, weights), recipe


def kv_payload(dtype: str, layers: int, kv_heads: int, n_tokens: int, head_dim: int) -> tuple[bytes, str]:
    tensors = {}
    count = kv_heads * n_tokens * head_dim
    for layer in range(layers):
        for index, kv in enumerate(("k", "v")):
            offset = (2 * layer + index) * count
            values = np.arange(offset, offset + count, dtype=np.int64).reshape(kv_heads, n_tokens, head_dim)
            if dtype == "int8":
                tensors[f"{kv}.{layer}"] = ((values % 255) - 127).astype(np.int8)
                tensors[f"{kv}_scale.{layer}"] = np.full((kv_heads, n_tokens, 1), 1 / 64, dtype=np.float32)
            else:
                np_dtype = {"float32": np.float32, "float16": np.float16}[dtype]
                tensors[f"{kv}.{layer}"] = ((values % 97) / 16 - 3).astype(np_dtype)
    if dtype == "int8":
        recipe = ("safetensors.numpy.save (no metadata) of, for layer l and (kv, i) in ((k, 0), (v, 1)): "
                  "'{kv}.{l}' = ((arange(o, o + H*N*D) % 255) - 127).astype(int8).reshape(H, N, D) with "
                  "o = (2*l + i)*H*N*D, and '{kv}_scale.{l}' = full((H, N, 1), 1/64, float32)")
    else:
        recipe = ("safetensors.numpy.save (no metadata) of, for layer l and (kv, i) in ((k, 0), (v, 1)): "
                  f"'{{kv}}.{{l}}' = ((arange(o, o + H*N*D) % 97) / 16 - 3).astype({dtype}).reshape(H, N, D) "
                  "with o = (2*l + i)*H*N*D")
    return st_save(tensors), recipe


ACTIVATION_INT8_TOKENS = [1, 15, 22, 4000, 65535, 65536, 2**31, 2**32 - 1, 0, 7]
ACTIVATION_F32_TOKENS = [1, 2, 3, 4, 5]


def prefix_ids(tokens: list[int]) -> bytes:
    """meta.token_ids: the ids as little-endian u32."""
    return struct.pack(f"<{len(tokens)}I", *tokens)


def activation_meta(dtype: str, tokens: list[int], block_size: int, layers: int, kv_heads: int,
                    head_dim: int, adapter: bytes | None) -> dict:
    salt = prefix.salt(MODEL_FP, TOKENIZER_FP, adapter, dtype)
    meta = {"model": MODEL_FP, "tokenizer": TOKENIZER_FP, "dtype": dtype, "n_tokens": len(tokens),
            "block_size": block_size, "prefix_keys": prefix.prefix_keys(tokens, salt, block_size),
            "layout": {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim}}
    if adapter is not None:
        meta["adapter"] = adapter
    return meta


# -- (d) cubes ---------------------------------------------------------------------------------

def cube_specs() -> list[dict]:
    """Inputs of the golden cubes: name, kind, payload, meta, chunk_size, optional fields, notes."""
    specs = []
    items_payload = payloads.encode_items(PLAINTEXT_ITEMS)
    specs.append({
        "name": "plaintext", "kind": "plaintext", "payload": items_payload,
        "recipe": "payloads.encode_items(items): canonical msgpack of {'items': items}",
        "items": PLAINTEXT_ITEMS, "meta": {"items": len(PLAINTEXT_ITEMS)}, "chunk_size": 1024,
        "optional": {"name": "notes/golden", "version": 1, "tags": ["golden", "test"], "license": "CC0-1.0",
                     "description": "MIP v1 golden vector: a plaintext cube of five items.",
                     "expires": CREATED + 365 * 86400},
    })
    plaintext_id = build_cube(specs[0]).cube_id
    config, lora, lora_recipe = lora_payload()
    specs.append({
        "name": "parameter", "kind": "parameter", "payload": lora, "recipe": lora_recipe,
        "adapter_config": config,
        "meta": {"base_model": BASE_FP, "peft": payloads.peft_summary(config)}, "chunk_size": 1024,
        "optional": {"name": "lora/golden", "version": 2, "supersedes": PREVIOUS_VERSION,
                     "parents": [plaintext_id], "license": "Apache-2.0"},
    })
    layout = dict(layers=2, kv_heads=2, head_dim=8)
    kv8, kv8_recipe = kv_payload("int8", n_tokens=len(ACTIVATION_INT8_TOKENS), **layout)
    specs.append({
        "name": "activation_int8", "kind": "activation", "payload": kv8,
        "recipe": kv8_recipe + f" (H=2, N={len(ACTIVATION_INT8_TOKENS)}, D=8, 2 layers)",
        "token_ids": ACTIVATION_INT8_TOKENS,
        "meta": activation_meta("int8", ACTIVATION_INT8_TOKENS, 4, adapter=ADAPTER_FP, **layout),
        "chunk_size": 1024, "optional": {"tags": ["kv"]},
    })
    kv32, kv32_recipe = kv_payload("float32", layers=1, kv_heads=1, n_tokens=len(ACTIVATION_F32_TOKENS), head_dim=4)
    specs.append({
        "name": "activation_float32_minimal", "kind": "activation", "payload": kv32,
        "recipe": kv32_recipe + f" (H=1, N={len(ACTIVATION_F32_TOKENS)}, D=4, 1 layer)",
        "token_ids": ACTIVATION_F32_TOKENS,
        "meta": activation_meta("float32", ACTIVATION_F32_TOKENS, 256, layers=1, kv_heads=1, head_dim=4,
                                adapter=None),
        "chunk_size": limits.DEFAULT_CHUNK_SIZE, "optional": {},
    })
    return specs


def build_cube(spec: dict) -> build.Cube:
    optional = dict(spec["optional"])
    for name in ("parents", "tags"):
        if name in optional:
            optional[name] = tuple(optional[name])
    return build.build(golden_key(), spec["kind"], spec["payload"], spec["meta"],
                       chunk_size=spec["chunk_size"], created=CREATED, **optional)


def cube_vectors(specs: list[dict]) -> dict:
    cases = []
    for spec in specs:
        cube = build_cube(spec)
        m = cube.manifest
        inputs: dict[str, Any] = {"kind": spec["kind"], "created": CREATED, "chunk_size": spec["chunk_size"],
                                  "meta": render(spec["meta"]), "optional": render(spec["optional"]),
                                  "payload": spec["payload"].hex(), "payload_recipe": spec["recipe"]}
        for extra in ("items", "adapter_config", "token_ids"):
            if extra in spec:
                inputs[extra] = spec[extra]
        cases.append({
            "name": spec["name"],
            "inputs": inputs,
            "expected": {
                "size": m.size,
                "chunks": [cid.to_text(c) for c in m.chunks],
                "distinct_chunks": len(set(m.chunks)),
                "unsigned_manifest": canonical.encode(m.unsigned_map()).hex(),
                "signing_bytes": m.signing_bytes().hex(),
                "signature": m.sig.hex(),
                "manifest": cube.manifest_bytes.hex(),
                "manifest_json": render({**m.unsigned_map(), "sig": m.sig}),
                "cube_id": cid.to_text(cube.cube_id),
                "cube_id_binary": cube.cube_id.hex(),
            },
        })
    return {
        "description": "Golden cubes, one per kind (docs/MIP.md sections 4-9). Build with memnet.cube.build.build"
                       "(key, kind, payload, meta, chunk_size=..., created=..., **optional) using the golden "
                       "key (keys.json); every expected value must match byte for byte. 'payload' is "
                       "authoritative; 'payload_recipe' says how it was made. signing_bytes = sign_domain + "
                       "unsigned_manifest; signature = Ed25519(private_seed, signing_bytes); manifest = "
                       "canonical(unsigned map + sig); cube_id = CID(manifest).",
        "conventions": "meta, optional and manifest_json use the JSON rendering of "
                       "protocol/schema/manifest.schema.json: binary fields as lower-case hex strings.",
        "key": "keys.json, case 'golden key'",
        "cases": cases,
    }


# -- (e) prefix keys ---------------------------------------------------------------------------

def prefix_vectors() -> dict:
    cases = []
    specs = [
        ("no adapter, partial last block", None, "float16", list(range(100, 110)), 4),
        ("with adapter, whole blocks", ADAPTER_FP, "bfloat16", list(range(8)), 4),
        ("ids up to 2^32-1, block of 1", None, "int8", [0, 1, 255, 256, 65536, 2**32 - 1], 1),
        ("the golden int8 activation cube", ADAPTER_FP, "int8", ACTIVATION_INT8_TOKENS, 4),
        ("empty token list", None, "float32", [], 256),
    ]
    for name, adapter, dtype, tokens, block in specs:
        salt = prefix.salt(MODEL_FP, TOKENIZER_FP, adapter, dtype)
        salt_input = prefix.SALT_DOMAIN + MODEL_FP + TOKENIZER_FP + (adapter or prefix.NO_ADAPTER) + dtype.encode()
        cases.append({"name": name, "model": MODEL_FP.hex(), "tokenizer": TOKENIZER_FP.hex(),
                      "adapter": adapter.hex() if adapter else None, "dtype": dtype,
                      "salt_input": salt_input.hex(), "salt": salt.hex(), "token_ids": tokens,
                      "block_size": block, "keys": [k.hex() for k in prefix.prefix_keys(tokens, salt, block)]})
    return {
        "description": "Prefix-chain keys of activation cubes (docs/MIP.md section 9). salt = sha256('memnet/kv/v1' "
                       "00 + model + tokenizer + (adapter or 32 zero bytes) + ASCII dtype); key_0 = sha256(salt + "
                       "block_0), key_i = sha256(key_{i-1} + block_i), each block = its token ids as little-endian "
                       "u32; the last block may be shorter. adapter null = no adapter.",
        "cases": cases,
    }


# -- (f) CAR archives --------------------------------------------------------------------------

def car_bytes(cubes: list[build.Cube]) -> bytes:
    out = io.BytesIO()
    car.write(out, cubes)
    return out.getvalue()


def car_vectors(cubes: dict[str, build.Cube]) -> dict:
    cases = []
    for names in (["plaintext"], ["parameter"]):
        chosen = [cubes[n] for n in names]
        data = car_bytes(chosen)
        header = car.encode_header([c.cube_id for c in chosen])
        order = []
        for c in chosen:
            for block_cid in [c.cube_id, *c.manifest.chunks]:
                if cid.to_text(block_cid) not in order:
                    order.append(cid.to_text(block_cid))
        cases.append({"name": " + ".join(names), "cubes": names, "roots": [cid.to_text(c.cube_id) for c in chosen],
                      "header": header.hex(), "blocks": order, "car": data.hex()})
    plain = car_bytes([cubes["plaintext"]])
    header = car.encode_header([cubes["plaintext"].cube_id])
    first = len(car.encode_varint(len(header))) + len(header)
    blocks = plain[first:]
    manifest_block = car.encode_varint(cid.CID_LEN + len(cubes["plaintext"].manifest_bytes)) + \
        cubes["plaintext"].cube_id + cubes["plaintext"].manifest_bytes

    def with_header(h: bytes, rest: bytes = blocks) -> bytes:
        return car.encode_varint(len(h)) + h + rest

    root_link = cbor2.CBORTag(42, b"\x00" + cubes["plaintext"].cube_id)
    flipped = bytearray(plain)
    flipped[-1] ^= 0x01
    dag_pb = bytes([0x01, 0x70]) + cubes["plaintext"].cube_id[2:]
    invalid = [
        ("empty", b""),
        ("truncated in the last block", plain[:-10]),
        ("block bytes do not hash to their CID", bytes(flipped)),
        ("duplicate block", plain + manifest_block),
        ("root block missing", with_header(car.encode_header([cid.cid_of(b"absent")]))),
        ("header version 2", with_header(cbor2.dumps({"roots": [root_link], "version": 2}, canonical=True))),
        ("header keys not in canonical order", with_header(cbor2.dumps({"version": 1, "roots": [root_link]}))),
        ("header with no roots", with_header(cbor2.dumps({"roots": [], "version": 1}, canonical=True))),
        ("non-minimal varint", bytes([len(header) | 0x80, 0x00]) + header + blocks),
        ("block CID is not raw sha2-256", with_header(header, blocks.replace(cubes["plaintext"].cube_id, dag_pb, 1))),
    ]
    return {
        "description": "CARv1 archives as memnet writes them (docs/MIP.md section 12): varint(len) + DAG-CBOR "
                       "{'roots': [CID links], 'version': 1}, then varint(36 + len(data)) + binary CID + data "
                       "for the manifest and each distinct chunk, in manifest order. 'invalid': readers "
                       "must refuse (memnet.cube.car.read with max_total).",
        "max_total": CAR_MAX_TOTAL,
        "cases": cases,
        "invalid": [{"name": n, "car": d.hex(), "error": "ArchiveError"} for n, d in invalid],
    }


# -- (g) invalid manifests ---------------------------------------------------------------------

def pack_pairs(pairs: list[tuple[str, bytes]]) -> bytes:
    """A msgpack map from (key, already-encoded value) pairs, in the order given."""
    out = msgpack.Packer(use_bin_type=True).pack_map_header(len(pairs))
    for key, value in pairs:
        out += canonical.encode(key) + value
    return out


def signed_map(unsigned: dict, key: Ed25519PrivateKey | None = None, domain: bytes = manifest.SIGN_DOMAIN) -> dict:
    sig = (key or golden_key()).sign(domain + canonical.encode(unsigned))
    return {**unsigned, "sig": sig}


def invalid_manifest_vectors(cubes: dict[str, build.Cube]) -> dict:
    good = cubes["plaintext"]
    signed = canonical.decode(good.manifest_bytes, limits.MAX_MANIFEST)
    base = {k: v for k, v in signed.items() if k != "sig"}
    pairs = [(k, canonical.encode(v)) for k, v in canonical.decode(good.manifest_bytes, limits.MAX_MANIFEST).items()]

    def replaced(key: str, raw: bytes) -> bytes:
        return pack_pairs([(k, raw if k == key else v) for k, v in pairs])

    def resign(**changes: Any) -> bytes:
        unsigned = {**base, **changes}
        return canonical.encode(signed_map({k: v for k, v in unsigned.items() if v is not ...}))

    def drop(*names: str) -> dict:
        return {name: ... for name in names}

    def of(kind: str, **meta_changes: Any) -> bytes:
        other = canonical.decode(cubes[kind].manifest_bytes, limits.MAX_MANIFEST)
        unsigned = {k: v for k, v in other.items() if k != "sig"}
        unsigned["meta"] = {**unsigned["meta"], **meta_changes}
        return canonical.encode(signed_map(unsigned))

    sig = signed["sig"]
    forged = bytes([sig[0] ^ 0x01]) + sig[1:]
    dag_pb_chunk = bytes([0x01, 0x70]) + good.manifest.chunks[0][2:]
    bad_utf8 = b"\xa9" + b"plaintex\xff"
    cases: list[tuple[str, bytes, str, dict]] = [
        # canonical form (checked before the signature)
        ("empty input", b"", "CanonicalError", {}),
        ("keys not in canonical order", msgpack.packb(dict(reversed(list(signed.items()))), use_bin_type=True),
         "CanonicalError", {}),
        ("duplicate key", pack_pairs(pairs[:1] + pairs), "CanonicalError", {}),
        ("trailing byte", good.manifest_bytes + b"\x00", "CanonicalError", {}),
        ("created as uint64 (non-minimal integer)", replaced("created", b"\xcf" + struct.pack(">Q", CREATED)),
         "CanonicalError", {}),
        ("created as float64", replaced("created", b"\xcb" + struct.pack(">d", float(CREATED))),
         "CanonicalError", {}),
        ("description is nil", replaced("description", b"\xc0"), "CanonicalError", {}),
        ("description is an extension type", replaced("description", b"\xd4\x01\x00"), "CanonicalError", {}),
        ("kind is not UTF-8", replaced("kind", bad_utf8), "CanonicalError", {}),
        # identity and signature
        ("manifest bytes do not hash to the CID asked for", good.manifest_bytes, "CIDError",
         {"expected_cid": cid.to_text(cid.cid_of(b"some other manifest"))}),
        ("not a map", canonical.encode([1, 2, 3]), "FormatError", {}),
        ("no sig", canonical.encode(base), "FormatError", {}),
        ("sig of 63 bytes", canonical.encode({**base, "sig": sig[:63]}), "FormatError", {}),
        ("author of 31 bytes", canonical.encode({**signed, "author": signed["author"][:31]}), "FormatError", {}),
        ("forged signature (one bit flipped)", canonical.encode({**signed, "sig": forged}), "SignatureError", {}),
        ("signed by another key", canonical.encode(signed_map(base, other_key())), "SignatureError", {}),
        ("signed without the domain string", canonical.encode(signed_map(base, domain=b"")), "SignatureError", {}),
        ("field changed after signing", canonical.encode({**signed, "description": "changed"}),
         "SignatureError", {}),
        # fields (validly signed)
        ("future MIP version 2", resign(mip=2), "FormatError", {}),
        ("unknown kind", resign(kind="embedding"), "FormatError", {}),
        ("unknown field", resign(extra=1), "FormatError", {}),
        ("missing created", resign(**drop("created")), "FormatError", {}),
        ("created is a bool", resign(created=True), "FormatError", {}),
        ("mip is the bool true", resign(mip=True), "FormatError", {}),
        ("author is a str", resign(author="a" * 32), "FormatError", {}),
        ("size needs another chunk", resign(size=good.manifest.size + 1024), "FormatError", {}),
        ("chunk_size below 1024", resign(chunk_size=512), "FormatError", {}),
        ("chunk_size above 4 MiB", resign(chunk_size=8 * 1024 * 1024), "LimitError", {}),
        ("chunk CID with dag-pb codec", resign(chunks=[dag_pb_chunk, *good.manifest.chunks[1:]]), "CIDError", {}),
        ("name without version", resign(**drop("version")), "FormatError", {}),
        ("version 0", resign(version=0), "FormatError", {}),
        ("name with a space", resign(name="notes golden"), "FormatError", {}),
        ("name with a trailing newline", resign(name="notes/golden\n"), "FormatError", {}),
        ("tag with a trailing newline", resign(tags=["golden\n"]), "FormatError", {}),
        ("name longer than 128 bytes", resign(name="n" * 129), "LimitError", {}),
        ("supersedes on version 1", resign(supersedes=PREVIOUS_VERSION), "FormatError", {}),
        ("empty parents list", resign(parents=[]), "FormatError", {}),
        ("repeated parent", resign(parents=[PREVIOUS_VERSION, PREVIOUS_VERSION]), "FormatError", {}),
        ("expires before created", resign(expires=CREATED - 1), "FormatError", {}),
        ("empty tags list", resign(tags=[]), "FormatError", {}),
        ("tags not sorted", resign(tags=["test", "golden"]), "FormatError", {}),
        ("33 tags", resign(tags=[f"t{i:02d}" for i in range(33)]), "LimitError", {}),
        ("empty description", resign(description=""), "FormatError", {}),
        ("description of 4097 bytes", resign(description="d" * 4097), "LimitError", {}),
        ("plaintext meta with an unknown field", resign(meta={"items": 5, "extra": 1}), "FormatError", {}),
        ("plaintext meta.items is a str", resign(meta={"items": "5"}), "FormatError", {}),
        ("plaintext meta.embedding of 16 bytes", resign(meta={"items": 5, "embedding": bytes(16)}),
         "FormatError", {}),
        ("activation meta: prefix_keys count does not fit n_tokens",
         of("activation_int8", n_tokens=20), "FormatError", {}),
        ("activation meta: dtype float64", of("activation_int8", dtype="float64"), "FormatError", {}),
        ("activation meta: token_ids that do not hash to prefix_keys",
         of("activation_int8", token_ids=prefix_ids(ACTIVATION_INT8_TOKENS[:-1] + [8])), "FormatError", {}),
        ("activation meta: token_ids one id short",
         of("activation_int8", token_ids=prefix_ids(ACTIVATION_INT8_TOKENS[:-1])), "FormatError", {}),
        ("activation meta: layout lacks head_dim",
         of("activation_int8", layout={"layers": 2, "kv_heads": 2}), "FormatError", {}),
        ("parameter meta: peft type IA3",
         of("parameter", peft={**cubes["parameter"].manifest.meta["peft"], "type": "IA3"}), "FormatError", {}),
        ("parameter meta: targets not sorted",
         of("parameter", peft={**cubes["parameter"].manifest.meta["peft"], "targets": ["v_proj", "q_proj"]}),
         "FormatError", {}),
    ]
    out = []
    for name, data, error, extra in cases:
        case = {"name": name, "manifest": data.hex(), "error": error}
        if "expected_cid" in extra:
            case["expected_cid"] = extra["expected_cid"]
        out.append(case)
    return {
        "description": "Manifests that memnet.cube.manifest.decode(manifest, expected_cid) must refuse with the "
                       "named memnet.errors class (docs/MIP.md section 11). Unless the name says otherwise, each "
                       "is the golden plaintext manifest with one change, validly signed by the golden key, so "
                       "only that change is wrong. expected_cid, when present, is the CID that was asked for.",
        "cases": out,
    }


# -- invalid payloads --------------------------------------------------------------------------

def st_raw(header_text: str, data: bytes, header_len: int | None = None) -> bytes:
    """A safetensors file from a literal JSON header (so it can hold duplicates and mistakes),
    padded with spaces to a multiple of 8 bytes or to exactly header_len bytes."""
    raw = header_text.encode("utf-8")
    raw += b" " * ((-len(raw) % 8) if header_len is None else header_len - len(raw))
    return struct.pack("<Q", len(raw)) + raw + data


def plaintext_vector_cases() -> list[tuple]:
    """Plaintext items with embeddings (docs/MIP.md section 18): vec is float16 little-endian."""
    def f16(*values: float) -> bytes:
        return np.array(values, dtype="<f2").tobytes()

    emb = {"items": 2, "embedding": EMBEDDING_FP}
    two = [{"text": "cats purr", "vec": f16(0.6, 0.8, 0)}, {"text": "dogs bark", "meta": {"s": "pets"},
                                                           "vec": f16(0, -0.6, 0.8)}]

    def items(*changed: dict) -> bytes:
        return canonical.encode({"items": list(changed)})

    return [
        ("plaintext", emb, items(*two), None, "valid: two items with 3-dimensional vectors"),
        ("plaintext", {"items": 2}, items(*two), "FormatError", "vec present but meta names no embedding"),
        ("plaintext", emb, items({"text": "cats purr"}, {"text": "dogs bark"}), "FormatError",
         "meta names an embedding but the items carry no vec"),
        ("plaintext", emb, items(two[0], {"text": "dogs bark"}), "FormatError", "second item lacks vec"),
        ("plaintext", emb, items(two[0], {**two[1], "vec": f16(0, 1)}), "FormatError", "vec dimensions differ"),
        ("plaintext", emb, items(two[0], {**two[1], "vec": two[1]["vec"][:-1]}), "FormatError",
         "vec of odd length (truncated float16)"),
        ("plaintext", emb, items(two[0], {**two[1], "vec": b""}), "FormatError", "empty vec"),
        ("plaintext", emb, items(two[0], {**two[1], "vec": f16(0, float("nan"), 1)}), "FormatError",
         "vec holds a NaN"),
        ("plaintext", emb, items(two[0], {**two[1], "vec": f16(0, float("-inf"), 1)}), "FormatError",
         "vec holds -infinity"),
        ("plaintext", {"items": 1, "embedding": EMBEDDING_FP},
         items({"text": "x", "vec": bytes(2 * limits.MAX_EMBEDDING_DIM + 2)}), "LimitError",
         "vec of 4097 dimensions"),
    ]


def invalid_payload_vectors(specs: dict[str, dict]) -> dict:
    small_meta = activation_meta("float32", [1, 2], 4, layers=1, kv_heads=1, head_dim=2, adapter=None)
    f32 = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    k_v = f32.tobytes()
    two = k_v + k_v
    int8_meta = specs["activation_int8"]["meta"]
    lora_meta = specs["parameter"]["meta"]
    config = specs["parameter"]["adapter_config"]
    lora_a = np.ones((4, 8), dtype=np.float32)
    lora_b = np.zeros((8, 4), dtype=np.float32)
    prefix_q = "base_model.model.model.layers.0.self_attn.q_proj"

    def lora(tensors: dict, cfg: dict | None = config) -> bytes:
        weights = st_save(tensors)
        return weights if cfg is None else payloads.build_parameter_payload(cfg, weights)

    entry = '{"dtype":"F32","shape":[1,2,2],"data_offsets":[%d,%d]}'
    cases = [
        ("plaintext", {"items": 1}, canonical.encode({"items": [{"text": ""}]}), "FormatError",
         "empty item text"),
        ("plaintext", {"items": 2}, payloads.encode_items([{"text": "one"}]), "FormatError",
         "meta.items says 2, the payload holds 1"),
        ("plaintext", {"items": 1}, canonical.encode({"items": [{"text": "x", "score": 1}]}), "FormatError",
         "item with an unknown field"),
        ("plaintext", {"items": 1}, canonical.encode({"items": [{"text": "x", "meta": {"n": 1}}]}),
         "FormatError", "item meta value is not a string"),
        ("plaintext", {"items": 1}, canonical.encode({"items": [{"text": "x"}], "v": 1}), "FormatError",
         "payload map with a field besides items"),
        ("plaintext", {"items": 1}, msgpack.packb({"items": [{"text": "x"}]}, use_bin_type=True) + b"\x00",
         "CanonicalError", "trailing byte"),
        *plaintext_vector_cases(),
        ("activation", small_meta, st_save({"k.0": f32, "v.0": f32}), None, "valid (reference for the cases below)"),
        ("activation", small_meta, st_raw('{"k.0":' + entry % (0, 16) + ',"v.0":' + entry % (16, 32) + "}", two,
                                          header_len=0x180), None,
         "valid: header length 0x180 starts with byte 0x80 (pickle magic) yet is safetensors"),
        ("activation", small_meta, st_raw('{"k.0":' + entry % (0, 16) + ',"v.0":' + entry % (16, 32) + "}", two,
                                          header_len=0x4B50), None,
         "valid: header length 0x4b50 starts with 'PK' (zip magic) yet is safetensors"),
        ("activation", small_meta, st_save({"k.0": f32}), "TensorError", "v.0 missing"),
        ("activation", small_meta, st_save({"k.0": f32, "v.0": f32, "x": f32}), "TensorError", "extra tensor"),
        ("activation", small_meta, st_save({"k.0": f32, "v.0": f32.reshape(1, 4, 1)}), "TensorError",
         "shape does not match layout"),
        ("activation", small_meta, st_save({"k.0": f32.astype(np.float16), "v.0": f32.astype(np.float16)}),
         "TensorError", "dtype F16 but meta says float32"),
        ("activation", int8_meta, st_save({f"{kv}.{l}": np.zeros((2, 10, 8), np.int8)
                                           for l in range(2) for kv in "kv"}),
         "TensorError", "int8 without scale tensors"),
        ("activation", small_meta, st_raw("{" + '"k.0":' + entry % (0, 16) + ',"k.0":' + entry % (0, 16)
                                          + ',"v.0":' + entry % (16, 32) + "}", two), "TensorError",
         "duplicate tensor name in the JSON header"),
        ("activation", small_meta, st_raw('{"k.0":{"dtype":"F64","shape":[1,2,2],"data_offsets":[0,32]},'
                                          '"v.0":' + entry % (32, 48) + "}", k_v * 3), "TensorError",
         "dtype F64 is not allowed"),
        ("activation", small_meta, st_raw('{"k.0":' + entry % (0, 16) + ',"v.0":' + entry % (24, 40) + "}",
                                          k_v + bytes(8) + k_v), "TensorError", "gap between tensors"),
        ("activation", small_meta, st_raw('{"k.0":' + entry % (0, 16) + ',"v.0":' + entry % (8, 24) + "}",
                                          two), "TensorError", "overlapping tensors"),
        ("activation", small_meta, st_save({"k.0": f32, "v.0": f32}) + b"\x00", "TensorError",
         "trailing byte after the tensor data"),
        ("activation", small_meta, st_raw('{"k.0":{"dtype":"F32","shape":[1,2,2],"data_offsets":[0,16],'
                                          '"x":1},"v.0":' + entry % (16, 32) + "}", two), "TensorError",
         "tensor entry with an extra field"),
        ("activation", small_meta, st_raw('{"__metadata__":{"n":1},"k.0":' + entry % (0, 16) + ',"v.0":'
                                          + entry % (16, 32) + "}", two), "TensorError",
         "__metadata__ value is not a string"),
        ("activation", small_meta, st_raw('[1]', b""), "TensorError", "header is not a JSON object"),
        ("activation", small_meta, struct.pack("<Q", 4096) + b"{}", "TensorError", "header runs past the end"),
        ("activation", small_meta, struct.pack("<Q", limits.MAX_SAFETENSORS_HEADER + 8) + b"{}      ",
         "LimitError", "header length above 16 MiB"),
        ("activation", small_meta, b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94.", "TensorError",
         "a pickle"),
        ("activation", small_meta, b"PK\x03\x04" + bytes(26), "TensorError", "a zip archive (torch.save)"),
        ("parameter", lora_meta, lora({f"{prefix_q}.lora_A.weight": lora_a, f"{prefix_q}.lora_B.weight": lora_b},
                                      cfg=None), "TensorError", "no memnet.peft_config metadata"),
        ("parameter", lora_meta, lora({f"{prefix_q}.lora_A.weight": lora_a, f"{prefix_q}.lora_B.weight": lora_b},
                                      cfg={**config, "r": 8}), "FormatError", "PEFT config r 8 but meta.peft.r 4"),
        ("parameter", lora_meta, lora({f"{prefix_q}.weight": lora_a}), "TensorError", "not a LoRA A/B tensor"),
        ("parameter", lora_meta, lora({f"{prefix_q}.lora_A.weight": np.ones((8, 8), np.float32)}),
         "TensorError", "lora_A of rank 8 but r 4"),
        ("parameter", lora_meta, lora({"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight": lora_a}),
         "TensorError", "adapts k_proj, which meta.peft.targets does not list"),
        ("parameter", lora_meta, lora({f"{prefix_q}.lora_A.weight": lora_a.astype(np.int8)}), "TensorError",
         "LoRA tensor in I8"),
        ("parameter", lora_meta, lora({}), "TensorError", "no tensors"),
    ]
    return {
        "description": "Payloads checked against their (authenticated) manifest meta by "
                       "memnet.cube.payloads.validate_payload(kind, payload, meta) (docs/MIP.md sections 8, "
                       "10, 11, 18). error null = the payload is valid; otherwise the named memnet.errors class.",
        "conventions": "meta uses the JSON rendering (binary fields as lower-case hex).",
        "cases": [{"name": note, "kind": kind, "meta": render(meta), "payload": data.hex(), "error": error}
                  for kind, meta, data, error, note in cases],
    }


# -- (h) name records --------------------------------------------------------------------------

def name_vectors(cubes: dict[str, build.Cube]) -> dict:
    """Signed name records (docs/MIP.md section 16), checked at the fixed times recorded as "now"."""
    from memnet.cube import name_record as nr

    author = keys.public_bytes(golden_key())
    name, expires = "notes/golden", CREATED + nr.DEFAULT_TTL
    cube_id, other_cube = cubes["plaintext"].cube_id, cubes["parameter"].cube_id
    good = nr.sign(golden_key(), name, cube_id, 3, expires)
    fields = canonical.decode(good, nr.MAX_RECORD)
    unsigned, sig = {k: v for k, v in fields.items() if k != "sig"}, fields["sig"]
    key = nr.dht_key(author, name)

    def resign(k: Ed25519PrivateKey | None = None, domain: bytes = nr.SIGN_DOMAIN, **changes: Any) -> bytes:
        return canonical.encode(signed_map({**unsigned, **changes}, k, domain))

    def forged(**changes: Any) -> bytes:  # changed fields, the good signature
        return canonical.encode({**fields, **changes})

    now = CREATED + 3600
    invalid = [
        ("expired (now = expires)", good, expires, None, "PolicyError"),
        ("expires more than MAX_TTL after now", good, expires - nr.MAX_TTL - 1, None, "PolicyError"),
        ("stored under another name's key", good, now, nr.dht_key(author, "notes/other"), "PolicyError"),
        ("stored under another author's key", good, now,
         nr.dht_key(keys.public_bytes(other_key()), name), "PolicyError"),
        ("seq changed without re-signing", forged(seq=4), now, None, "SignatureError"),
        ("cube changed without re-signing", forged(cube=other_cube), now, None, "SignatureError"),
        ("signature byte flipped", forged(sig=sig[:-1] + bytes([sig[-1] ^ 1])), now, None, "SignatureError"),
        ("signed by another key", resign(other_key()), now, None, "SignatureError"),
        ("signed under the manifest domain", resign(domain=manifest.SIGN_DOMAIN), now, None, "SignatureError"),
        ("unknown field", resign(ttl=3600), now, None, "FormatError"),
        ("missing field", canonical.encode({k: v for k, v in fields.items() if k != "expires"}), now, None, "FormatError"),
        ("negative seq", resign(seq=-1), now, None, "FormatError"),
        ("name with a space", resign(name="notes golden"), now, None, "FormatError"),
        ("cube that is not a raw sha2-256 CIDv1", resign(cube=b"\x01\x70" + cube_id[2:]), now, None,
         "CIDError"),
        ("keys out of canonical order", msgpack.packb(dict(reversed(fields.items())), use_bin_type=True),
         now, None, "CanonicalError"),
        ("truncated", good[:-1], now, None, "CanonicalError"),
        ("larger than MAX_RECORD", resign(pad=bytes(nr.MAX_RECORD)), now, None, "LimitError"),
    ]
    a = nr.sign(golden_key(), name, cube_id, 4, expires)
    b = nr.sign(golden_key(), name, other_cube, 4, expires)
    selections = [
        ("higher seq wins", [good, a], 1),
        ("higher seq wins, either order", [a, good], 0),
        ("same seq: later expires wins", [nr.sign(golden_key(), name, cube_id, 4, expires + 60), a], 0),
        ("same seq and expires: greater encoded bytes win", [a, b], [a, b].index(max(a, b))),
        ("an invalid record never wins", [forged(seq=99), good], 1),
    ]
    return {
        "description": "Signed name records (docs/MIP.md section 16). record = canonical msgpack of "
                       "{author, cube, expires, name, seq, sig}; sig = Ed25519 over sign_domain + "
                       "canonical(record without sig); DHT key = '/memnet-name/' + hex(sha256(key_domain + "
                       "author + UTF-8 name)). Check each case at the unix time given as 'now'. 'invalid': "
                       "decoders must refuse with the memnet.errors class named (with the DHT key 'key' "
                       "when given). 'select': the index of the record every node keeps.",
        "sign_domain": nr.SIGN_DOMAIN.hex(),
        "key_domain": nr.KEY_DOMAIN.hex(),
        "namespace": nr.NAMESPACE,
        "max_record": nr.MAX_RECORD,
        "max_ttl": nr.MAX_TTL,
        "default_ttl": nr.DEFAULT_TTL,
        "valid": [{
            "name": "golden key names notes/golden -> the golden plaintext cube",
            "path": f"{keys.peer_id(author)}/{name}",
            "fields": render(unsigned),
            "cube_text": cid.to_text(cube_id),
            "unsigned": canonical.encode(unsigned).hex(),
            "signing_bytes": (nr.SIGN_DOMAIN + canonical.encode(unsigned)).hex(),
            "signature": sig.hex(),
            "record": good.hex(),
            "dht_key_input": (nr.KEY_DOMAIN + author + name.encode()).hex(),
            "dht_key": key,
            "valid_at": [now, expires - 1, expires - nr.MAX_TTL],
        }],
        "invalid": [{"name": n, "record": r.hex(), "now": t, **({"key": k} if k else {}), "error": e}
                    for n, r, t, k, e in invalid],
        "select": [{"name": n, "key": key, "now": now, "records": [r.hex() for r in rs], "best": i}
                   for n, rs, i in selections],
    }


# -- (i) wire protocol -------------------------------------------------------------------------

def wire_vectors(cubes: dict[str, build.Cube]) -> dict:
    plain = cubes["plaintext"]
    cube_id, chunks = plain.cube_id, list(plain.manifest.chunks)
    first = bytes(plain.chunks[chunks[0]])
    absent = cid.cid_of(b"memnet golden vector: a chunk nobody holds")
    lora = cubes["parameter"]
    flags = [i % 3 != 1 for i in range(len(lora.manifest.chunks))]
    valid = [
        ("get_manifest", wire.get_manifest(1, cube_id)),
        ("manifest: the golden plaintext manifest", wire.manifest(1, plain.manifest_bytes)),
        ("get_chunks", wire.get_chunks(2, cube_id, [chunks[0], absent])),
        ("chunk: the first chunk of the golden plaintext cube", wire.chunk(2, chunks[0], first)),
        ("missing", wire.missing(2, absent)),
        ("get_have: the golden parameter cube", wire.get_have(3, lora.cube_id)),
        (f"have: its chunks i with i % 3 != 1, of {len(flags)}", wire.have(3, wire.bits_from_flags(flags))),
        ("have: a cube with no chunks", wire.have(4, b"")),
        ("error (id 0: the request could not be parsed)",
         wire.error(0, "bad_request", "frame length varint is not minimal")),
        ("error with non-ASCII text, largest id", wire.error(wire.MAX_ID, "not_found", "no such cube here \u00e9")),
        ("get_prefix: the golden activation cube's first prefix key",
         wire.get_prefix(5, cubes["activation_int8"].manifest.meta["prefix_keys"][0])),
        ("cubes: the golden activation cube", wire.cubes(5, [cubes["activation_int8"].cube_id])),
        ("cubes: none held", wire.cubes(6, [])),
    ]
    bitfields = [
        ("none", []), ("one set", [True]), ("last of a byte", [False] * 7 + [True]),
        ("nine: two bytes, seven padding bits", [True, False, True, True, False, False, False, False, True]),
        ("sixteen set", [True] * 16),
    ]

    def framed(body: bytes) -> bytes:
        return wire._varint(len(body)) + body

    def body(t: str, **fields: Any) -> bytes:
        return canonical.encode({"t": t, "id": 1, **fields})

    get = body("get_manifest", cube=cube_id)
    many = [cid.cid_of(i.to_bytes(2, "big")) for i in range(wire.MAX_BATCH + 1)]
    dag_pb = bytes([0x01, 0x70]) + cube_id[2:]
    invalid = [
        # framing
        ("empty frame (length 0)", b"\x00", "FormatError"),
        ("non-minimal length varint", bytes([len(get) | 0x80, 0x00]) + get, "FormatError"),
        ("length varint longer than 4 bytes", b"\x80\x80\x80\x80\x01", "FormatError"),
        ("length above MAX_FRAME, no body sent", wire._varint(wire.MAX_FRAME + 1), "LimitError"),
        ("truncated inside the length", b"\x80", "FormatError"),
        ("truncated inside the body", framed(get)[:-1], "FormatError"),
        # body encoding
        ("keys not in canonical order",
         framed(msgpack.packb({"t": "get_manifest", "id": 1, "cube": cube_id}, use_bin_type=True)),
         "CanonicalError"),
        ("id 1 as uint32", framed(pack_pairs([("cube", canonical.encode(cube_id)), ("id", b"\xce\x00\x00\x00\x01"),
                                              ("t", canonical.encode("get_manifest"))])), "CanonicalError"),
        ("byte after the map inside the frame", framed(get + b"\x00"), "CanonicalError"),
        ("nil cube", framed(pack_pairs([("cube", b"\xc0"), ("id", b"\x01"), ("t", canonical.encode("get_manifest"))])),
         "CanonicalError"),
        # messages
        ("body is an array", framed(canonical.encode([1])), "FormatError"),
        ("unknown type", framed(body("get_everything", cube=cube_id)), "FormatError"),
        ("missing field", framed(body("get_manifest")), "FormatError"),
        ("unknown field", framed(body("get_manifest", cube=cube_id, want="all")), "FormatError"),
        ("id is a bool", framed(canonical.encode({"t": "get_manifest", "id": True, "cube": cube_id})), "FormatError"),
        ("id is 2^32", framed(canonical.encode({"t": "get_manifest", "id": 2**32, "cube": cube_id})), "FormatError"),
        ("id is negative", framed(canonical.encode({"t": "get_manifest", "id": -1, "cube": cube_id})), "FormatError"),
        ("cube is a str", framed(body("get_manifest", cube=cid.to_text(cube_id))), "FormatError"),
        ("cube CID with dag-pb codec", framed(body("get_manifest", cube=dag_pb)), "CIDError"),
        ("empty chunk list", framed(body("get_chunks", cube=cube_id, chunks=[])), "FormatError"),
        ("chunk listed twice", framed(body("get_chunks", cube=cube_id, chunks=[chunks[0], chunks[0]])), "FormatError"),
        (f"{wire.MAX_BATCH + 1} chunks in one request", framed(body("get_chunks", cube=cube_id, chunks=many)),
         "LimitError"),
        ("empty chunk data", framed(body("chunk", cid=chunks[0], data=b"")), "FormatError"),
        ("empty manifest data", framed(body("manifest", data=b"")), "FormatError"),
        ("have bitfield of MAX_CHUNKS/8 + 1 bytes", framed(body("have", bits=bytes(wire.MAX_HAVE_BYTES + 1))),
         "LimitError"),
        ("unknown error code", framed(body("error", code="teapot", message="")), "FormatError"),
        ("get_prefix key of 31 bytes", framed(body("get_prefix", key=bytes(31))), "FormatError"),
        ("cubes lists a cube twice", framed(body("cubes", cubes=[cube_id, cube_id])), "FormatError"),
        ("cubes lists a dag-pb CID", framed(body("cubes", cubes=[dag_pb])), "CIDError"),
        (f"cubes lists {wire.MAX_PREFIX_CUBES + 1} cubes", framed(body("cubes", cubes=many[:wire.MAX_PREFIX_CUBES + 1])),
         "LimitError"),
        (f"error message of {wire.MAX_MESSAGE_TEXT + 1} characters",
         framed(body("error", code="internal", message="x" * (wire.MAX_MESSAGE_TEXT + 1))), "LimitError"),
    ]
    return {
        "description": "MIP exchange protocol frames (docs/MIP.md section 14). A frame is varint(len(body)) + body: "
                       "unsigned LEB128, minimal, 1-4 bytes, 1 <= len <= max_frame; the body one canonical msgpack "
                       "map (section 2). 'valid': wire.encode_frame(message) must equal frame, and decoding frame "
                       "must give message. 'invalid': feed the whole frame to a decoder (wire.FrameDecoder with "
                       "max_frame), take messages until it raises or needs more bytes, then signal end of stream "
                       "(eof); the named memnet.errors class must be raised. 'bitfields': have bits for flags "
                       "(bit i in byte i//8, mask 0x80 >> i%8, padding bits zero); 'invalid_bitfields': bits "
                       "a reader expecting n flags must refuse.",
        "conventions": "message is the message map in JSON rendering: bin fields (cube, cid, data, bits, key, "
                       "chunks[], cubes[]) "
                       "as lower-case hex, every other value as itself.",
        "protocol_id": wire.PROTOCOL_ID,
        "limits": {"max_frame": wire.MAX_FRAME, "max_batch": wire.MAX_BATCH, "max_message_text": wire.MAX_MESSAGE_TEXT,
                   "max_have_bytes": wire.MAX_HAVE_BYTES, "max_id": wire.MAX_ID,
                   "max_prefix_cubes": wire.MAX_PREFIX_CUBES},
        "error_codes": sorted(wire.ERROR_CODES),
        "valid": [{"name": n, "message": render(m.to_map()), "frame": wire.encode_frame(m).hex()} for n, m in valid],
        "bitfields": [{"name": n, "flags": f, "bits": wire.bits_from_flags(f).hex()} for n, f in bitfields],
        "invalid_bitfields": [{"name": n, "bits": b.hex(), "n": k, "error": "FormatError"} for n, b, k in [
            ("padding bit set", b"\x40", 1), ("padding bit set in the second byte", b"\xff\x40", 9),
            ("one byte short", b"", 1), ("one byte too many", b"\x80\x00", 8)]],
        "invalid": [{"name": n, "frame": d.hex(), "error": e} for n, d, e in invalid],
    }


# -- sealed cubes ------------------------------------------------------------------------------

SEAL_SECRETS = sealed.Secrets(hashlib.sha256(b"memnet golden seal content key").digest(),
                              hashlib.sha256(b"memnet golden seal ephemeral key").digest())
SEALED_ITEMS = [{"text": "A sealed cube: only its recipients can read this."},
                {"text": "Providers store, verify and serve the ciphertext.", "meta": {"lang": "en"}}]
SEGMENTS_UNIT, SEGMENTS_REPEAT = "0123456789abcdef", 8192
THIRD_KEY_SEED = hashlib.sha256(b"memnet golden vector key 3").digest()


def recipient_vector(name: str, seed: bytes) -> dict:
    identity = Ed25519PrivateKey.from_private_bytes(seed)
    x_private = keys.x25519_key(identity)
    r = keys.recipient_of(identity)
    return {"name": name, "private_seed": seed.hex(),
            "x25519_private": x_private.private_bytes_raw().hex(), "x25519_public": r.x25519.hex(),
            "signing_bytes": (keys.RECIPIENT_DOMAIN + r.x25519).hex(), "signature": r.sig.hex(),
            "peer_id": r.peer_id, "recipient": r.text()}


def sealed_cube_vector(name: str, kind: str, payload: bytes, meta: dict, chunk_size: int,
                       readers: list[Ed25519PrivateKey], payload_fields: dict) -> tuple[dict, build.Cube]:
    recipients = [keys.recipient_of(k) for k in readers]
    cube = build.build(golden_key(), kind, payload, meta, chunk_size=chunk_size, created=CREATED,
                       recipients=recipients, secrets=SEAL_SECRETS)
    m = cube.manifest
    ciphertext = cube.payload()
    content_key = SEAL_SECRETS.content_key
    ephemeral = sealed.X25519PrivateKey.from_private_bytes(SEAL_SECRETS.ephemeral)
    epk = m.seal["epk"]
    wrap_keys = {r.peer_id: sealed._wrap_key(ephemeral, r.x25519, epk, r.x25519).hex() for r in recipients}
    small = "payload" in payload_fields  # big ciphertexts are pinned by their hash and chunk CIDs
    case = {
        "name": name,
        "inputs": {"kind": kind, "created": CREATED, "chunk_size": chunk_size, "meta": render(meta),
                   **payload_fields, "payload_sha256": hashlib.sha256(payload).hexdigest(),
                   "recipients": [r.text() for r in recipients],
                   "content_key": content_key.hex(), "ephemeral_private": SEAL_SECRETS.ephemeral.hex()},
        "expected": {
            "payload_key": sealed._hkdf(content_key, sealed.PAYLOAD_INFO).hex(),
            "commit": m.seal["commit"].hex(), "epk": epk.hex(), "wrap_keys": wrap_keys,
            "payload_aad": sealed._payload_aad(m.author, kind).hex(),
            "segments": max(1, -(-len(payload) // sealed.SEGMENT)),
            "size": m.size,
            **({"ciphertext": ciphertext.hex()} if small else {}),
            "ciphertext_sha256": hashlib.sha256(ciphertext).hexdigest(),
            "ciphertext_tail": ciphertext[-64:].hex(),
            "seal": render(m.seal),
            "chunks": [cid.to_text(c) for c in m.chunks],
            "unsigned_manifest": canonical.encode(m.unsigned_map()).hex(),
            "signature": m.sig.hex(),
            "manifest": cube.manifest_bytes.hex(),
            "manifest_json": render({**m.unsigned_map(), "sig": m.sig}),
            "cube_id": cid.to_text(cube.cube_id),
        },
    }
    return case, cube


def sealed_vectors(specs: dict[str, dict]) -> dict:
    golden, second = golden_key(), other_key()
    third = Ed25519PrivateKey.from_private_bytes(THIRD_KEY_SEED)
    items_payload = payloads.encode_items(SEALED_ITEMS)
    two, two_cube = sealed_cube_vector(
        "plaintext sealed to two recipients", "plaintext", items_payload, {"items": len(SEALED_ITEMS)}, 1024,
        [golden, second], {"items": SEALED_ITEMS, "payload": items_payload.hex()})
    big_items = [{"text": SEGMENTS_UNIT * SEGMENTS_REPEAT}]
    big_payload = payloads.encode_items(big_items)
    three, _ = sealed_cube_vector(
        "plaintext of three segments sealed to its author", "plaintext", big_payload, {"items": 1}, 65536,
        [golden], {"items_recipe": f"[{{'text': {SEGMENTS_UNIT!r} * {SEGMENTS_REPEAT}}}]"})
    lora = specs["parameter"]
    param, _ = sealed_cube_vector(
        "parameter sealed to two recipients", "parameter", lora["payload"], lora["meta"], 4096,
        [second, golden], {"payload_from": "cubes.json, case 'parameter', inputs.payload"})

    # opening failures: the first case's ciphertext and seal, changed one way each
    ciphertext, seal_map = two_cube.payload(), two_cube.manifest.seal
    flipped_key = [{**e, "key": bytes([e["key"][0] ^ 1]) + e["key"][1:]} if e["to"] == two_cube.manifest.author
                   else e for e in seal_map["recipients"]]

    def opening(name: str, error: str | None, reader: bytes = KEY_SEED, ct: bytes = ciphertext,
                seal: dict = seal_map, kind: str = "plaintext", author: bytes = two_cube.manifest.author) -> dict:
        return {"name": name, "reader_seed": reader.hex(), "kind": kind, "author": author.hex(),
                "ciphertext": ct.hex(), "seal": render(seal), "error": error}

    openings = [
        opening("the golden key opens it", None),
        opening("the second key opens it", None, reader=OTHER_KEY_SEED),
        opening("a third key is not a recipient", "PolicyError", reader=THIRD_KEY_SEED),
        opening("one ciphertext bit flipped", "SealError", ct=bytes([ciphertext[0] ^ 1]) + ciphertext[1:]),
        opening("ciphertext tag bit flipped", "SealError", ct=ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])),
        opening("ciphertext one byte short", "SealError", ct=ciphertext[:-1]),
        opening("ciphertext of 15 bytes (no room for a tag)", "SealError", ct=ciphertext[:15]),
        opening("wrapped key of the reader changed", "SealError", seal={**seal_map, "recipients": flipped_key}),
        opening("commit changed", "SealError", seal={**seal_map, "commit": bytes(32)}),
        opening("epk changed", "SealError", seal={**seal_map, "epk": keys.recipient_of(third).x25519}),
        opening("epk is a low-order point (all zero)", "SealError", seal={**seal_map, "epk": bytes(32)}),
        opening("read as another kind", "SealError", kind="parameter"),
        opening("read as another author's cube (copied and re-signed)", "SealError",
                author=keys.public_bytes(second)),
    ]

    # manifests decode must refuse: the first case's manifest, seal changed, validly re-signed
    signed_two = canonical.decode(two_cube.manifest_bytes, limits.MAX_MANIFEST)
    base = {k: v for k, v in signed_two.items() if k != "sig"}
    entries = seal_map["recipients"]

    def with_seal(**changes: Any) -> bytes:
        return canonical.encode(signed_map({**base, "seal": {k: v for k, v in {**seal_map, **changes}.items()
                                                             if v is not ...}}))

    def with_entries(new: list) -> bytes:
        return with_seal(recipients=new)

    many = [{"key": bytes(48), "to": hashlib.sha256(bytes([i])).digest()} for i in range(65)]
    kv = canonical.decode(activation_manifest(specs), limits.MAX_MANIFEST)
    kv_unsigned = {k: v for k, v in kv.items() if k != "sig"}
    invalid = [
        ("seal is not a map", canonical.encode(signed_map({**base, "seal": [1]})), "SealError"),
        ("seal.alg unknown", with_seal(alg="x25519-aes256gcm"), "SealError"),
        ("seal lacks commit", with_seal(commit=...), "SealError"),
        ("seal has an unknown field", with_seal(nonce=bytes(12)), "SealError"),
        ("seal.epk of 31 bytes", with_seal(epk=seal_map["epk"][:31]), "SealError"),
        ("seal.commit is a str", with_seal(commit="00" * 32), "SealError"),
        ("seal.recipients empty", with_entries([]), "SealError"),
        ("seal.recipients not sorted", with_entries(list(reversed(entries))), "SealError"),
        ("seal.recipients repeats a recipient", with_entries([entries[0], entries[0]]), "SealError"),
        ("65 recipients", with_entries(sorted(many, key=lambda e: e["to"])), "LimitError"),
        ("wrapped key of 47 bytes", with_entries([{**entries[0], "key": entries[0]["key"][:47]}, *entries[1:]]),
         "SealError"),
        ("recipient to of 33 bytes", with_entries([{**entries[0], "to": entries[0]["to"] + b"\x00"}, *entries[1:]]),
         "SealError"),
        ("recipient entry with an unknown field", with_entries([{**entries[0], "x": 1}, *entries[1:]]), "SealError"),
        ("size is not a sealed length (15 bytes)", canonical.encode(signed_map({**base, "size": 15})), "SealError"),
        ("seal on an activation cube", canonical.encode(signed_map({**kv_unsigned, "seal": seal_map})),
         "FormatError"),
        ("seal changed after signing", canonical.encode({**signed_two, "seal": {**seal_map, "commit": bytes(32)}}),
         "SignatureError"),
    ]
    return {
        "description": "Sealed (private) cubes, docs/MIP.md section 19. recipient_keys: each node's X25519 key is "
                       "HKDF-SHA256(ikm = the 32-byte Ed25519 private seed, no salt, info 'memnet/mip/v1/x25519'); "
                       "its recipient string is PeerID ':' lower-case unpadded base32(x25519 public || Ed25519 "
                       "signature over signing_bytes). cases: build with memnet.cube.build.build(golden key, kind, "
                       "payload, meta, chunk_size=..., created=..., recipients=[parsed recipient strings], "
                       "secrets=sealed.Secrets(content_key, ephemeral_private)); every expected value must "
                       "match byte for byte (large ciphertexts are given by sha256 and the chunk CIDs). "
                       "openings: memnet.cube.sealed.open_sealed(ciphertext, seal, kind=, author=, identity=the "
                       "reader's key) returns the case's payload (error null) or raises the named class. "
                       "invalid_manifests: memnet.cube.manifest.decode must refuse them with the named class; each "
                       "is the first case's manifest with one change, validly re-signed by the golden key "
                       "(the activation one starts from cubes.json's activation_float32_minimal).",
        "constants": {"alg": sealed.ALG, "segment": sealed.SEGMENT, "tag": sealed.TAG,
                      "max_recipients": limits.MAX_RECIPIENTS,
                      "x25519_info": keys.X25519_INFO.hex(), "recipient_domain": keys.RECIPIENT_DOMAIN.hex(),
                      "payload_info": sealed.PAYLOAD_INFO.hex(), "commit_info": sealed.COMMIT_INFO.hex(),
                      "wrap_info": sealed.WRAP_INFO.hex(), "payload_aad_prefix": sealed.PAYLOAD_AAD.hex(),
                      "wrap_aad_prefix": sealed.WRAP_AAD.hex()},
        "recipient_keys": [recipient_vector("golden key", KEY_SEED), recipient_vector("second key", OTHER_KEY_SEED),
                           recipient_vector("third key (never a recipient)", THIRD_KEY_SEED)],
        "cases": [two, three, param],
        "openings": openings,
        "invalid_manifests": [{"name": n, "manifest": d.hex(), "error": e} for n, d, e in invalid],
    }


def activation_manifest(specs: dict[str, dict]) -> bytes:
    """The manifest bytes of the golden activation_float32_minimal cube."""
    return build_cube(specs["activation_float32_minimal"]).manifest_bytes


# -- driver ------------------------------------------------------------------------------------

def span_vectors(cubes: dict[str, build.Cube]) -> dict:
    """Span protocol frames (docs/MIP.md §21) and DHT span records (§21.3)."""
    from memnet.net.frames import frame
    from memnet.span import protocol as sp
    from memnet.span import records as sr

    fingerprint = hashlib.sha256(b"memnet golden model").digest()
    seed_cube = cubes["activation_int8"].cube_id
    hidden = struct.pack("<8f", *[0.5 * i for i in range(8)])
    valid = [
        ("open: layers 0-15, 2048 tokens, no seed", sp.Open(0, 15, 2048, fingerprint)),
        ("open: layers 15-30, seeded with the golden activation cube's first 7 tokens",
         sp.Open(15, 30, 64, fingerprint, sp.Seed(seed_cube, 7))),
        ("open: seeded, with a provider hint", sp.Open(0, 15, 64, fingerprint, sp.Seed(
            seed_cube, 7, ("/ip4/127.0.0.1/tcp/4737/p2p/12D3KooWAMWpRF9u4JGXWJfnv6bDZ7UgCAEYTSU8BVgYwHhtkxos",)))),
        ("opened: seeded, 7 tokens, fetched 4096 bytes", sp.Opened(7, "fetched", 4096)),
        ("step: 2 tokens of a 4-wide hidden state at position 7", sp.Step(0, 7, 2, hidden)),
        ("output", sp.Output(0, hidden)),
        ("close", sp.Close()),
        ("error: admission", sp.Error("admission", "no room in the cache budget")),
    ]

    def body(t: str, **fields: Any) -> bytes:
        return canonical.encode({"t": t, **fields})

    invalid = [
        ("unknown type", frame(body("hello")), "FormatError"),
        ("open without model", frame(body("open", start=0, end=1, max_length=8)), "FormatError"),
        ("open with end == start", frame(body("open", start=4, end=4, max_length=8, model=fingerprint)), "FormatError"),
        ("open beyond 1024 layers", frame(body("open", start=0, end=1025, max_length=8, model=fingerprint)),
         "LimitError"),
        ("seed cube not a CID", frame(body("open", start=0, end=1, max_length=8, model=fingerprint,
                                           seed={"cube": b"xx", "tokens": 1})), "CIDError"),
        ("step of 0 tokens", frame(body("step", step=0, position=0, tokens=0, hidden=b"")), "FormatError"),
        ("error code not in the set", frame(body("error", code="teapot", message="")), "FormatError"),
        ("frame length above the limit", frames_varint(sp.MAX_FRAME + 1), "LimitError"),
    ]
    record = sr.SpanRecord("12D3KooWGolden", 0, 15, fingerprint, 0.0005, 16384, 8192,
                           frozenset({cubes["activation_int8"].manifest.meta["prefix_keys"][-1]}),
                           ("/ip4/127.0.0.1/tcp/4001",))
    good = record.to_value()
    bad_records = [
        ("another version", {**good, "v": 2}), ("start above end", {**good, "start": 20}),
        ("not a layer it serves (asked for 15)", good), ("offline", {**good, "state": "offline"}),
        ("layer_seconds 0", {**good, "layer_seconds": 0}), ("another model", {**good, "model": "00" * 32}),
        ("65 prefixes", {**good, "prefixes": ["00" * 32] * 65}),
    ]
    return {
        "description": "Span protocol (docs/MIP.md section 21): frames as in wire.json (varint length + canonical "
                       "msgpack map). 'valid': encoding message must give frame, decoding frame must give message. "
                       "'invalid': decoding must raise the named memnet.errors class. 'records': the value a span "
                       "server stores under each layer key, and values a reader must ignore (parse gives None) "
                       "for the layer named.",
        "protocol_id": sp.PROTOCOL_ID,
        "limits": {"max_frame": sp.MAX_FRAME, "max_layers": sp.MAX_LAYERS, "max_tokens": sp.MAX_TOKENS},
        "error_codes": sorted(sp.ERROR_CODES),
        "valid": [{"name": n, "message": render(m.to_map()), "frame": sp.encode(m).hex()} for n, m in valid],
        "invalid": [{"name": n, "frame": d.hex(), "error": e} for n, d, e in invalid],
        "records": {"model": fingerprint.hex(), "key_of_layer_3": sr.block_key(fingerprint, 3),
                    "valid": {"peer": record.peer, "layer": 3, "value": good},
                    "ignored": [{"name": n, "peer": record.peer, "layer": 15 if "asked for 15" in n else 3,
                                 "value": v} for n, v in bad_records]},
    }


def autonat_vectors() -> dict:
    """Reachability probe frames (docs/MIP.md §22.2)."""
    from memnet.net import autonat_wire as aw
    from memnet.net.frames import frame

    def body(**fields: Any) -> bytes:
        return frame(canonical.encode(fields))

    valid = [
        ("dial_me: one port", "dial_me", {"t": "dial_me", "ports": [4737]}, aw.encode_dial_me([4737])),
        ("dial_me: four ports", "dial_me", {"t": "dial_me", "ports": [4737, 4001, 9000, 65535]},
         aw.encode_dial_me([4737, 4001, 9000, 65535])),
        ("dial_result: ok", "dial_result", {"t": "dial_result", "status": "ok", "addr": "/ip4/172.32.0.1/tcp/4737"},
         aw.encode_dial_result(aw.DialResult("ok", "/ip4/172.32.0.1/tcp/4737"))),
        ("dial_result: dial_error", "dial_result", {"t": "dial_result", "status": "dial_error", "addr": ""},
         aw.encode_dial_result(aw.DialResult("dial_error"))),
        ("dial_result: refused", "dial_result", {"t": "dial_result", "status": "refused", "addr": ""},
         aw.encode_dial_result(aw.DialResult("refused"))),
    ]
    invalid = [
        ("no ports", "dial_me", body(t="dial_me", ports=[]), "LimitError"),
        ("five ports", "dial_me", body(t="dial_me", ports=[1, 2, 3, 4, 5]), "LimitError"),
        ("port 0", "dial_me", body(t="dial_me", ports=[0]), "FormatError"),
        ("a port twice", "dial_me", body(t="dial_me", ports=[80, 80]), "FormatError"),
        ("an address to dial (a third party)", "dial_me", body(t="dial_me", ports=[53], addr="/ip4/9.9.9.9/tcp/53"),
         "FormatError"),
        ("a result where a request belongs", "dial_me", body(t="dial_result", status="refused", addr=""), "FormatError"),
        ("ok without an address", "dial_result", body(t="dial_result", status="ok", addr=""), "FormatError"),
        ("unknown status", "dial_result", body(t="dial_result", status="maybe", addr=""), "FormatError"),
        ("address over 128 characters", "dial_result", body(t="dial_result", status="ok", addr="/ip4/" + "1" * 130),
         "LimitError"),
        ("frame above 512 bytes", "dial_me", frames_varint(aw.MAX_FRAME + 1), "LimitError"),
        ("bytes after the message", "dial_me", aw.encode_dial_me([1]) + b"\x00", "FormatError"),
    ]
    return {
        "description": "Reachability probes (docs/MIP.md section 22.2): one frame each way, varint length + canonical "
                       "msgpack map. 'valid': encoding message must give frame, reading frame as 'expect' must give "
                       "message. 'invalid': reading frame as 'expect' must raise the named memnet.errors class.",
        "protocol_id": aw.PROTOCOL_ID,
        "limits": {"max_frame": aw.MAX_FRAME, "max_ports": aw.MAX_PORTS, "max_addr": aw.MAX_ADDR},
        "statuses": list(aw.STATUSES),
        "valid": [{"name": n, "expect": e, "message": m, "frame": f.hex()} for n, e, m, f in valid],
        "invalid": [{"name": n, "expect": e, "frame": f.hex(), "error": err} for n, e, f, err in invalid],
    }


def frames_varint(n: int) -> bytes:
    from memnet.net.frames import varint
    return varint(n)


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> exact file text of every vector file."""
    specs = cube_specs()
    cubes = {spec["name"]: build_cube(spec) for spec in specs}
    by_name = {spec["name"]: spec for spec in specs}
    docs = {
        "canonical.json": canonical_vectors(),
        "cid.json": cid_vectors(),
        "keys.json": key_vectors(),
        "cubes.json": cube_vectors(specs),
        "prefix_keys.json": prefix_vectors(),
        "car.json": car_vectors(cubes),
        "invalid_manifests.json": invalid_manifest_vectors(cubes),
        "invalid_payloads.json": invalid_payload_vectors(by_name),
        "names.json": name_vectors(cubes),
        "wire.json": wire_vectors(cubes),
        "sealed.json": sealed_vectors(by_name),
        "span.json": span_vectors(cubes),
        "autonat.json": autonat_vectors(),
    }
    header = {"mip": limits.MIP_VERSION, "generator": "scripts/make_vectors.py"}
    return {name: dumps({**header, **doc}) for name, doc in docs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on any difference")
    parser.add_argument("--out", type=Path, default=VECTOR_DIR, help="vector folder (default protocol/vectors)")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        problems = []
        for name, text in files.items():
            path = args.out / name
            if not path.exists():
                problems.append(f"{path}: missing")
            elif path.read_text(encoding="utf-8") != text:
                problems.append(f"{path}: differs from what scripts/make_vectors.py generates")
        for path in sorted(args.out.glob("*.json")):
            if path.name not in files:
                problems.append(f"{path}: not generated by scripts/make_vectors.py (stale?)")
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{len(files)} vector files in {args.out} are up to date")
        return 1 if problems else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} vector files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
