"""Buffered reads on py-libp2p's TCP streams.

py-libp2p 0.8.1 reads its TCP connection with one recv per request: Noise reads a 2-byte length,
then the message body, so every 64 KiB Noise message costs at least two system calls and two trio
checkpoints. Profiled on a loopback fetch of a 24 MiB KV cube, that read path was ~40 % of the
fetching daemon's CPU. Here each TCP stream reads up to READ_SIZE bytes at once and serves the
small reads from what it already has; read(n) still returns at most n bytes, in order, and b""
only at end of stream. The original read (with its error mapping) does every receive.
"""

from __future__ import annotations

import trio
from libp2p.io.trio import TrioTCPStream

READ_SIZE = 256 * 1024
_ORIGINAL_READ = TrioTCPStream.read


async def _buffered_read(self: TrioTCPStream, n: int | None = None) -> bytes:
    if n == 0:
        return b""
    state = self.__dict__.get("_memnet_read")
    if state is None:
        state = self.__dict__["_memnet_read"] = (trio.Lock(), bytearray())
    lock, buffer = state
    async with lock:  # one reader at a time, so buffered bytes are handed out in order
        if not buffer:
            data = await _ORIGINAL_READ(self, max(n or 0, READ_SIZE))
            if n is None or len(data) <= n:
                return data
            buffer += memoryview(data)[n:]
            return data[:n]
        take = len(buffer) if n is None else min(n, len(buffer))
        out = bytes(buffer[:take])
        del buffer[:take]
        return out


def buffer_tcp_reads() -> None:
    """Install the buffered read on every py-libp2p TCP stream (idempotent)."""
    TrioTCPStream.read = _buffered_read
