"""Builders of valid cubes of each kind for tests (no torch: numpy + safetensors.numpy)."""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors.numpy import save

from memnet.cube import build, payloads, prefix

FIXED_CREATED = 1_790_000_000


def key(seed: str = "alice") -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


def fingerprint(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def lora_files(r: int = 4, hidden: int = 16, layers: int = 2, targets=("q_proj", "v_proj"), seed: int = 0):
    """(adapter_config dict, adapter_model.safetensors bytes) shaped like PEFT's output."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for module in targets:
            base = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{base}.lora_A.weight"] = rng.standard_normal((r, hidden), dtype=np.float32)
            tensors[f"{base}.lora_B.weight"] = rng.standard_normal((hidden, r), dtype=np.float32)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": list(targets),
              "base_model_name_or_path": "tiny-llama", "task_type": "CAUSAL_LM"}
    return config, save(tensors, metadata={"format": "pt"})


def parameter_cube(k=None, base: bytes | None = None, **optional):
    config, weights = lora_files()
    payload = payloads.build_parameter_payload(config, weights)
    meta = {"base_model": base or fingerprint("base"), "peft": payloads.peft_summary(config)}
    return build.build(k or key(), "parameter", payload, meta, created=FIXED_CREATED, **optional)


def kv_meta_and_payload(n_tokens: int = 10, layers: int = 2, kv_heads: int = 2, head_dim: int = 8,
                        block_size: int = 4, dtype: str = "float32", token_ids=None, seed: int = 0):
    token_ids = list(range(100, 100 + n_tokens)) if token_ids is None else token_ids
    model, tokenizer = fingerprint("model"), fingerprint("tokenizer")
    salt = prefix.salt(model, tokenizer, None, dtype)
    meta = {
        "model": model, "tokenizer": tokenizer, "dtype": dtype, "n_tokens": n_tokens,
        "block_size": block_size, "prefix_keys": prefix.prefix_keys(token_ids, salt, block_size),
        "layout": {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim},
    }
    rng = np.random.default_rng(seed)
    np_dtype = {"float32": np.float32, "float16": np.float16, "int8": np.int8}[dtype]
    tensors = {}
    for layer in range(layers):
        for kv in ("k", "v"):
            tensors[f"{kv}.{layer}"] = (rng.standard_normal((kv_heads, n_tokens, head_dim)) * 10).astype(np_dtype)
            if dtype == "int8":
                tensors[f"{kv}_scale.{layer}"] = np.ones((kv_heads, n_tokens, 1), dtype=np.float32)
    return meta, save(tensors)


def activation_cube(k=None, **kw):
    meta, payload = kv_meta_and_payload(**kw)
    return build.build(k or key(), "activation", payload, meta, created=FIXED_CREATED)


def plaintext_cube(k=None, texts=("the sky is blue", "water boils at 100 C"), chunk_size: int = 1024, **optional):
    items = [{"text": t} for t in texts]
    return build.build(k or key(), "plaintext", payloads.encode_items(items), {"items": len(items)},
                       created=FIXED_CREATED, chunk_size=chunk_size, **optional)
