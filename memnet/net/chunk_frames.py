"""Chunk frames, encoded and decoded by hand (sans I/O; memnet/net/wire.py calls them).

A chunk frame's body, canonical msgpack (docs/MIP.md §2) of its four fields in key order, is
    HEAD ‖ cid (36) ‖ DATA_KEY ‖ bin8/16/32 header ‖ data ‖ ID_KEY ‖ uint ‖ TAIL
Chunk frames carry nearly every byte of a fetch, so they skip the general codec: no msgpack copy
of the data and no re-encode to check canonicity. The decoder accepts only this exact layout with
minimal lengths and integers, i.e. exactly canonical.encode's output (the tests check both
against the general codec); anything else goes to the general decoder, which names the error.
"""

from __future__ import annotations

from memnet.cube import cid, limits
from memnet.errors import LimitError
from memnet.net.frames import varint

HEAD = b"\x84\xa3cid\xc4\x24"  # fixmap of 4, "cid", bin8 of 36 bytes
DATA_KEY = b"\xa4data"
ID_KEY = b"\xa2id"
TAIL = b"\xa1t\xa5chunk"
DATA_AT = len(HEAD) + cid.CID_LEN + len(DATA_KEY)  # offset of data's bin header
_BIN = {0xC4: (1, 1), 0xC5: (2, 0x100), 0xC6: (4, 0x10000)}  # length bytes, least length (no chunk is empty)
_UINT = {0xCC: (1, 0x80), 0xCD: (2, 0x100), 0xCE: (4, 0x10000)}  # value bytes, least value


def _sized(n: int, tags: bytes) -> bytes:
    """A msgpack tag (one of three, for 1-, 2- and 4-byte widths) and n in the smallest width."""
    width = 1 if n < 0x100 else 2 if n < 0x10000 else 4
    return bytes((tags[(1, 2, 4).index(width)],)) + n.to_bytes(width, "big")


def _uint(value: int) -> bytes:
    """msgpack's shortest encoding of 0 <= value < 2^32."""
    return bytes((value,)) if value < 0x80 else _sized(value, b"\xcc\xcd\xce")


def encode(rid: int, chunk_id: bytes, data: bytes | memoryview, max_frame: int) -> bytes:
    """The whole frame (varint length ‖ body) of a valid chunk message, with one copy of data."""
    head = HEAD + chunk_id + DATA_KEY + _sized(len(data), b"\xc4\xc5\xc6")
    tail = ID_KEY + _uint(rid) + TAIL
    size = len(head) + len(data) + len(tail)
    if size > max_frame:
        raise LimitError(f"chunk frame is {size} bytes, the limit is {max_frame}")
    return b"".join((varint(size), head, data, tail))


def decode(body: memoryview) -> tuple[int, bytes, memoryview] | None:
    """(id, cid, data) of the valid chunk message whose canonical encoding body is, else None.
    The data is a view of body, not a copy."""
    head = bytes(body[:DATA_AT + 5])
    if not head.startswith(HEAD) or head[DATA_AT - len(DATA_KEY):DATA_AT] != DATA_KEY \
            or len(head) <= DATA_AT or head[DATA_AT] not in _BIN:
        return None
    width, least = _BIN[head[DATA_AT]]
    start = DATA_AT + 1 + width
    n = int.from_bytes(head[DATA_AT + 1:start], "big")
    if len(head) < start or not least <= n <= limits.MAX_CHUNK_SIZE:
        return None
    rest = bytes(body[start + n:start + n + 16])  # "id", its value, "t", "chunk": at most 16 bytes
    at = len(ID_KEY) + 1
    if len(rest) < at or not rest.startswith(ID_KEY):
        return None
    kind = rest[at - 1]
    if kind < 0x80:  # positive fixint
        width, least = 0, 0
    elif kind in _UINT:
        width, least = _UINT[kind]
    else:  # negative, uint64 or not an integer: not a valid id
        return None
    rid = int.from_bytes(rest[at:at + width], "big") if width else kind
    end = start + n + at + width + len(TAIL)
    if rid < least or rest[at + width:] != TAIL or len(body) != end:
        return None
    chunk_id = head[len(HEAD):len(HEAD) + cid.CID_LEN]
    if not chunk_id.startswith(cid.PREFIX):
        return None
    return rid, chunk_id, body[start:start + n]
