"""The span protocol (docs/MIP.md §21): one stream is one inference session on one span server.

Frames as MIP's (varint length ‖ canonical msgpack map, memnet/net/frames.py). Messages:

    client -> server
      open    {start, end, max_length, model, [seed: {cube, tokens, [providers]}]}   first, once
      step    {step, position, tokens, hidden}                          then any number
      close   {}
    server -> client
      opened  {position, source, fetched}     the session's cache holds `position` tokens
      output  {step, hidden}                  one per step, in order
      error   {code, message}                 the session is over

hidden is float32 little-endian, [tokens, hidden_size] row-major. A seed names an activation
cube whose first `tokens` positions fill this span's layers of the cache before the first step;
its providers are hints (memnet multiaddrs of nodes holding the cube) that spare the server a DHT
lookup: whatever comes from them is verified like any fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from memnet.cube import canonical, cid
from memnet.errors import CIDError, FormatError, LimitError
from memnet.net.frames import FrameSplitter, frame

PROTOCOL_ID = "/memnet/span/1.0.0"
MAX_FRAME = 64 * 1024 * 1024    # a step of 8192 tokens of a 2048-wide model is 64 MiB of float32
MAX_LAYERS = 1024
MAX_TOKENS = 1 << 20
MAX_STEP = 2**32 - 1
MAX_MESSAGE_TEXT = 512
MAX_HINTS = 8           # provider hints of a seed
MAX_HINT_CHARS = 256
SOURCES = ("none", "store", "fetched")
ERROR_CODES = frozenset({
    "bad_request",   # malformed, or against a rule of the session
    "too_large",     # beyond the server's frame, token or layer limits
    "admission",     # no room in the server's cache budget now: try another server or later
    "not_serving",   # the span is not (all) served here
    "wrong_model",   # the server runs another model (fingerprint)
    "bad_seed",      # the seed cube is forged, for another model or layout, revoked, or unobtainable
    "busy",          # too many sessions from this peer
    "timeout",       # the client was silent too long
    "internal",      # the server failed; not the client's fault
})


@dataclass(frozen=True, slots=True)
class Message:
    t: ClassVar[str] = ""

    def to_map(self) -> dict:
        out = {"t": self.t}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:  # canonical msgpack has no nil: an absent field is omitted
                out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class Seed:
    cube: bytes
    tokens: int
    providers: tuple[str, ...] = ()  # hints: memnet multiaddrs (/p2p/PEERID) that hold the cube


@dataclass(frozen=True, slots=True)
class Open(Message):
    start: int
    end: int
    max_length: int
    model: bytes
    seed: Seed | None = None
    t: ClassVar[str] = "open"

    def to_map(self) -> dict:
        out = Message.to_map(self)
        if self.seed is not None:
            out["seed"] = {"cube": self.seed.cube, "tokens": self.seed.tokens}
            if self.seed.providers:
                out["seed"]["providers"] = list(self.seed.providers)
        return out


@dataclass(frozen=True, slots=True)
class Opened(Message):
    position: int
    source: str
    fetched: int
    t: ClassVar[str] = "opened"


@dataclass(frozen=True, slots=True)
class Step(Message):
    step: int
    position: int
    tokens: int
    hidden: bytes | memoryview
    t: ClassVar[str] = "step"


@dataclass(frozen=True, slots=True)
class Output(Message):
    step: int
    hidden: bytes | memoryview
    t: ClassVar[str] = "output"


@dataclass(frozen=True, slots=True)
class Close(Message):
    t: ClassVar[str] = "close"


@dataclass(frozen=True, slots=True)
class Error(Message):
    code: str
    message: str
    t: ClassVar[str] = "error"


FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {  # required, optional
    "open": (frozenset({"start", "end", "max_length", "model"}), frozenset({"seed"})),
    "opened": (frozenset({"position", "source", "fetched"}), frozenset()),
    "step": (frozenset({"step", "position", "tokens", "hidden"}), frozenset()),
    "output": (frozenset({"step", "hidden"}), frozenset()),
    "close": (frozenset(), frozenset()),
    "error": (frozenset({"code", "message"}), frozenset()),
}
CLIENT_MESSAGES = frozenset({"open", "step", "close"})
SERVER_MESSAGES = frozenset({"opened", "output", "error"})


def _int(t: str, name: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int:
        raise FormatError(f"{t}: {name} must be an integer")
    if value < low:
        raise FormatError(f"{t}: {name} must be at least {low}")
    if value > high:
        raise LimitError(f"{t}: {name} is {value}, the limit is {high}")
    return value


def _bytes(t: str, name: str, value: Any, exact: int | None = None) -> bytes:
    if not isinstance(value, (bytes, memoryview)):
        raise FormatError(f"{t}: {name} must be bytes")
    if exact is not None and len(value) != exact:
        raise FormatError(f"{t}: {name} must be {exact} bytes")
    return value


def from_map(obj: Any) -> Message:
    """The typed message of a decoded map; FormatError (LimitError for sizes) naming the field."""
    if not isinstance(obj, dict):
        raise FormatError("span message is not a map")
    t = obj.get("t")
    if not isinstance(t, str) or t not in FIELDS:
        raise FormatError(f"unknown span message type {t!r}"[:200])
    required, optional = FIELDS[t]
    present = set(obj) - {"t"}
    if present - required - optional:
        raise FormatError(f"{t}: unknown field(s) {sorted(map(str, present - required - optional))}"[:200])
    if required - present:
        raise FormatError(f"{t}: missing field(s) {sorted(required - present)}")
    if t == "open":
        start = _int(t, "start", obj["start"], 0, MAX_LAYERS)
        end = _int(t, "end", obj["end"], 1, MAX_LAYERS)
        if end <= start:
            raise FormatError("open: end must be above start")
        seed = None
        if "seed" in obj:
            raw = obj["seed"]
            if not isinstance(raw, dict) or not {"cube", "tokens"} <= set(raw) <= {"cube", "tokens", "providers"}:
                raise FormatError("open: seed must be {cube, tokens[, providers]}")
            hints = raw.get("providers", [])
            if not isinstance(hints, list) or not hints and "providers" in raw or len(hints) > MAX_HINTS \
                    or not all(isinstance(h, str) and 0 < len(h) <= MAX_HINT_CHARS for h in hints):
                raise FormatError(f"open: seed.providers must list 1 … {MAX_HINTS} multiaddrs")
            try:
                cube = cid.check_binary(_bytes(t, "seed.cube", raw["cube"]))
            except CIDError:
                raise CIDError("open: seed.cube is not a CIDv1 of a raw sha2-256 block") from None
            seed = Seed(cube, _int(t, "seed.tokens", raw["tokens"], 1, MAX_TOKENS), tuple(hints))
        return Open(start, end, _int(t, "max_length", obj["max_length"], 1, MAX_TOKENS),
                    _bytes(t, "model", obj["model"], 32), seed)
    if t == "opened":
        if obj["source"] not in SOURCES:
            raise FormatError(f"opened: source must be one of {', '.join(SOURCES)}")
        return Opened(_int(t, "position", obj["position"], 0, MAX_TOKENS), obj["source"],
                      _int(t, "fetched", obj["fetched"], 0, 2**62))
    if t == "step":
        return Step(_int(t, "step", obj["step"], 0, MAX_STEP), _int(t, "position", obj["position"], 0, MAX_TOKENS),
                    _int(t, "tokens", obj["tokens"], 1, MAX_TOKENS), _bytes(t, "hidden", obj["hidden"]))
    if t == "output":
        return Output(_int(t, "step", obj["step"], 0, MAX_STEP), _bytes(t, "hidden", obj["hidden"]))
    if t == "close":
        return Close()
    code, message = obj["code"], obj["message"]
    if not isinstance(code, str) or code not in ERROR_CODES:
        raise FormatError(f"error: unknown error code {code!r}"[:200])
    if not isinstance(message, str):
        raise FormatError("error: message must be a str")
    if len(message) > MAX_MESSAGE_TEXT:
        raise LimitError(f"error: message is {len(message)} characters, the limit is {MAX_MESSAGE_TEXT}")
    return Error(code, message)


def error(code: str, message: Any) -> Error:
    text = str(message)[:MAX_MESSAGE_TEXT].encode("utf-8", "replace").decode("utf-8")
    return Error(code, text)


def encode(message: Message) -> bytes:
    """The frame of a message (checked by decoding its own map first)."""
    as_map = message.to_map()
    from_map(as_map)
    body = canonical.encode(as_map)
    if len(body) > MAX_FRAME:
        raise LimitError(f"{message.t} frame is {len(body)} bytes, the limit is {MAX_FRAME}")
    return frame(body)


class Decoder(FrameSplitter):
    """Stream bytes -> typed span messages."""

    def __init__(self, max_frame: int = MAX_FRAME):
        super().__init__(max_frame)

    def next(self) -> Message | None:
        body = self.next_body()
        if body is None:
            return None
        return from_map(canonical.decode(body, self.max_frame))
