"""The rules of a span session, sans I/O (the bridge's server and client only move bytes):

- the client's first message is open; a server answers opened (or error, and the session is over);
- then steps: each step's id is above the last one's (a repeated or older id is refused, so a
  replayed step cannot run twice); its position is at most the cache's current length (equal:
  go on; lower: rewind, dropping what came after, as after a failover or a rejected draft) and
  position + tokens is at most the session's max_length; its hidden state is exactly
  tokens x hidden_size float32; the server answers each step with one output carrying its id;
- close, or an error from either side, ends the session.
A violation is answered with an error and ends the session (Petals' own position check is a
tuple in an assert, which never fires; here it is a rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from memnet.errors import FormatError, MemnetError, PeerError
from memnet.span import protocol as p


class SpanError(FormatError):
    """A span session rule broken by the other side; code is the protocol error code to send."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """What a server accepts (its span, its model, the biggest session)."""

    start: int
    end: int
    model: bytes
    hidden_size: int
    max_length: int


OPEN_FRAME = 16 * 1024   # an open with MAX_HINTS hints of MAX_HINT_CHARS is under 3 KiB
STEP_OVERHEAD = 128      # a step frame's map around its hidden state


def step_frame_limit(max_length: int, hidden_size: int) -> int:
    """The largest frame of a legal step in a session of max_length tokens."""
    return max_length * hidden_size * 4 + STEP_OVERHEAD


class ServerSession:
    """The server side of one stream. Its frame limit follows what the client may send: an open's
    worth until the open, then the largest step of the session (a stranger's stream cannot make
    the server buffer a 64 MiB frame it never asked for)."""

    def __init__(self, limits: Limits, max_frame: int = p.MAX_FRAME):
        self.limits, self.max_frame = limits, max_frame
        self.decoder = p.Decoder(min(max_frame, OPEN_FRAME))
        self.opened: p.Open | None = None
        self.length = 0          # tokens the cache holds
        self.last_step = -1
        self.closed = False

    @property
    def pending(self) -> int:
        return self.decoder.pending

    def receive_data(self, data: bytes) -> None:
        if not self.closed:
            self.decoder.feed(data)

    def eof(self) -> None:
        self.decoder.eof()
        self.closed = True

    def next_event(self) -> p.Message | None:
        """The next client message, checked against the session's rules (the open against the
        server's limits; admission and the seed are the server's to check). SpanError ends the
        session."""
        if self.closed:
            return None
        try:
            message = self.decoder.next()
        except MemnetError as exc:
            raise self._end("too_large" if "limit" in str(exc) else "bad_request", str(exc)) from None
        if message is None:
            return None
        if message.t not in p.CLIENT_MESSAGES:
            raise self._end("bad_request", f"{message.t} is not a client message")
        if self.opened is None:
            if type(message) is not p.Open:
                raise self._end("bad_request", f"the first message must be open, not {message.t}")
            self._check_open(message)
            self.opened = message
            self.decoder.max_frame = min(self.max_frame, step_frame_limit(message.max_length, self.limits.hidden_size))
            return message
        if type(message) is p.Open:
            raise self._end("bad_request", "the session is already open")
        if type(message) is p.Close:
            self.closed = True
            return message
        self._check_step(message)
        return message

    def _check_open(self, m: p.Open) -> None:
        lim = self.limits
        if m.model != lim.model:
            raise self._end("wrong_model", f"this server runs model {lim.model.hex()[:12]}, not {m.model.hex()[:12]}")
        if m.start < lim.start or m.end > lim.end:
            raise self._end("not_serving", f"layers [{m.start}, {m.end}) are not all served here "
                                           f"(this server holds [{lim.start}, {lim.end}))")
        if m.max_length > lim.max_length:
            raise self._end("too_large", f"max_length {m.max_length} is above this server's {lim.max_length}")
        if m.seed is not None and m.seed.tokens >= m.max_length:
            raise self._end("bad_request", "the seed leaves no room for a step under max_length")

    def _check_step(self, m: p.Step) -> None:
        if m.step <= self.last_step:
            raise self._end("bad_request", f"step {m.step} is not after step {self.last_step}")
        if m.position > self.length:
            raise self._end("bad_request", f"step {m.step} starts at position {m.position}, but the "
                                           f"cache holds {self.length} tokens")
        if m.position + m.tokens > self.opened.max_length:
            raise self._end("too_large", f"position {m.position} + {m.tokens} tokens exceed the session's "
                                         f"max_length {self.opened.max_length}")
        if len(m.hidden) != m.tokens * self.limits.hidden_size * 4:
            raise self._end("bad_request", f"step {m.step}: hidden state is {len(m.hidden)} bytes, not "
                                           f"{m.tokens} x {self.limits.hidden_size} float32")

    def seeded(self, tokens: int) -> None:
        """The cache now holds a seed's first tokens."""
        self.length = tokens

    def stepped(self, step: p.Step) -> None:
        """A step ran: the cache holds up to its end (a rewind dropped what came after)."""
        self.last_step = step.step
        self.length = step.position + step.tokens

    def _end(self, code: str, message: str) -> SpanError:
        self.closed = True
        return SpanError(code, message)


class ClientSession:
    """The client side of one stream: what it sent, and whether each answer is the one due."""

    def __init__(self, peer: str = "server", max_frame: int = p.MAX_FRAME):
        self.peer = peer
        self.decoder = p.Decoder(max_frame)
        self.opened: p.Opened | None = None
        self._open_sent = False
        self._due: list[int] = []  # step ids sent, not yet answered, in order
        self._next_step = 0
        self.broken: str | None = None

    @property
    def pending(self) -> int:
        return self.decoder.pending

    def receive_data(self, data: bytes) -> None:
        self.decoder.feed(data)

    def eof(self) -> None:
        try:
            self.decoder.eof()
        except FormatError as exc:
            raise self._break(str(exc)) from None
        raise self._break(f"span server {self.peer} closed the session")

    def open(self, message: p.Open) -> bytes:
        if self._open_sent:
            raise PeerError("the session is already open")
        self._open_sent = True
        return p.encode(message)

    def step(self, position: int, tokens: int, hidden: bytes) -> tuple[int, bytes]:
        if self.broken is not None:
            raise PeerError(f"session with {self.peer} is broken: {self.broken}")
        step_id = self._next_step
        self._next_step += 1
        self._due.append(step_id)
        return step_id, p.encode(p.Step(step_id, position, tokens, hidden))

    def close(self) -> bytes:
        return p.encode(p.Close())

    def next_event(self) -> p.Message | None:
        """opened, then one output per step in order; an error is raised as PeerError (with
        .code) and breaks the session."""
        try:
            message = self.decoder.next()
        except MemnetError as exc:
            raise self._break(f"span server {self.peer} sent a malformed frame: {exc}") from None
        if message is None:
            return None
        if type(message) is p.Error:
            error = self._break(f"span server {self.peer}: {message.code}: {message.message}")
            error.code = message.code
            raise error
        if message.t not in p.SERVER_MESSAGES:
            raise self._break(f"span server {self.peer} sent {message.t}")
        if self.opened is None:
            if type(message) is not p.Opened:
                raise self._break(f"span server {self.peer} sent {message.t} before opened")
            self.opened = message
            return message
        if type(message) is p.Opened:
            raise self._break(f"span server {self.peer} sent opened twice")
        if not self._due or message.step != self._due[0]:
            raise self._break(f"span server {self.peer} answered step {message.step}, expected "
                              f"{self._due[0] if self._due else 'none'}")
        self._due.pop(0)
        return message

    def _break(self, why: str) -> PeerError:
        self.broken = why
        error = PeerError(why)
        error.code = "bad_request"
        return error
