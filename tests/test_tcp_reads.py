"""Buffered reads on py-libp2p's TCP stream (memnet/net/tcp_reads.py), over a real socket pair:
bytes come out in order, never more than asked for, and b"" only at the end."""

from __future__ import annotations

import os

import trio
from libp2p.io.trio import TrioTCPStream

from memnet.net.tcp_reads import READ_SIZE, buffer_tcp_reads


async def pair() -> tuple[TrioTCPStream, trio.SocketStream]:
    left, right = trio.socket.socketpair()
    return TrioTCPStream(trio.SocketStream(left)), trio.SocketStream(right)


def test_small_reads_come_from_one_receive_in_order():
    buffer_tcp_reads()
    payload = os.urandom(3 * READ_SIZE + 123)

    async def main():
        reader, writer = await pair()
        async with trio.open_nursery() as nursery:
            async def send():
                await writer.send_all(payload)
                await writer.aclose()
            nursery.start_soon(send)
            got = bytearray()
            sizes = [2, 65535, 1, 0, 7, None, 2, READ_SIZE * 2]
            while True:
                n = sizes[len(got) % len(sizes)]
                data = await reader.read(n)
                if n == 0:
                    assert data == b""
                    n = 1
                    data = await reader.read(n)
                assert n is None or len(data) <= n
                if not data:
                    break
                got += data
            assert bytes(got) == payload
            assert await reader.read(10) == b""  # stays at the end

    trio.run(main)


def test_installing_twice_keeps_one_buffer():
    buffer_tcp_reads()
    buffer_tcp_reads()

    async def main():
        reader, writer = await pair()
        await writer.send_all(b"abcdef")
        assert await reader.read(2) == b"ab"
        await writer.send_all(b"gh")
        assert await reader.read(None) == b"cdef"  # what was buffered first
        assert await reader.read(10) == b"gh"

    trio.run(main)
