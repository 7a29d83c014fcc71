"""What a span server announces in the hivemind DHT, and how a client reads it (docs/MIP.md §21.3).

One key per layer ("block", as Petals calls it) of a model: `memnet.span.<model fingerprint,
first 16 hex digits>.<layer>`; under it one subkey per server (its PeerID, base58), whose value
is a map of plain types:

    v 1, state "online" | "offline", start, end (the layers [start, end) it serves), model (the
    full fingerprint, hex), dtype "float32", layer_seconds (its measured seconds per token per
    layer), cache_tokens_left (room in its cache budget), max_length (its largest session),
    prefixes (hex prefix-chain keys of activation cubes it holds, at most MAX_PREFIXES), addrs
    (its hivemind multiaddrs, at most MAX_ADDRS)

A server writes the same value under every layer key it serves and refreshes it before it
expires. hivemind's DHT records are not authenticated: whatever a record says is a hint, checked
against the server itself when a session opens (model, span, max_length, seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

RECORD_VERSION = 1
MAX_PREFIXES = 64
MAX_ADDRS = 4
MAX_ADDR_CHARS = 256
STATES = ("online", "offline")


def block_key(model: bytes, layer: int) -> str:
    return f"memnet.span.{model.hex()[:16]}.{layer}"


@dataclass(frozen=True)
class SpanRecord:
    peer: str
    start: int
    end: int
    model: bytes
    layer_seconds: float
    cache_tokens_left: int
    max_length: int
    prefixes: frozenset[bytes]
    addrs: tuple[str, ...]
    state: str = "online"

    def to_value(self) -> dict[str, Any]:
        return {"v": RECORD_VERSION, "state": self.state, "start": self.start, "end": self.end,
                "model": self.model.hex(), "dtype": "float32", "layer_seconds": float(self.layer_seconds),
                "cache_tokens_left": self.cache_tokens_left, "max_length": self.max_length,
                "prefixes": sorted(k.hex() for k in self.prefixes)[:MAX_PREFIXES],
                "addrs": list(self.addrs[:MAX_ADDRS])}

    def holds(self, prefix_key: bytes | None) -> bool:
        return prefix_key is not None and prefix_key in self.prefixes


def _int(value: Any, low: int, high: int) -> int | None:
    return value if type(value) is int and low <= value <= high else None


def parse(peer: Any, value: Any, model: bytes, layer: int) -> SpanRecord | None:
    """The record a server announced under a layer key, or None if it is malformed, for another
    model, not covering that layer, or offline (a hint: nothing here is trusted further)."""
    if not isinstance(peer, str) or not isinstance(value, dict) or value.get("v") != RECORD_VERSION:
        return None
    start, end = _int(value.get("start"), 0, 1 << 16), _int(value.get("end"), 1, 1 << 16)
    left, longest = _int(value.get("cache_tokens_left"), 0, 1 << 40), _int(value.get("max_length"), 1, 1 << 24)
    seconds = value.get("layer_seconds")
    prefixes, addrs = value.get("prefixes"), value.get("addrs")
    if None in (start, end, left, longest) or not start <= layer < end:
        return None
    if value.get("model") != model.hex() or value.get("dtype") != "float32" or value.get("state") not in STATES:
        return None
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds < 1e3 \
            or not math.isfinite(seconds):
        return None
    if not isinstance(prefixes, list) or len(prefixes) > MAX_PREFIXES or not isinstance(addrs, list) \
            or len(addrs) > MAX_ADDRS or not all(isinstance(a, str) and len(a) <= MAX_ADDR_CHARS for a in addrs):
        return None
    try:
        keys = frozenset(bytes.fromhex(k) for k in prefixes if isinstance(k, str) and len(k) == 64)
    except ValueError:
        return None
    if value["state"] != "online":
        return None
    return SpanRecord(peer, start, end, model, float(seconds), left, longest, keys, tuple(addrs))


def merge(found: dict[int, dict[str, Any]], model: bytes) -> dict[str, SpanRecord]:
    """Records by server from a DHT read of every layer key ({layer: {peer: value}}): a server's
    record is taken from the first layer key that carries a valid one."""
    spans: dict[str, SpanRecord] = {}
    for layer in sorted(found):
        for peer, value in (found[layer] or {}).items():
            if peer not in spans:
                record = parse(peer, value, model, layer)
                if record is not None:
                    spans[peer] = record
    return spans
