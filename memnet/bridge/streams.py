"""Span-protocol frames over hivemind's binary streams (asyncio reader/writer pairs), with the
timeouts a stream needs: a vanished peer shows up only as EOF, or after ~40 s of yamux keepalive."""

from __future__ import annotations

import asyncio
from typing import Any

from memnet.errors import PeerTimeout

READ_SIZE = 1 << 20


async def next_event(session: Any, reader: asyncio.StreamReader, idle: float, frame: float) -> Any:
    """The session's next event (None: the other side closed at a frame boundary); PeerTimeout
    when nothing starts within idle seconds, or a started frame takes longer than frame."""
    while True:
        event = session.next_event()
        if event is not None:
            return event
        limit = frame if session.pending else idle
        try:
            data = await asyncio.wait_for(reader.read(READ_SIZE), limit)
        except asyncio.TimeoutError:
            raise PeerTimeout(f"no {'frame end' if session.pending else 'message'} within {limit:g} s") from None
        if not data:
            session.eof()  # raises if it stopped inside a frame (or, for a client, mid-session)
            return None
        session.receive_data(data)


async def drain_input(reader: asyncio.StreamReader, limit: int) -> None:
    """Read and drop up to limit bytes, until the other side ends its writing."""
    while limit > 0:
        data = await reader.read(min(limit, 1 << 16))
        if not data:
            return
        limit -= len(data)


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


def close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except Exception:  # the stream died already
        pass
