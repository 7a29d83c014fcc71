"""MIP over a libp2p stream: the only place that moves stream bytes into a sans-IO receiver (a
session of memnet/net/session.py, or a bare wire.FrameDecoder) and frames out, with timeouts."""

from __future__ import annotations

from typing import Any, Protocol

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

from memnet.errors import PeerTimeout
from memnet.net import wire
from memnet.net.yamux_guard import hard_reset

READ_SIZE = 1 << 20


class Receiver(Protocol):
    pending: int

    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> Any: ...
    def eof(self) -> None: ...


class FramedStream:
    def __init__(self, stream: INetStream, receiver: Receiver | None = None):
        self.stream = stream
        self.receiver = receiver if receiver is not None else wire.FrameDecoder()

    @property
    def peer(self) -> str:
        return str(self.stream.muxed_conn.peer_id)

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.write(data)

    async def send(self, *messages: wire.Message) -> None:
        await self.stream.write(b"".join(wire.encode_frame(m) for m in messages))

    async def receive(self, idle_timeout: float, frame_timeout: float) -> Any:
        """The receiver's next event, or None when the peer closed its side at a frame boundary.

        idle_timeout bounds the wait for a frame to start; frame_timeout bounds how long one
        frame may take once started, so a peer trickling bytes (slowloris) cannot hold a slot.
        """
        deadline = trio.current_time() + idle_timeout
        started = False
        while True:
            event = self.receiver.next_event()
            if event is not None:
                return event
            if self.receiver.pending and not started:
                started = True
                deadline = trio.current_time() + frame_timeout
            with trio.move_on_at(deadline) as scope:
                try:
                    data = await self.stream.read(READ_SIZE)
                except StreamEOF:
                    data = b""
            if scope.cancelled_caught:
                raise PeerTimeout(f"peer {self.peer} timed out {'mid-frame' if started else 'idle'}")
            if not data:
                self.receiver.eof()  # raises if the peer stopped inside a frame (or mid-answer)
                return None
            self.receiver.receive_data(data)

    async def close(self) -> None:
        try:
            await self.stream.close()
        except Exception:  # closing a stream the peer already reset is not our error
            pass

    async def reset(self) -> None:
        """Reset the stream and drop whatever it buffered (memnet/net/yamux_guard.py)."""
        await hard_reset(self.stream)
