"""MIP frames over a libp2p stream: the only place that turns stream bytes into messages."""

from __future__ import annotations

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

from memnet.errors import PeerError
from memnet.net import wire

READ_SIZE = 1 << 20


class FramedStream:
    def __init__(self, stream: INetStream, max_frame: int = wire.MAX_FRAME):
        self.stream = stream
        self._decoder = wire.FrameDecoder(max_frame)

    @property
    def peer(self) -> str:
        return str(self.stream.muxed_conn.peer_id)

    async def send(self, *messages: dict) -> None:
        await self.stream.write(b"".join(wire.encode_frame(m) for m in messages))

    async def receive(self, idle_timeout: float, frame_timeout: float) -> dict | None:
        """The next message, or None when the peer closed its side at a frame boundary.

        idle_timeout bounds the wait for a frame to start; frame_timeout bounds how long one
        frame may take once started, so a peer trickling bytes (slowloris) cannot hold a slot.
        """
        deadline = trio.current_time() + idle_timeout
        started = False
        while True:
            message = self._decoder.next()
            if message is not None:
                return message
            if self._decoder.pending and not started:
                started = True
                deadline = trio.current_time() + frame_timeout
            with trio.move_on_at(deadline) as scope:
                try:
                    data = await self.stream.read(READ_SIZE)
                except StreamEOF:
                    data = b""
            if scope.cancelled_caught:
                raise PeerError(f"peer {self.peer} timed out {'mid-frame' if started else 'idle'}")
            if not data:
                self._decoder.eof()  # raises if the peer stopped inside a frame
                return None
            self._decoder.feed(data)

    async def close(self) -> None:
        try:
            await self.stream.close()
        except Exception:  # closing a stream the peer already reset is not our error
            pass

    async def reset(self) -> None:
        try:
            await self.stream.reset()
        except Exception:
            pass
