"""A yamux that never buffers more than it advertised (py-libp2p 0.8.1 guards, installed once).

py-libp2p 0.8.1's yamux appends every DATA payload to the stream's buffer and only logs when a
peer exceeds the receive window; a stream it has half-closed keeps buffering until the connection
ends; reset() keeps a non-empty buffer (and keeps appending to it) for 60-90 s; and its window
auto-tune doubles a fresh stream's window on every credit during negotiation, up to 16 MiB. A peer
that writes on a stream the daemon no longer reads grew it to 2 GB in 10 s (docs/reliability.md).
Here, as go-yamux does:

- a stream whose unread data would pass twice the largest window (a sender ignoring the window:
  go-yamux's ErrRecvWindowExceeded) is reset and its buffer dropped, before anything more is
  buffered;
- data for a stream that is closed or reset locally is dropped, not buffered;
- the window auto-tune stops at MAX_WINDOW (so one stream buffers at most that much);
- at most MAX_INBOUND_STREAMS open inbound streams per connection; more are reset at once.

hard_reset(stream) resets a NetStream and frees what its yamux stream buffered, now.
The module replaces the name `Yamux` in py-libp2p's muxer_multistream (which builds the muxer by
that name, whatever muxer_opt says), as tcp_reads.py replaces TCP reads: tied to 0.8.1, and
tested (tests/test_yamux_guard.py) so that a change of py-libp2p shows.
"""

from __future__ import annotations

import logging
import struct

from libp2p.stream_muxer import muxer_multistream
from libp2p.stream_muxer.yamux import yamux as _yamux

log = logging.getLogger("memnet.yamux")

MAX_WINDOW = 1024 * 1024      # bytes one stream may have in flight to us (auto-tune's ceiling)
# What a stream may hold unread before its sender counts as ignoring the window. Not the window
# itself: py-libp2p books the credit it grants only after the WINDOW_UPDATE frame is written, so
# data the update released can arrive before the credit is booked (an honest sender would then
# look like a violator); twice the largest window leaves room for that and bounds memory all the
# same.
OVERRUN_LIMIT = 2 * MAX_WINDOW
MAX_INBOUND_STREAMS = 64      # open inbound streams per connection (MIP allows 16 per peer, the DHT a few)


class _GuardedBuffer(bytearray):
    """A stream's receive buffer; yamux adds peer data only through extend()."""

    def __init__(self, conn: GuardedYamux, stream_id: int, initial: bytes = b""):
        super().__init__(initial)
        self._conn, self._stream_id = conn, stream_id

    def extend(self, data) -> None:
        stream = self._conn.streams.get(self._stream_id)
        if stream is None or stream.closed or stream.reset_received:
            return  # nobody will read it: never buffer
        if len(self) + len(data) > OVERRUN_LIMIT:
            self._conn.window_violation(stream, len(data))
            return
        super().extend(data)


class _Buffers(dict):
    def __init__(self, conn: GuardedYamux):
        super().__init__()
        self._conn = conn

    def __setitem__(self, stream_id: int, value) -> None:
        if type(value) is bytearray:
            value = _GuardedBuffer(self._conn, stream_id, value)
        super().__setitem__(stream_id, value)


class GuardedYamux(_yamux.Yamux):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream_buffers = _Buffers(self)
        self.window_violations = 0

    def window_violation(self, stream, size: int) -> None:
        """Called from the frame loop with streams_lock held: end the stream now (later frames
        are dropped) and send the RST from a task."""
        self.window_violations += 1
        log.warning("peer %s sent %d more bytes on stream %d, past its window, with %d unread: stream reset",
                    self.peer_id, size, stream.stream_id, len(self.stream_buffers.get(stream.stream_id, b"")))
        stream.closed = stream.send_closed = stream.recv_closed = stream.reset_received = True
        buffer = self.stream_buffers.get(stream.stream_id)
        if buffer is not None:
            bytearray.clear(buffer)
        event = self.stream_events.get(stream.stream_id)
        if event is not None:
            event.set()  # a reader waiting on the stream sees the reset
        if self._nursery is not None:
            self._nursery.start_soon(self._send_rst, stream.stream_id)

    async def _send_rst(self, stream_id: int) -> None:
        try:
            await self._write_frame(struct.pack(_yamux.YAMUX_HEADER_FORMAT, 0, _yamux.TYPE_WINDOW_UPDATE,
                                                _yamux.FLAG_RST, stream_id, 0))
        except Exception:  # the connection is going away anyway
            pass

    async def accept_stream(self):
        while True:
            stream = await super().accept_stream()
            inbound = sum(1 for s in self.streams.values() if not s.is_initiator and not s.closed)
            if inbound <= MAX_INBOUND_STREAMS:
                return stream
            log.warning("peer %s: more than %d open inbound streams: resetting the new one",
                        self.peer_id, MAX_INBOUND_STREAMS)
            await _free(stream)


async def _free(muxed) -> None:
    """RST a yamux stream and drop its buffer and bookkeeping at once."""
    try:
        await muxed.reset()  # nothing on the wire if it is already fully closed
    except Exception:
        pass
    conn = muxed.conn
    async with conn.streams_lock:
        buffer = conn.stream_buffers.get(muxed.stream_id)
        if buffer:
            bytearray.clear(buffer)
        muxed.closed = muxed.recv_closed = muxed.send_closed = True
        conn._finalize_stream_locked(muxed, fully_closed=True)  # empty buffer: the entry goes


async def hard_reset(net_stream) -> None:
    """Reset a libp2p stream and free what it buffered (reset() alone keeps a non-empty buffer
    for up to 90 s, and goes on filling it)."""
    try:
        await net_stream.reset()  # releases the swarm's stream slot too
    except Exception:
        pass
    muxed = getattr(net_stream, "muxed_stream", None)
    if isinstance(muxed, _yamux.YamuxStream):
        await _free(muxed)


def install() -> None:
    """Use GuardedYamux for every yamux connection from now on (idempotent)."""
    _yamux.MAX_WINDOW_SIZE = MAX_WINDOW  # read at call time by auto-tune and the frame-size guard
    muxer_multistream.Yamux = GuardedYamux
