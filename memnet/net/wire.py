"""The MIP exchange protocol on the wire (docs/MIP.md §14): frames and messages, sans I/O.

A frame is varint(len(body)) ‖ body, the body one canonical msgpack map (§2). Messages are typed
(GetManifest, Chunk, Error, ...: frozen dataclasses, one per message type); every one that leaves
or enters this module has been validated, so the daemon never looks at an unchecked field (a
decoded chunk's data is a read-only memoryview of its frame, not a copy). validate() checks the
map form. v1 is strict: unknown or missing fields are errors, and any change is a new protocol
id. Only memnet.errors exceptions escape for bad input. Which message may follow which on a
stream is the sessions' business (memnet/net/session.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from memnet.cube import canonical, cid, limits
from memnet.errors import CIDError, FormatError, LimitError
from memnet.net import chunk_frames, frames
from memnet.net.frames import FrameSplitter

PROTOCOL_ID = "/memnet/mip/1.0.0"
SUPPORTED = (PROTOCOL_ID,)  # newest first, as offered in multistream-select

MAX_FRAME = limits.MAX_CHUNK_SIZE + 64 * 1024  # a full chunk plus room for the envelope
MAX_BATCH = 64                                   # chunk CIDs per get_chunks
MAX_MESSAGE_TEXT = 512                           # characters of an error message
MAX_ID = 2**32 - 1
MAX_HAVE_BYTES = -(-limits.MAX_CHUNKS // 8)
MAX_PREFIX_CUBES = 16                            # cube ids per cubes reply

ERROR_CODES = frozenset({"bad_request", "not_found", "too_large", "rate_limited", "busy", "unsupported",
                         "internal", "quota", "revoked"})

# Fields of each message type besides "t" and "id".
FIELDS: dict[str, frozenset[str]] = {
    "get_manifest": frozenset({"cube"}),
    "manifest": frozenset({"data"}),
    "get_chunks": frozenset({"cube", "chunks"}),
    "chunk": frozenset({"cid", "data"}),
    "missing": frozenset({"cid"}),
    "get_have": frozenset({"cube"}),
    "have": frozenset({"bits"}),
    "error": frozenset({"code", "message"}),
    "get_prefix": frozenset({"key"}),
    "cubes": frozenset({"cubes"}),
}
REQUESTS = frozenset({"get_manifest", "get_chunks", "get_have", "get_prefix"})
RESPONSES = frozenset(FIELDS) - REQUESTS


# -- validation --------------------------------------------------------------------------------

def _bytes(t: str, name: str, value: Any, low: int, high: int, types: type | tuple = bytes) -> bytes:
    if not isinstance(value, types):
        raise FormatError(f"{t}: {name} must be bytes, not {type(value).__name__}")
    if len(value) > high:
        raise LimitError(f"{t}: {name} is {len(value)} bytes, the limit is {high}")
    if len(value) < low:
        raise FormatError(f"{t}: {name} is empty")
    return value


def _cid(t: str, name: str, value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise FormatError(f"{t}: {name} must be bytes, not {type(value).__name__}")
    try:
        return cid.check_binary(value)
    except CIDError:
        raise CIDError(f"{t}: {name} is not a CIDv1 of a raw sha2-256 block") from None


def _cid_list(t: str, name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, list):
        raise FormatError(f"{t}: {name} must be a list, not {type(value).__name__}")
    if len(value) < low:
        raise FormatError(f"{t}: {name} is empty")
    if len(value) > high:
        raise LimitError(f"{t}: {name} lists {len(value)} CIDs, the limit is {high}")
    for index, item in enumerate(value):
        _cid(t, f"{name}[{index}]", item)
    if len(set(value)) != len(value):
        raise FormatError(f"{t}: {name} lists a CID twice")


def validate(obj: Any) -> dict:
    """Return obj if it is a valid MIP message, else raise FormatError (LimitError for sizes,
    CIDError for malformed CIDs) naming the field."""
    if not isinstance(obj, dict):
        raise FormatError(f"message is not a map but {type(obj).__name__}")
    t = obj.get("t")
    if not isinstance(t, str) or t not in FIELDS:
        raise FormatError(f"unknown message type {t!r}"[:200])
    allowed = FIELDS[t] | {"t", "id"}
    for key in obj:
        if key not in allowed:
            raise FormatError(f"{t}: unknown field {key!r}"[:200])
    for key in sorted(allowed):
        if key not in obj:
            raise FormatError(f"{t}: missing field {key!r}")
    rid = obj["id"]
    if type(rid) is not int or not 0 <= rid <= MAX_ID:  # type() so that a bool is no id
        raise FormatError(f"{t}: id must be an integer 0 … 2^32-1")
    if t in ("get_manifest", "get_have"):
        _cid(t, "cube", obj["cube"])
    elif t == "get_chunks":
        _cid(t, "cube", obj["cube"])
        _cid_list(t, "chunks", obj["chunks"], 1, MAX_BATCH)
    elif t == "manifest":
        _bytes(t, "data", obj["data"], 1, limits.MAX_MANIFEST)
    elif t == "chunk":
        _cid(t, "cid", obj["cid"])
        # MIP §4: no chunk is empty. A decoded chunk's data is a read-only view of the frame.
        _bytes(t, "data", obj["data"], 1, limits.MAX_CHUNK_SIZE, (bytes, memoryview))
    elif t == "missing":
        _cid(t, "cid", obj["cid"])
    elif t == "have":
        _bytes(t, "bits", obj["bits"], 0, MAX_HAVE_BYTES)
    elif t == "get_prefix":
        if not isinstance(obj["key"], bytes) or len(obj["key"]) != 32:
            raise FormatError("get_prefix: key must be 32 bytes (a prefix-chain key)")
    elif t == "cubes":
        _cid_list(t, "cubes", obj["cubes"], 0, MAX_PREFIX_CUBES)
    else:  # error
        code, message = obj["code"], obj["message"]
        if not isinstance(code, str) or code not in ERROR_CODES:
            raise FormatError(f"error: unknown error code {code!r}"[:200])
        if not isinstance(message, str):
            raise FormatError(f"error: message must be a str, not {type(message).__name__}")
        if len(message) > MAX_MESSAGE_TEXT:
            raise LimitError(f"error: message is {len(message)} characters, the limit is {MAX_MESSAGE_TEXT}")
    return obj


# -- typed messages ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Message:
    id: int
    t: ClassVar[str] = ""

    def to_map(self) -> dict:
        """The map form that goes on the wire (canonical msgpack encodes it)."""
        return {"t": self.t, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True, slots=True)
class GetManifest(Message):
    cube: bytes
    t: ClassVar[str] = "get_manifest"


@dataclass(frozen=True, slots=True)
class ManifestReply(Message):
    data: bytes
    t: ClassVar[str] = "manifest"


@dataclass(frozen=True, slots=True)
class GetChunks(Message):
    cube: bytes
    chunks: list
    t: ClassVar[str] = "get_chunks"


@dataclass(frozen=True, slots=True)
class Chunk(Message):
    cid: bytes
    data: bytes | memoryview
    t: ClassVar[str] = "chunk"


@dataclass(frozen=True, slots=True)
class Missing(Message):
    cid: bytes
    t: ClassVar[str] = "missing"


@dataclass(frozen=True, slots=True)
class GetHave(Message):
    cube: bytes
    t: ClassVar[str] = "get_have"


@dataclass(frozen=True, slots=True)
class Have(Message):
    bits: bytes
    t: ClassVar[str] = "have"


@dataclass(frozen=True, slots=True)
class Error(Message):
    code: str
    message: str
    t: ClassVar[str] = "error"


@dataclass(frozen=True, slots=True)
class GetPrefix(Message):
    key: bytes
    t: ClassVar[str] = "get_prefix"


@dataclass(frozen=True, slots=True)
class Cubes(Message):
    cubes: list
    t: ClassVar[str] = "cubes"


TYPES: dict[str, type[Message]] = {cls.t: cls for cls in (
    GetManifest, ManifestReply, GetChunks, Chunk, Missing, GetHave, Have, Error, GetPrefix, Cubes)}
Request = GetManifest | GetChunks | GetHave | GetPrefix


def from_map(obj: Any) -> Message:
    """The typed message of a map, validated (FormatError naming the field otherwise)."""
    validate(obj)
    kind = TYPES[obj["t"]]
    return kind(**{k: v for k, v in obj.items() if k != "t"})


# -- constructors ------------------------------------------------------------------------------

def get_manifest(id: int, cube: bytes) -> GetManifest:
    return from_map({"t": "get_manifest", "id": id, "cube": cube})


def manifest(id: int, data: bytes) -> ManifestReply:
    return from_map({"t": "manifest", "id": id, "data": data})


def get_chunks(id: int, cube: bytes, chunks: list[bytes]) -> GetChunks:
    return from_map({"t": "get_chunks", "id": id, "cube": cube, "chunks": list(chunks)})


def chunk(id: int, cid: bytes, data: bytes) -> Chunk:
    return from_map({"t": "chunk", "id": id, "cid": cid, "data": data})


def missing(id: int, cid: bytes) -> Missing:
    return from_map({"t": "missing", "id": id, "cid": cid})


def get_have(id: int, cube: bytes) -> GetHave:
    return from_map({"t": "get_have", "id": id, "cube": cube})


def have(id: int, bits: bytes) -> Have:
    return from_map({"t": "have", "id": id, "bits": bits})


def get_prefix(id: int, key: bytes) -> GetPrefix:
    return from_map({"t": "get_prefix", "id": id, "key": key})


def cubes(id: int, cube_ids: list[bytes]) -> Cubes:
    return from_map({"t": "cubes", "id": id, "cubes": list(cube_ids)})


def error(id: int, code: str, message: str) -> Error:
    """An error frame. The message is ours (often an exception's text), so it is cut to size and
    stripped of lone surrogates rather than refused: reporting an error must not fail."""
    text = str(message)[:MAX_MESSAGE_TEXT].encode("utf-8", "replace").decode("utf-8")
    return from_map({"t": "error", "id": id, "code": code, "message": text})


# -- bitfields (have) --------------------------------------------------------------------------

def bits_from_flags(flags: list[bool]) -> bytes:
    """Bit i (MSB first: byte i//8, mask 0x80 >> i%8) is set iff flags[i]."""
    out = bytearray(-(-len(flags) // 8))
    for index, flag in enumerate(flags):
        if flag:
            out[index >> 3] |= 0x80 >> (index & 7)
    return bytes(out)


def flags_from_bits(bits: bytes, n: int) -> list[bool]:
    """The n flags of a have bitfield; FormatError unless it is exactly ceil(n/8) bytes with every
    padding bit clear (so each set of flags has one encoding)."""
    if not isinstance(bits, bytes) or len(bits) != -(-n // 8):
        raise FormatError(f"have: bitfield is not {-(-n // 8)} bytes for {n} chunks")
    if n % 8 and bits[-1] & (0xFF >> (n % 8)):
        raise FormatError("have: a padding bit past the last chunk is set")
    return [bool(bits[i >> 3] & (0x80 >> (i & 7))) for i in range(n)]


# -- frames ------------------------------------------------------------------------------------

_varint = frames.varint  # tests and the vector generator build frames by hand


def encode_frame(msg: Message | dict) -> bytes:
    """varint(len(body)) ‖ body for a valid message (a map is checked and typed first)."""
    if not isinstance(msg, Message):
        msg = from_map(msg)  # FormatError naming what is wrong with it
    if type(msg) is Chunk:
        validate(msg.to_map())
        return chunk_frames.encode(msg.id, msg.cid, msg.data, MAX_FRAME)
    body = canonical.encode(validate(msg.to_map()))
    if len(body) > MAX_FRAME:
        raise LimitError(f"{msg.t} frame is {len(body)} bytes, the limit is {MAX_FRAME}")
    return _varint(len(body)) + body


class FrameDecoder(FrameSplitter):
    """Turns stream bytes into validated messages: feed() what arrives, then call next() until it
    returns None. A decoder that raised has seen a protocol violation: close the stream."""

    def __init__(self, max_frame: int = MAX_FRAME):
        if not 0 < max_frame <= MAX_FRAME:
            raise ValueError(f"max_frame must be 1 … {MAX_FRAME}")
        super().__init__(max_frame)

    def next(self) -> Message | None:
        """The next complete message, or None if more bytes are needed."""
        body = self.next_body()
        if body is None:
            return None
        fast = chunk_frames.decode(body)
        if fast is not None:
            return Chunk(id=fast[0], cid=fast[1], data=fast[2])
        return from_map(canonical.decode(body, self.max_frame))

    # the receiver protocol that memnet/net/streams.py drives (the sessions speak it too)
    def receive_data(self, data: bytes) -> None:
        self.feed(data)

    def next_event(self) -> Message | None:
        return self.next()
