"""Payload formats per kind, and the check that a payload agrees with its manifest meta.

plaintext:  canonical msgpack {"items": [{"text": str, ["meta": {str: str}], ["vec": bin]}, ...]};
            vec (float16 little-endian, on every item iff meta has "embedding") is text's embedding
parameter:  one safetensors file of LoRA tensors in PEFT naming; the PEFT adapter_config.json
            travels inside its __metadata__ under "memnet.peft_config" (canonical JSON)
activation: one safetensors file with "k.{layer}" and "v.{layer}" of shape [kv_heads, n_tokens,
            head_dim] in the meta dtype; int8 adds F32 "k_scale.{layer}"/"v_scale.{layer}" of
            shape [kv_heads, n_tokens, 1]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from memnet.cube import canonical, limits
from memnet.cube.safetensors_header import Header, metadata_prefix, parse_header, with_metadata
from memnet.cube.payload_views import Sliceable, Spliced
from memnet.errors import CanonicalError, FormatError, LimitError, TensorError

PEFT_CONFIG_KEY = "memnet.peft_config"
KV_TENSOR_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int8": "I8"}
LORA_DTYPES = ("F32", "F16", "BF16")


# -- plaintext ---------------------------------------------------------------------------------

# high byte of a little-endian float16 whose exponent bits are all ones (inf or NaN) -> 0xff
_NON_FINITE_HIGH = bytes(0xFF if b & 0x7C == 0x7C else 0 for b in range(256))


def encode_items(items: list[dict[str, Any]], *, embedded: bool | None = None) -> bytes:
    payload = canonical.encode({"items": items})
    decode_items(payload, len(items), embedded=embedded)  # one set of rules for what we write and read
    return payload


def item_pieces(items: Iterable[dict[str, Any]], count: int) -> Iterator[bytes]:
    """The bytes of encode_items(list(items)) in pieces, one item at a time (unchecked: the
    publish that streams them checks them as it reads them, check_items_stream)."""
    return canonical.encode_array_field("items", count, items)


def item_size(item: dict[str, Any]) -> int:
    """The bytes one item takes in a plaintext payload."""
    return len(canonical.encode(item))


def items_header_size(count: int) -> int:
    return len(next(canonical.encode_array_field("items", count, ())))


def _check_vec(vec: Any, i: int) -> int:
    """A float16 little-endian vector: the dimension, or an error naming the item."""
    if not isinstance(vec, bytes) or not vec or len(vec) % 2:
        raise FormatError(f"plaintext item {i}: vec must be a non-empty bin of float16 values (even length)")
    if len(vec) > 2 * limits.MAX_EMBEDDING_DIM:
        raise LimitError(f"plaintext item {i}: vec has {len(vec) // 2} dimensions, "
                         f"the limit is {limits.MAX_EMBEDDING_DIM}")
    if b"\xff" in vec[1::2].translate(_NON_FINITE_HIGH):
        raise FormatError(f"plaintext item {i}: vec holds a NaN or infinite value")
    return len(vec) // 2


class ItemRules:
    """The rules of plaintext items, one item at a time (a whole payload or a stream of chunks).
    embedded: True = every item must carry vec (the manifest meta has an embedding), False = none
    may, None = either, but all or none."""

    def __init__(self, embedded: bool | None):
        self.embedded, self.dims, self.with_vec = embedded, set(), 0

    def count(self, n: int, expected: int | None) -> None:
        if n > limits.MAX_PLAINTEXT_ITEMS:
            raise LimitError(f"{n} plaintext items, the limit is {limits.MAX_PLAINTEXT_ITEMS}")
        if expected is not None and n != expected:
            raise FormatError(f"payload has {n} items but the manifest says {expected}")

    def check(self, i: int, item: Any) -> None:
        if not isinstance(item, dict) or "text" not in item or not set(item) <= {"text", "meta", "vec"}:
            raise FormatError(f"plaintext item {i} must be a map with text (and optional meta, vec)")
        if not isinstance(item["text"], str) or not item["text"]:
            raise FormatError(f"plaintext item {i}: text must be a non-empty string")
        if len(item["text"].encode("utf-8")) > limits.MAX_ITEM_TEXT:
            raise LimitError(f"plaintext item {i} is longer than {limits.MAX_ITEM_TEXT} bytes")
        meta = item.get("meta")
        if meta is not None and (not isinstance(meta, dict) or not meta
                                 or not all(isinstance(v, str) for v in meta.values())):
            raise FormatError(f"plaintext item {i}: meta must map strings to strings (omit it when empty)")
        if "vec" in item:
            if self.embedded is False:
                raise FormatError(f"plaintext item {i} has a vec but the manifest meta names no embedding")
            self.dims.add(_check_vec(item["vec"], i))
            self.with_vec += 1
            if len(self.dims) > 1:
                raise FormatError(f"plaintext item {i}: vec dimension differs from the items before it")
        elif self.embedded or self.with_vec:
            raise FormatError(f"plaintext item {i} has no vec but "
                              + ("the manifest meta names an embedding" if self.embedded else "earlier items have one"))

    def finish(self, n: int) -> None:
        if self.with_vec and self.with_vec != n:  # items before the first vec lacked one
            raise FormatError("plaintext items must all carry a vec or none")


def decode_items(payload: bytes, expected_count: int | None = None, *,
                 embedded: bool | None = None) -> list[dict[str, Any]]:
    """The items of a plaintext payload (the rules: ItemRules)."""
    doc = canonical.decode(payload, limits.MAX_PLAINTEXT_PAYLOAD)
    if not isinstance(doc, dict) or set(doc) != {"items"} or not isinstance(doc["items"], list):
        raise FormatError("plaintext payload must be a map with one field, items")
    items = doc["items"]
    rules = ItemRules(embedded)
    rules.count(len(items), None)
    for i, item in enumerate(items):
        rules.check(i, item)
    rules.finish(len(items))
    rules.count(len(items), expected_count)
    return items


def check_items_stream(pieces: Iterable[bytes | memoryview], expected_count: int | None = None, *,
                       embedded: bool | None = None) -> None:
    """decode_items' checks on a payload given as consecutive pieces (a cube's chunks), one item
    in memory at a time; nothing is returned."""
    values = canonical.decode_array_field(pieces, "items", limits.MAX_PLAINTEXT_PAYLOAD)
    rules = ItemRules(embedded)
    try:
        n = next(values)
    except CanonicalError as exc:   # a header that is there but not {"items": [...]}
        if "one field" in str(exc) or str(exc).startswith("malformed"):
            raise FormatError("plaintext payload must be a map with one field, items") from None
        raise
    rules.count(n, None)
    rules.count(n, expected_count)
    for i, item in enumerate(values):
        rules.check(i, item)
    rules.finish(n)


# -- parameter (LoRA) --------------------------------------------------------------------------

def peft_summary(config: dict[str, Any]) -> dict[str, Any]:
    """The manifest's meta.peft for a PEFT adapter_config.json."""
    if config.get("peft_type") != "LORA":
        raise FormatError(f"adapter type {config.get('peft_type')!r} is not supported (only LORA)")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool):
        raise FormatError("adapter_config.json: r must be an integer")
    if isinstance(alpha, float) and alpha.is_integer():
        alpha = int(alpha)
    if not isinstance(alpha, int) or isinstance(alpha, bool):
        raise FormatError("adapter_config.json: lora_alpha must be a whole number")
    targets = config.get("target_modules")
    if isinstance(targets, str):  # PEFT reads a string as a regex (or "all-linear")
        raise FormatError("adapter_config.json: target_modules as a string (regex) is not supported; list the modules")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise FormatError("adapter_config.json: target_modules must list module names")
    return {"type": "LORA", "r": r, "alpha": alpha, "targets": sorted(set(targets))}


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_parameter_payload(config: dict[str, Any], adapter_safetensors: bytes) -> bytes:
    return with_metadata(adapter_safetensors, {PEFT_CONFIG_KEY: canonical_json(config)})


def splice_parameter_payload(config: dict[str, Any], adapter_safetensors: Sliceable) -> Spliced:
    """The same payload as build_parameter_payload, as a view: the rewritten header, then the
    weights' tensor data read from adapter_safetensors (a file) only when sliced."""
    head, data_start = metadata_prefix(adapter_safetensors, {PEFT_CONFIG_KEY: canonical_json(config)})
    return Spliced(head, adapter_safetensors, data_start)


def peft_config_of(payload: bytes) -> dict[str, Any]:
    """The adapter_config.json a parameter payload carries (the payload itself is the weights)."""
    return _peft_config(parse_header(payload, LORA_DTYPES).metadata)


def _peft_config(metadata: dict[str, str]) -> dict[str, Any]:
    text = metadata.get(PEFT_CONFIG_KEY)
    if text is None:
        raise TensorError(f"parameter payload lacks {PEFT_CONFIG_KEY} metadata")
    try:
        config = json.loads(text)
    except ValueError:
        raise TensorError("parameter payload carries a malformed PEFT config") from None
    if not isinstance(config, dict):
        raise TensorError("parameter payload carries a malformed PEFT config")
    return config


def validate_parameter(payload: bytes | memoryview, meta: dict[str, Any]) -> None:
    header = parse_header(payload, LORA_DTYPES)
    if peft_summary(_peft_config(header.metadata)) != meta["peft"]:
        raise FormatError("the payload's PEFT config does not match the manifest's meta.peft")
    if not header.tensors:
        raise TensorError("parameter payload holds no tensors")
    r, targets = meta["peft"]["r"], set(meta["peft"]["targets"])
    for name, info in header.tensors.items():
        parts = name.split(".")
        if "lora_A" in parts:
            rank_dim = info.shape[0] if info.shape else None
        elif "lora_B" in parts:
            rank_dim = info.shape[1] if len(info.shape) > 1 else None
        else:
            raise TensorError(f"tensor {name!r} is not a LoRA A/B matrix")
        if len(info.shape) != 2 or rank_dim != r:
            raise TensorError(f"tensor {name!r} has shape {list(info.shape)}, expected rank {r}")
        path = ".".join(parts[:parts.index("lora_A" if "lora_A" in parts else "lora_B")])
        if not any(path == t or path.endswith("." + t) for t in targets):
            raise TensorError(f"tensor {name!r} adapts a module not listed in meta.peft.targets")
    # half an adapter cannot be applied: every A needs its B and the reverse
    for name in header.tensors:
        for half, other in (("lora_A", "lora_B"), ("lora_B", "lora_A")):
            if f".{half}." in name and name.replace(f".{half}.", f".{other}.") not in header.tensors:
                raise TensorError(f"tensor {name!r} has no matching {other}")


# -- activation (KV cache) ---------------------------------------------------------------------

def expected_kv_tensors(meta: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    layout, n = meta["layout"], meta["n_tokens"]
    shape = (layout["kv_heads"], n, layout["head_dim"])
    dtype = KV_TENSOR_DTYPES[meta["dtype"]]
    expected: dict[str, tuple[str, tuple[int, ...]]] = {}
    for layer in range(layout["layers"]):
        for kv in ("k", "v"):
            expected[f"{kv}.{layer}"] = (dtype, shape)
            if meta["dtype"] == "int8":
                expected[f"{kv}_scale.{layer}"] = ("F32", (layout["kv_heads"], n, 1))
    return expected


def validate_activation(payload: bytes | memoryview, meta: dict[str, Any]) -> Header:
    header = parse_header(payload)
    expected = expected_kv_tensors(meta)
    if set(header.tensors) != set(expected):
        missing = sorted(set(expected) - set(header.tensors))[:3]
        extra = sorted(set(header.tensors) - set(expected))[:3]
        raise TensorError(f"KV tensors do not match meta.layout (missing {missing}, unexpected {extra})")
    for name, (dtype, shape) in expected.items():
        info = header.tensors[name]
        if info.dtype != dtype or info.shape != shape:
            raise TensorError(
                f"tensor {name!r} is {info.dtype}{list(info.shape)}, meta says {dtype}{list(shape)}"
            )
    return header


def validate_payload(kind: str, payload: bytes | memoryview, meta: dict[str, Any]) -> None:
    """Check a complete payload against its (already authenticated) manifest meta."""
    if kind == "plaintext":
        decode_items(bytes(payload), meta["items"], embedded="embedding" in meta)
    elif kind == "parameter":
        validate_parameter(payload, meta)
    else:
        validate_activation(payload, meta)
