"""Canonical msgpack: the one byte encoding of every signed or hashed MIP structure.

msgpack has no canonical form of its own, so MIP v1 fixes one: maps with unique UTF-8 string keys
sorted by their bytes, the smallest encoding of every integer and length, strings as str, bytes as
bin, no floats, no nil, no extension types, no trailing bytes. The decoder accepts only bytes that
re-encode to themselves, so two parties that agree on a value agree on its bytes and hash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgpack

from memnet.errors import CanonicalError, LimitError

MAX_DEPTH = 16
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def _check(value: Any, depth: int) -> Any:
    """Validate a value tree and return it with maps rebuilt in canonical key order."""
    if depth > MAX_DEPTH:
        raise CanonicalError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise CanonicalError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [_check(item, depth + 1) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalError(f"map key {key!r} is not a string")
        ordered = sorted(value, key=lambda k: k.encode("utf-8"))
        return {k: _check(value[k], depth + 1) for k in ordered}
    if isinstance(value, float):
        raise CanonicalError("floats are not allowed in canonical msgpack")
    if value is None:
        raise CanonicalError("nil is not allowed in canonical msgpack (omit the field instead)")
    raise CanonicalError(f"type {type(value).__name__} cannot be encoded")


def encode(value: Any) -> bytes:
    """Encode a value as canonical msgpack."""
    try:
        return msgpack.packb(_check(value, 0), use_bin_type=True)
    except UnicodeEncodeError:
        raise CanonicalError("string is not valid UTF-8 (lone surrogate)") from None


def _pairs_to_dict(pairs: list[tuple[Any, Any]]) -> dict:
    result: dict = {}
    for key, item in pairs:
        if not isinstance(key, str):
            raise CanonicalError(f"map key {key!r} is not a string")
        if key in result:
            raise CanonicalError(f"duplicate map key {key!r}")
        result[key] = item
    return result


def _reject_ext(code: int, data: bytes) -> Any:
    raise CanonicalError(f"msgpack extension type {code} is not allowed")


def decode(data: bytes, max_size: int) -> Any:
    """Decode canonical msgpack of at most max_size bytes; reject anything non-canonical."""
    if len(data) > max_size:
        raise LimitError(f"encoded value is {len(data)} bytes, the limit is {max_size}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,
            object_pairs_hook=_pairs_to_dict,
            ext_hook=_reject_ext,
        )
    except CanonicalError:
        raise
    except msgpack.ExtraData:
        raise CanonicalError("trailing bytes after the encoded value") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CanonicalError(f"malformed msgpack: {exc}") from None
    except RecursionError:
        raise CanonicalError("msgpack nested too deeply") from None
    try:
        again = encode(value)
    except CanonicalError as exc:
        raise CanonicalError(f"not canonical: {exc}") from None
    # == between bytes and a memoryview goes element by element (1 ms per 256 KiB chunk frame);
    # startswith of the same length is one memcmp
    if len(again) != len(data) or not again.startswith(data):
        raise CanonicalError("msgpack is not in canonical form (key order or integer/length encoding)")
    return value


def encode_array_field(field: str, count: int, values: Iterable[Any]) -> Iterator[bytes]:
    """encode({field: list(values)}) in pieces: the header, then each value's encoding (msgpack
    nests by concatenation, so the pieces join into exactly the canonical bytes). values must
    give count values; CanonicalError otherwise (a source that changed between two reads)."""
    yield b"\x81" + msgpack.packb(field) + msgpack.Packer().pack_array_header(count)
    given = 0
    for value in values:
        given += 1
        if given > count:
            break
        yield encode(value)
    if given != count:
        raise CanonicalError(f"{field}: {count} values announced, {given if given <= count else 'more'} given")


def decode_array_field(pieces: Iterable[bytes | memoryview], field: str, max_size: int) -> Iterator[Any]:
    """Decode canonical msgpack {field: [v0, v1, ...]} (a map of exactly that key) from its bytes
    in consecutive pieces: yields the array's length, then each value. decode()'s rules (each
    value re-encodes to its own bytes, headers in their smallest form, no trailing bytes) with
    one value in memory at a time, so a payload of hundreds of MiB is checked chunk by chunk."""
    unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=False,
                                object_pairs_hook=_pairs_to_dict, ext_hook=_reject_ext)
    source = iter(pieces)
    window = bytearray()   # bytes fed and not yet checked start at window[start]
    start = fed = 0

    def more() -> bool:
        nonlocal fed
        piece = next(source, None)
        if piece is None:
            return False
        fed += len(piece)
        if fed > max_size:
            raise LimitError(f"encoded value is over {max_size} bytes")
        unpacker.feed(piece)
        window.extend(piece)
        return True

    def take(read: Callable[[], Any]) -> tuple[Any, bytes]:
        nonlocal start
        while True:
            try:
                value = read()
                break
            except msgpack.OutOfData:
                if not more():
                    raise CanonicalError("truncated msgpack") from None
            except CanonicalError:
                raise
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise CanonicalError(f"malformed msgpack: {exc}") from None
            except RecursionError:
                raise CanonicalError("msgpack nested too deeply") from None
        end = unpacker.tell() - (fed - len(window))   # unpacker.tell() counts every byte fed
        raw = bytes(window[start:end])
        start = end
        if start > 1 << 20:   # drop what is checked, now and then (not per value: O(n^2))
            del window[:start]
            start = 0
        return value, raw

    size, raw = take(unpacker.read_map_header)
    if size != 1 or raw != b"\x81":
        raise CanonicalError(f"expected a map with the one field {field!r}")
    key, raw = take(unpacker.unpack)
    if key != field or raw != msgpack.packb(field):
        raise CanonicalError(f"expected a map with the one field {field!r}")
    count, raw = take(unpacker.read_array_header)
    if raw != msgpack.Packer().pack_array_header(count):
        raise CanonicalError("msgpack is not in canonical form (array length encoding)")
    yield count
    for _ in range(count):
        value, raw = take(unpacker.unpack)
        try:
            again = encode(value)
        except CanonicalError as exc:
            raise CanonicalError(f"not canonical: {exc}") from None
        if again != raw:
            raise CanonicalError("msgpack is not in canonical form (key order or integer/length encoding)")
        yield value
    if start < len(window) or more():
        raise CanonicalError("trailing bytes after the encoded value")
