"""Prefix-chain keys for activation cubes: the identity of a token prefix, never of its text.

key_0 = sha256(salt || block_0), key_i = sha256(key_{i-1} || block_i), blocks of block_size token
ids as little-endian u32 (the last block may be shorter). The salt binds the keys to the model,
tokenizer, adapter and KV dtype, so a prefix cached under one of them never matches another.
sha256, not Python's hash(): keys must agree across processes and machines.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from memnet.errors import FormatError

SALT_DOMAIN = b"memnet/kv/v1\x00"
NO_ADAPTER = bytes(32)


def salt(model: bytes, tokenizer: bytes, adapter: bytes | None, dtype: str) -> bytes:
    for label, value in (("model", model), ("tokenizer", tokenizer), ("adapter", adapter or NO_ADAPTER)):
        if not isinstance(value, bytes) or len(value) != 32:
            raise FormatError(f"{label} fingerprint must be 32 bytes")
    return hashlib.sha256(
        SALT_DOMAIN + model + tokenizer + (adapter or NO_ADAPTER) + dtype.encode("ascii")
    ).digest()


def prefix_keys(token_ids: Sequence[int], salt_bytes: bytes, block_size: int) -> list[bytes]:
    if not isinstance(block_size, int) or block_size < 1:
        raise FormatError("block_size must be a positive integer")
    if any(not isinstance(t, int) or not 0 <= t < 2**32 for t in token_ids):
        raise FormatError("token ids must be integers in [0, 2**32)")
    keys: list[bytes] = []
    previous = salt_bytes
    for start in range(0, len(token_ids), block_size):
        block = token_ids[start:start + block_size]
        previous = hashlib.sha256(previous + struct.pack(f"<{len(block)}I", *block)).digest()
        keys.append(previous)
    return keys


def short_keys(token_ids: Sequence[int], salt_bytes: bytes, lengths: range) -> list[bytes]:
    """The key of each prefix token_ids[:n] for n in lengths, all inside the first block:
    prefix_keys(token_ids[:n], ...)[0] for each n, in one pass (one running hash, copied at each
    length, instead of hashing every prefix again)."""
    if lengths.step != 1 or lengths.start < 1:
        raise FormatError("lengths must be consecutive and positive")
    head = token_ids[:lengths.stop - 1]   # keys only for lengths the ids reach
    if len(head) < lengths.start:
        return []
    if any(not isinstance(t, int) or not 0 <= t < 2**32 for t in head):
        raise FormatError("token ids must be integers in [0, 2**32)")
    running = hashlib.sha256(salt_bytes)
    running.update(struct.pack(f"<{lengths.start - 1}I", *head[:lengths.start - 1]))
    keys = []
    for t in head[lengths.start - 1:]:
        running.update(struct.pack("<I", t))
        keys.append(running.copy().digest())
    return keys


def matched_tokens(token_ids: Sequence[int], salt_bytes: bytes, block_size: int, n_tokens: int,
                   keys: Sequence[bytes]) -> int:
    """How many leading tokens of token_ids a cache with these prefix keys holds exactly: the
    longest key boundary (each full block, then n_tokens) where token_ids hash to the same key.
    The chain makes each key commit to every token before it, so equal keys mean equal ids."""
    matched = 0
    previous = salt_bytes
    for index, key in enumerate(keys):
        start = index * block_size
        end = min(start + block_size, n_tokens)
        if end > len(token_ids):
            break
        block = token_ids[start:end]
        previous = hashlib.sha256(previous + struct.pack(f"<{len(block)}I", *block)).digest()
        if previous != key:
            break
        matched = end
    return matched
