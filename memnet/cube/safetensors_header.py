"""Strict validation of safetensors bytes before any tensor library sees them.

The safetensors library accepts duplicate tensor names silently (the JSON parser keeps the last),
and a pickle or zip payload must never reach torch.load. So MIP parses the header itself: 8-byte
little-endian header length, UTF-8 JSON object with no duplicate keys, dtypes from an allowlist,
shapes whose byte size matches their offsets, tensors packed in order with no gaps, overlaps or
trailing bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

from memnet.cube import limits
from memnet.errors import LimitError, TensorError

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "I32": 4, "I64": 8}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise TensorError(f"safetensors header repeats the name {key!r}")
        result[key] = value
    return result


def parse_header(payload: bytes | memoryview, allowed_dtypes: tuple[str, ...] = tuple(DTYPE_SIZES)) -> Header:
    if len(payload) < 8:
        raise TensorError("payload is too short to be a safetensors file")
    head = bytes(payload[:8])
    # A safetensors JSON header starts with "{" right after the length; only then can a length
    # whose low bytes happen to be 0x80 or "PK" be a real header rather than pickle/zip magic.
    if (head[:1] == b"\x80" or head[:2] == b"PK") and bytes(payload[8:9]) != b"{":
        raise TensorError("payload is a pickle or zip archive, not safetensors; refusing to load it")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > limits.MAX_SAFETENSORS_HEADER:
        raise LimitError(f"safetensors header of {header_len} bytes exceeds {limits.MAX_SAFETENSORS_HEADER}")
    if 8 + header_len > len(payload):
        raise TensorError("safetensors header runs past the end of the payload (truncated?)")
    try:
        text = bytes(payload[8:8 + header_len]).decode("utf-8")
        raw = json.loads(text, object_pairs_hook=_no_duplicates)
    except TensorError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TensorError("safetensors header is not valid UTF-8 JSON") from None
    if not isinstance(raw, dict):
        raise TensorError("safetensors header is not a JSON object")
    metadata = raw.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TensorError("safetensors __metadata__ must map strings to strings")
    if len(raw) > limits.MAX_TENSORS:
        raise LimitError(f"{len(raw)} tensors, the limit is {limits.MAX_TENSORS}")
    tensors: dict[str, TensorInfo] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise TensorError(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in allowed_dtypes:
            raise TensorError(f"tensor {name!r}: dtype {dtype!r} is not allowed here")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape
        ):
            raise TensorError(f"tensor {name!r}: malformed shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets
        )):
            raise TensorError(f"tensor {name!r}: malformed data_offsets")
        start, end = offsets
        if end - start != math.prod(shape) * DTYPE_SIZES[dtype]:
            raise TensorError(f"tensor {name!r}: offsets do not match shape and dtype")
        tensors[name] = TensorInfo(name, dtype, tuple(shape), start, end)
    position = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start != position:
            raise TensorError(f"tensor {info.name!r}: data overlaps or leaves a gap")
        position = info.end
    data_len = len(payload) - 8 - header_len
    if position != data_len:
        raise TensorError(f"tensor data is {data_len} bytes but the header describes {position}")
    return Header(tensors, metadata, 8 + header_len)


def metadata_prefix(payload: bytes | memoryview, extra: dict[str, str]) -> tuple[bytes, int]:
    """(new_head, data_start): the length and JSON header of payload with extra merged into its
    __metadata__, and where payload's tensor data starts. new_head + payload[data_start:] is the
    rewritten file; neither the tensor data nor its length is touched (a large adapter is read
    from disk in pieces after this head, never joined)."""
    header = parse_header(payload)
    raw = json.loads(bytes(payload[8:header.data_start]))
    raw["__metadata__"] = {**header.metadata, **extra}
    text = json.dumps(raw, separators=(",", ":"), sort_keys=True).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep tensor data 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text, header.data_start


def with_metadata(payload: bytes, extra: dict[str, str]) -> bytes:
    """Rewrite a safetensors file's __metadata__ without touching (or loading) tensor data."""
    head, data_start = metadata_prefix(payload, extra)
    return head + bytes(payload[data_start:])
