"""Activation cubes: a prefix's per-layer K/V from a prefill, and the cache rebuilt from one.

Identity is token ids (bound through the prefix-chain keys), never text. Only a cache that starts
at position 0 is exact (RoPE is applied before caching), so a cube is used as a prefix only, and
cut to however many of its leading tokens the prompt shares (a causal cache's first L positions
depend on the first L tokens alone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from memnet.cube import meta as cube_meta, payloads, prefix
from memnet.cube.safetensors_header import DTYPE_SIZES
from memnet.errors import PolicyError, UsageError
from memnet.model import segments
from memnet.model.loader import LoadedModel
from memnet.model.segments import Segments

BLOCK_SIZE = 256        # network-wide: discovery looks keys up at multiples of it
ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}
DTYPE_NAMES = tuple(ELEMENT_BYTES)


def _torch_dtype(name: str):
    from memnet.model.runtime import torch
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
            "int8": torch.int8}[name]


@dataclass(frozen=True)
class Binding:
    """What a KV cache depends on besides the token ids."""

    model: bytes
    tokenizer: bytes
    adapter: bytes | None
    dtype: str

    def salt(self) -> bytes:
        return prefix.salt(self.model, self.tokenizer, self.adapter, self.dtype)

    def keys(self, ids: list[int]) -> list[bytes]:
        return prefix.prefix_keys(ids, self.salt(), BLOCK_SIZE)


def binding_for(loaded: LoadedModel, adapter: bytes | None, dtype: str) -> Binding:
    if dtype not in ELEMENT_BYTES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}")
    return Binding(loaded.pinned.fingerprint, loaded.pinned.tokenizer, adapter, dtype)


def prefill(loaded: LoadedModel, ids: list[int]) -> tuple[Any, Any, float]:
    """Run the model over ids from position 0: (DynamicCache, last logits, seconds)."""
    from memnet.model.runtime import torch

    if not ids:
        raise UsageError("nothing to prefill: the text has no tokens")
    if len(ids) > loaded.max_tokens:
        raise UsageError(f"{len(ids)} tokens exceed the model's {loaded.max_tokens}")
    start = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
    return out.past_key_values, out.logits[0, -1], time.perf_counter() - start


# what a prompt typically adds after a cached text: a tokenizer may merge the text's last
# tokens (trailing whitespace above all) with any of these
CONTINUATIONS = ("\n", "\n\n", " ", "A", "a", "1", ".", "-", "<")


def stable_length(loaded: LoadedModel, text: str, ids: list[int]) -> int:
    """How many leading ids of text (encoded as ids) stay the same ids whatever text follows:
    "doc\n" ends in a "\n" token, but "doc\n" + "\n\nQuestion" is encoded with one "\n\n\n"."""
    keep = len(ids)
    for continuation in CONTINUATIONS:
        longer = loaded.encode(text + continuation)
        same = next((i for i, (a, b) in enumerate(zip(ids, longer)) if a != b), min(len(ids), len(longer)))
        keep = min(keep, same)
    return keep


def payload_from_cache(cache: Any, n_tokens: int, dtype: str) -> bytes:
    """k.{l}/v.{l} as [kv_heads, n_tokens, head_dim]; int8 adds per-(head, token) absmax scales.
    The data is laid out layer by layer (k.0, v.0 and their scales, then layer 1, ...), so that a
    receiver can start on layer l as soon as its bytes arrive (kv_stream)."""
    from memnet.model.runtime import torch

    tensors = []
    for index, layer in enumerate(cache.layers):
        for name, states in (("k", layer.keys), ("v", layer.values)):
            t = states[0, :, :n_tokens, :].float()
            if dtype == "int8":
                scale = t.abs().amax(dim=-1, keepdim=True) / 127.0
                safe = torch.where(scale > 0, scale, torch.ones_like(scale))
                tensors.append((f"{name}.{index}", torch.round(t / safe).clamp(-127, 127).to(torch.int8)))
                tensors.append((f"{name}_scale.{index}", scale))
            else:
                tensors.append((f"{name}.{index}", t.to(_torch_dtype(dtype))))
    return save_in_order(tensors)


_ST_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int8": "I8"}


def save_in_order(tensors: list[tuple[str, Any]]) -> bytes:
    """A safetensors file whose data holds the tensors in the given order (safetensors' own
    writer sorts them by dtype, then name: every layer's keys before any layer's values)."""
    import json

    from memnet.model.runtime import torch

    header, pieces, offset = {}, [], 0
    for name, t in tensors:
        raw = t.contiguous().view(torch.uint8).reshape(-1).numpy().tobytes()
        dtype = _ST_NAMES[str(t.dtype).removeprefix("torch.")]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        pieces.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)   # the data starts 8-byte aligned
    return b"".join([len(text).to_bytes(8, "little"), text, *pieces])


def meta_for(binding: Binding, loaded: LoadedModel, ids: list[int]) -> dict[str, Any]:
    meta: dict[str, Any] = {"model": binding.model, "tokenizer": binding.tokenizer, "dtype": binding.dtype,
                            "n_tokens": len(ids), "block_size": BLOCK_SIZE, "prefix_keys": binding.keys(ids),
                            "layout": dict(loaded.pinned.layout), "token_ids": cube_meta.pack_token_ids(ids)}
    if binding.adapter is not None:
        meta["adapter"] = binding.adapter
    return meta


def check_binding(meta: dict[str, Any], loaded: LoadedModel, adapter: bytes | None) -> None:
    """Refuse a cube made under another model, tokenizer, adapter or layout, naming the difference."""
    pinned = loaded.pinned
    if meta["model"] != pinned.fingerprint:
        raise PolicyError(f"the KV cube is for model {meta['model'].hex()[:12]}, "
                          f"not the running {pinned.name} ({pinned.short})")
    if meta["tokenizer"] != pinned.tokenizer:
        raise PolicyError(f"the KV cube is for tokenizer {meta['tokenizer'].hex()[:12]}, "
                          f"not {pinned.tokenizer.hex()[:12]}")
    cube_adapter = meta.get("adapter")
    if cube_adapter != adapter:
        have = cube_adapter.hex()[:12] if cube_adapter else "none"
        want = adapter.hex()[:12] if adapter else "none"
        raise PolicyError(f"the KV cube was built under adapter {have}, this generation runs {want}")
    if meta["layout"] != pinned.layout:
        raise PolicyError(f"the KV cube's layout {meta['layout']} does not match the model's {pinned.layout}")
    if meta["block_size"] != BLOCK_SIZE:
        raise PolicyError(f"the KV cube uses block size {meta['block_size']}, memnet uses {BLOCK_SIZE}")


def usable_tokens(meta: dict[str, Any], ids: list[int]) -> int:
    """Leading tokens of ids the cube holds; at least one prompt token is always left to run
    (its logits start the answer). A cube that carries its token ids (checked against its keys
    when the manifest was decoded) serves the longest common token prefix; one without them,
    the longest key boundary (every block_size tokens, then n_tokens)."""
    held = meta.get("token_ids")
    if held is not None:
        # longest common prefix by bisection over equal byte prefixes (memcmp, no per-token loop:
        # lookups compare every candidate cube, up to 8192 ids each)
        theirs = memoryview(held)
        mine = memoryview(cube_meta.pack_token_ids(ids[:len(held) // 4]))
        low, high = 0, min(len(mine), len(theirs)) // 4
        while low < high:
            middle = (low + high + 1) // 2
            if mine[:4 * middle] == theirs[:4 * middle]:
                low = middle
            else:
                high = middle - 1
        matched = low
    else:
        binding = Binding(meta["model"], meta["tokenizer"], meta.get("adapter"), meta["dtype"])
        matched = prefix.matched_tokens(ids, binding.salt(), meta["block_size"], meta["n_tokens"],
                                        meta["prefix_keys"])
    return min(matched, len(ids) - 1)


def _tensor(source: Segments, header: Any, name: str, n_use: int, out: Any = None):
    """One [kv_heads, n, dim] tensor of the payload as float32 [1, kv_heads, n_use, dim], converted
    straight from the payload's bytes (a cut cube reads each head's first n_use rows) into out
    when given (a view whose rows are contiguous per head: an in-place cache's buffer)."""
    from memnet.model.runtime import torch

    info = header.tensors[name]
    heads, n, dim = info.shape
    st_name = _NAME_BY_ST[info.dtype]
    size = DTYPE_SIZES[info.dtype]
    if out is None:
        out = torch.empty((1, heads, n_use, dim), dtype=torch.float32)
    base = header.data_start + info.start
    if n_use == n and out.is_contiguous():
        segments.copy_range(out.view(-1), source, base, info.end + header.data_start, _torch_dtype(st_name), size)
    else:
        keep = n_use * dim
        for h in range(heads):
            row = base + h * n * dim * size
            segments.copy_range(out[0, h].view(-1), source, row, row + keep * size, _torch_dtype(st_name), size)
    return out


_NAME_BY_ST = {st: name for name, st in payloads.KV_TENSOR_DTYPES.items()} | {"F32": "float32"}


def cache_from_payload(payload: bytes | memoryview | Segments, meta: dict[str, Any], loaded: LoadedModel,
                       n_use: int, capacity: int = 0) -> Any:
    """A cache holding the cube's first n_use positions, in the model's fp32, filled in place
    (kv_buffer) with room for capacity positions in all. Each tensor is converted once from the
    payload's bytes straight into the cache's buffers (a Segments reads the stored chunks in
    place: at 2048 tokens the load is most of the time to first token after the suffix itself)."""
    from memnet.model import kv_buffer

    cache = kv_buffer.new_cache(loaded.model, max(capacity, n_use))
    fill_layers(cache, payload, meta, loaded, n_use, range(len(cache.layers)))
    return cache


def fill_layers(cache: Any, payload: bytes | memoryview | Segments, meta: dict[str, Any], loaded: LoadedModel,
                n_use: int, layers: range) -> None:
    """Set the given layers of cache to the cube's first n_use positions (a span server seeds only
    its own layers, from a payload that may hold only their tensors: a sparse Segments)."""
    source = payload if isinstance(payload, Segments) else Segments([payload])
    header = payloads.validate_activation(source, meta)  # header, names, dtypes and shapes first
    if not 0 < n_use <= meta["n_tokens"]:
        raise PolicyError(f"cannot use {n_use} of the cube's {meta['n_tokens']} tokens")
    for index in layers:
        fill_layer(cache.layers[index], source, header, meta, index, n_use)


def fill_layer(layer: Any, source: Segments, header: Any, meta: dict[str, Any], index: int, n_use: int) -> None:
    """Layer `index` of a cache from the cube's k.{index} / v.{index} (header already checked)."""
    from memnet.model import kv_buffer
    from memnet.model.runtime import torch

    def convert(name: str, out: Any = None):
        t = _tensor(source, header, f"{name}.{index}", n_use, out)
        if meta["dtype"] == "int8":
            t.mul_(_tensor(source, header, f"{name}_scale.{index}", n_use))
        return t

    if isinstance(layer, kv_buffer.InPlaceLayer):  # converted straight into the cache's buffers
        heads, _, dim = header.tensors[f"k.{index}"].shape
        like = torch.empty((1, heads, 0, dim), dtype=torch.float32)
        keys, values = layer.reserve(like, like, n_use)
        convert("k", keys)
        convert("v", values)
        layer.commit(n_use)
        return
    pair = [convert("k"), convert("v")]
    # DynamicLayer.update would torch.cat onto an empty tensor: one more full copy. The layer
    # is filled directly instead (transformers 5.23, pinned in requirements.lock; the exact
    # round-trip tests catch a change).
    layer.lazy_initialization(*pair)
    layer.keys, layer.values = pair
