"""MIP sessions as state machines, sans I/O (as h11 does HTTP): bytes in, typed events out,
frames to send out. memnet/net/client.py and server.py only move bytes between these and a
libp2p stream, so every rule of a session is tested without a network (tests/test_session.py).

The rules (docs/MIP.md §14):
- One stream is one session. The requester numbers its requests 1, 2, 3, ... and may pipeline
  them; the responder answers them in the order they were sent.
- A get_chunks is answered by one chunk or missing per requested CID, in the requested order; any
  other request by exactly one reply of its type (manifest, have, cubes).
- Any request may instead be answered by an error with its id: that request is over, the session
  goes on. An error with id 0 means the responder saw a protocol violation: it hangs up.
- A responder accepts only requests; anything else is a violation, answered by an error with id 0,
  after which it reads nothing more from that stream.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from memnet.errors import FormatError, MemnetError, PeerError, PeerGone
from memnet.net import wire
from memnet.net.wire import Message

MAX_REQUEST_FRAME = 16 * 1024  # a full get_chunks is ~2.5 KB: no requester makes us buffer chunk-sized frames


@dataclass
class _Expected:
    rid: int
    reply: type[Message]                      # the reply type (Chunk for get_chunks)
    cids: deque[bytes] = field(default_factory=deque)  # get_chunks: CIDs still to be answered


class ClientSession:
    """The requester side of one stream."""

    def __init__(self, peer: str = "peer", max_frame: int = wire.MAX_FRAME):
        self.peer = peer
        self._decoder = wire.FrameDecoder(max_frame)
        self._ids = itertools.count(1)
        self._expected: deque[_Expected] = deque()
        self.broken: str | None = None  # why the session can no longer be used

    # -- requests: each returns (id, the frame to send) -----------------------------------------

    def _request(self, message: Message, reply: type[Message], cids: list[bytes] = ()) -> tuple[int, bytes]:
        if self.broken is not None:
            raise PeerError(f"session with {self.peer} is broken: {self.broken}")
        frame = wire.encode_frame(message)
        self._expected.append(_Expected(message.id, reply, deque(cids)))
        return message.id, frame

    def get_manifest(self, cube_id: bytes) -> tuple[int, bytes]:
        return self._request(wire.get_manifest(next(self._ids), cube_id), wire.ManifestReply)

    def get_chunks(self, cube_id: bytes, chunk_ids: list[bytes]) -> tuple[int, bytes]:
        return self._request(wire.get_chunks(next(self._ids), cube_id, chunk_ids), wire.Chunk, chunk_ids)

    def get_have(self, cube_id: bytes) -> tuple[int, bytes]:
        return self._request(wire.get_have(next(self._ids), cube_id), wire.Have)

    def get_prefix(self, key: bytes) -> tuple[int, bytes]:
        return self._request(wire.get_prefix(next(self._ids), key), wire.Cubes)

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet fully answered."""
        return len(self._expected)

    # -- replies --------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Bytes of a frame that has started to arrive."""
        return self._decoder.pending

    def receive_data(self, data: bytes) -> None:
        self._decoder.feed(data)

    def eof(self) -> None:
        """The responder closed its side: PeerError if requests are still unanswered or it
        stopped inside a frame."""
        try:
            self._decoder.eof()
        except FormatError as exc:
            raise self._break(str(exc)) from None
        if self._expected:
            raise self._break(f"peer {self.peer} closed the stream with {len(self._expected)} request(s) unanswered",
                              PeerGone)

    def next_event(self) -> Message | None:
        """The next reply, checked to answer the oldest outstanding request (a Chunk or Missing
        for the next CID of a get_chunks, an Error ending a request); None when more bytes are
        needed. PeerError, and the session is broken, for an error with id 0 or a reply out of
        turn."""
        try:
            message = self._decoder.next()
        except FormatError as exc:
            raise self._break(f"peer {self.peer} sent a malformed frame: {exc}") from None
        if message is None:
            return None
        if type(message) is wire.Error and message.id == 0:
            raise self._break(f"peer {self.peer}: {message.code}: {message.message}")
        if not self._expected:
            raise self._break(f"peer {self.peer} sent {message.t} #{message.id} unasked")
        expected = self._expected[0]
        if message.id != expected.rid:
            raise self._break(f"peer {self.peer} answered request {message.id}, expected {expected.rid}")
        if type(message) is wire.Error:
            self._expected.popleft()
            return message
        if expected.reply is wire.Chunk:
            if type(message) not in (wire.Chunk, wire.Missing):
                raise self._break(f"peer {self.peer} sent {message.t} #{message.id} mid-batch")
            if message.cid != expected.cids[0]:
                raise self._break(f"peer {self.peer} answered out of order")
            expected.cids.popleft()
            if not expected.cids:
                self._expected.popleft()
            return message
        if type(message) is not expected.reply:
            raise self._break(f"peer {self.peer} sent {message.t}, expected {expected.reply.t}")
        self._expected.popleft()
        return message

    def _break(self, why: str, kind: type[PeerError] = PeerError) -> PeerError:
        self.broken = why
        return kind(why)


class ServerSession:
    """The responder side of one stream: requests out, violations named."""

    def __init__(self, max_frame: int = MAX_REQUEST_FRAME):
        self._decoder = wire.FrameDecoder(max_frame)
        self.violated: str | None = None

    @property
    def pending(self) -> int:
        return self._decoder.pending

    def receive_data(self, data: bytes) -> None:
        if self.violated is None:  # after a violation nothing more is read
            self._decoder.feed(data)

    def eof(self) -> None:
        """The requester closed its side: FormatError if it stopped inside a frame."""
        self._decoder.eof()

    def next_event(self) -> wire.Request | None:
        """The next request, or None when more bytes are needed; FormatError (a MemnetError)
        for a violation, after which the session accepts nothing more."""
        if self.violated is not None:
            raise FormatError(f"the session already ended: {self.violated}")
        try:
            message = self._decoder.next()
            if message is not None and message.t not in wire.REQUESTS:
                raise FormatError(f"{message.t} is not a request")
        except MemnetError as exc:
            self.violated = str(exc)
            raise
        return message

    def violation(self, exc: Exception) -> bytes:
        """The error frame (id 0) that ends the session after a violation."""
        self.violated = self.violated or str(exc)
        return wire.encode_frame(wire.error(0, "bad_request", str(exc)))
