"""Kind-specific manifest metadata (the "meta" map) and its validation.

plaintext:  {"items": n}  (+ "embedding": model fingerprint when embeddings are included)
activation: {"model", "tokenizer", ["adapter"]: 32-byte fingerprints, "dtype", "n_tokens",
             "block_size", "prefix_keys": [32-byte keys], "layout": {"layers", "kv_heads", "head_dim"},
             ["token_ids": n_tokens little-endian u32, checked against prefix_keys]}
parameter:  {"base_model": 32-byte fingerprint,
             "peft": {"type": "LORA", "r", "alpha", "targets": [sorted module names]}}
"""

from __future__ import annotations

import re
import struct
from typing import Any

from memnet.cube import limits, prefix
from memnet.errors import FormatError, LimitError

KV_DTYPES = ("float32", "float16", "bfloat16", "int8")
MODULE_RE = re.compile(r"^[A-Za-z0-9_.]+\Z")


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise FormatError(message)


def _keys(m: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    _expect(isinstance(m, dict), f"{where} must be a map")
    missing = [k for k in required if k not in m]
    _expect(not missing, f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(m) - set(required) - set(optional))
    _expect(not unknown, f"{where} has unknown field(s) {', '.join(unknown)}")
    return m


def _int(value: Any, where: str, low: int, high: int) -> int:
    _expect(isinstance(value, int) and not isinstance(value, bool), f"{where} must be an integer")
    _expect(low <= value, f"{where} must be at least {low}")
    if value > high:
        raise LimitError(f"{where} {value} exceeds the limit {high}")
    return value


def _fingerprint(value: Any, where: str) -> bytes:
    _expect(isinstance(value, bytes) and len(value) == 32, f"{where} must be a 32-byte fingerprint")
    return value


def _plaintext(m: Any) -> None:
    _keys(m, "plaintext meta", ("items",), ("embedding",))
    _int(m["items"], "meta.items", 0, limits.MAX_PLAINTEXT_ITEMS)
    if "embedding" in m:
        _fingerprint(m["embedding"], "meta.embedding")


def _activation(m: Any) -> None:
    _keys(m, "activation meta",
          ("model", "tokenizer", "dtype", "n_tokens", "block_size", "prefix_keys", "layout"),
          ("adapter", "token_ids"))
    for name in ("model", "tokenizer", "adapter"):
        if name in m:
            _fingerprint(m[name], f"meta.{name}")
    _expect(m["dtype"] in KV_DTYPES, f"meta.dtype {m['dtype']!r} is not one of {', '.join(KV_DTYPES)}")
    n_tokens = _int(m["n_tokens"], "meta.n_tokens", 1, 2**24)
    block = _int(m["block_size"], "meta.block_size", 1, 65536)
    keys = m["prefix_keys"]
    _expect(isinstance(keys, list), "meta.prefix_keys must be a list")
    if len(keys) > limits.MAX_PREFIX_KEYS:
        raise LimitError(f"meta.prefix_keys has {len(keys)} keys, the limit is {limits.MAX_PREFIX_KEYS}")
    _expect(len(keys) == -(-n_tokens // block),
            f"meta.prefix_keys has {len(keys)} keys but {n_tokens} tokens need {-(-n_tokens // block)}")
    for key in keys:
        _expect(isinstance(key, bytes) and len(key) == 32, "meta.prefix_keys entries must be 32 bytes")
    if "token_ids" in m:
        _token_ids(m, n_tokens, block, keys)
    layout = _keys(m["layout"], "meta.layout", ("layers", "kv_heads", "head_dim"))
    for name in ("layers", "kv_heads", "head_dim"):
        _int(layout[name], f"meta.layout.{name}", 1, 4096)


def _token_ids(m: Any, n_tokens: int, block: int, keys: list[bytes]) -> None:
    """The prefix's own ids (a receiver serves the longest common token prefix, not just the
    longest key boundary): they must hash, under the cube's salt, to exactly its prefix keys."""
    raw = m["token_ids"]
    _expect(isinstance(raw, bytes) and len(raw) == 4 * n_tokens,
            f"meta.token_ids must be {4 * n_tokens} bytes: n_tokens little-endian u32")
    salt = prefix.salt(m["model"], m["tokenizer"], m.get("adapter"), m["dtype"])
    _expect(prefix.prefix_keys(token_ids(m), salt, block) == keys, "meta.token_ids do not hash to meta.prefix_keys")


def token_ids(m: dict[str, Any]) -> tuple[int, ...] | None:
    """The token ids an activation cube's meta carries (None when it carries none)."""
    raw = m.get("token_ids")
    return None if raw is None else struct.unpack(f"<{len(raw) // 4}I", raw)


def pack_token_ids(ids: list[int]) -> bytes:
    return struct.pack(f"<{len(ids)}I", *ids)


def _parameter(m: Any) -> None:
    _keys(m, "parameter meta", ("base_model", "peft"))
    _fingerprint(m["base_model"], "meta.base_model")
    peft = _keys(m["peft"], "meta.peft", ("type", "r", "alpha", "targets"))
    _expect(peft["type"] == "LORA", f"meta.peft.type {peft['type']!r} is not supported (only LORA)")
    _int(peft["r"], "meta.peft.r", 1, 4096)
    _int(peft["alpha"], "meta.peft.alpha", 1, 1 << 20)
    targets = peft["targets"]
    _expect(isinstance(targets, list) and targets, "meta.peft.targets must be a non-empty list")
    if len(targets) > limits.MAX_TARGET_MODULES:
        raise LimitError(f"meta.peft.targets has more than {limits.MAX_TARGET_MODULES} entries")
    for target in targets:
        _expect(isinstance(target, str) and MODULE_RE.match(target) is not None and len(target) <= 128,
                f"meta.peft.targets entry {target!r} is not a module name")
    _expect(targets == sorted(set(targets)), "meta.peft.targets must be sorted and unique")


_VALIDATORS = {"plaintext": _plaintext, "activation": _activation, "parameter": _parameter}


def validate_meta(kind: str, meta: Any) -> None:
    _VALIDATORS[kind](meta)
