"""What the protocol fuzzers feed: the sans-IO MIP decoder and both session state machines.

One entry point, one_input(data): the first byte picks a target, the second how the rest is cut
into pieces (as a stream delivers it), the rest is the stream. Bad input may only end in a
memnet error (MemnetError): anything else escaping is a finding, and so is a decoder that keeps
more bytes than one frame of its limit. Used at length by scripts/campaign_fuzz.py (atheris,
coverage-guided) and briefly by tests/test_fuzz.py (hypothesis). seeds() are valid streams of
every message type, for the mutators to start from."""

from __future__ import annotations

import hashlib
from collections import Counter

from memnet.cube import canonical, cid
from memnet.errors import MemnetError
from memnet.net import chunk_frames, frames, session, wire

TARGETS = ("server", "client", "decoder", "body")
CUBE = cid.cid_of(b"fuzzed cube")
CHUNK_DATA = [b"a" * 300, bytes(range(256)) * 4]
CHUNKS = [cid.cid_of(d) for d in CHUNK_DATA]
PREFIX_KEY = hashlib.sha256(b"prefix").digest()
SEEN: Counter[str] = Counter()   # message types decoded so far (every type should show up)


def client_session() -> session.ClientSession:
    """A requester with four requests outstanding, one of each kind: the replies a fuzzer sends
    must answer them in order."""
    s = session.ClientSession("fuzz")
    s.get_manifest(CUBE)          # id 1
    s.get_chunks(CUBE, CHUNKS)    # id 2
    s.get_have(CUBE)              # id 3
    s.get_prefix(PREFIX_KEY)      # id 4
    return s


def _pieces(data: bytes, cut: int) -> list[bytes]:
    size = 1 + cut % 97 if cut < 200 else len(data) or 1   # byte-at-a-time to whole
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def _drain(receiver) -> int:
    """Events until more bytes are needed; how many."""
    n = 0
    while (event := receiver.next_event()) is not None:
        SEEN[event.t] += 1
        n += 1
    return n


def one_input(data: bytes) -> str:
    """Feed one input to the target its first byte names; returns how it ended ("ok" or the
    memnet error's class name). Raises AssertionError for an unbounded buffer, and lets any
    non-memnet exception through (the fuzzers report those)."""
    if len(data) < 2:
        return "short"
    target, stream = TARGETS[data[0] % len(TARGETS)], data[2:]
    try:
        if target == "body":
            body = memoryview(stream)
            fast = chunk_frames.decode(body)
            SEEN["chunk" if fast else wire.from_map(canonical.decode(body, wire.MAX_FRAME)).t] += 1
            return "ok"
        receiver = {"server": session.ServerSession, "client": client_session,
                    "decoder": wire.FrameDecoder}[target]()
        limit = receiver._decoder.max_frame if target != "decoder" else receiver.max_frame
        for piece in _pieces(stream, data[1]):
            receiver.receive_data(piece)
            assert receiver.pending <= limit + 10, f"{target} holds {receiver.pending} bytes, limit {limit}"
            _drain(receiver)
        receiver.eof()
        return "ok"
    except MemnetError as exc:
        return type(exc).__name__


def seeds() -> list[bytes]:
    """Valid inputs for every target and message type (requests for the server, the replies the
    client waits for, any message for the decoder, bare bodies), with several ways of cutting."""
    requests = [wire.get_manifest(1, CUBE), wire.get_chunks(2, CUBE, CHUNKS), wire.get_have(3, CUBE),
                wire.get_prefix(4, PREFIX_KEY)]
    replies = [wire.manifest(1, b"\x81" * 40), wire.chunk(2, CHUNKS[0], CHUNK_DATA[0]),
               wire.missing(2, CHUNKS[1]), wire.have(3, wire.bits_from_flags([True, False, True])),
               wire.cubes(4, [CUBE])]
    others = [wire.error(0, "bad_request", "no"), wire.error(2, "rate_limited", "slow down"),
              wire.chunk(7, CHUNKS[1], CHUNK_DATA[1])]
    out = []
    for cut in (255, 0, 7, 60):
        out.append(bytes([0, cut]) + b"".join(wire.encode_frame(m) for m in requests))
        out.append(bytes([1, cut]) + b"".join(wire.encode_frame(m) for m in replies))
        for m in requests + replies + others:
            out.append(bytes([2, cut]) + wire.encode_frame(m))
    for m in requests + replies + others:
        out.append(bytes([3, 255]) + _body(wire.encode_frame(m)))
    out.append(bytes([2, 255]) + frames.varint(wire.MAX_FRAME + 1))   # oversized length prefix
    out.append(bytes([0, 255]) + frames.varint(session.MAX_REQUEST_FRAME + 1) + b"\x81")
    return out


def _body(frame: bytes) -> bytes:
    """A frame without its varint length."""
    for i, byte in enumerate(frame):
        if not byte & 0x80:
            return frame[i + 1:]
    return b""
