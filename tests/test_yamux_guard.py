"""memnet/net/yamux_guard.py on real libp2p hosts (loopback, one process): a peer that writes past
the window it was given, or keeps writing on a stream the other side no longer reads, leaves
nothing buffered (reliability finding 1: a half-closed MIP stream grew a daemon to 2 GB)."""

from __future__ import annotations

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo

from memnet.net import wire, yamux_guard
from memnet.net.host import build_host
from memnet.net.server import MipServer
from memnet.net.streams import FramedStream
from memnet.store import Store
from tests import factories

LOCAL = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
SINK = TProtocol("/memnet-test/sink/1.0.0")
TIMEOUT = 20


def buffered(host, peer_id) -> int:
    """Bytes the host's yamux holds for streams of peer_id, unread."""
    total = 0
    for conn in host.get_network().get_connections(peer_id):
        total += sum(len(b) for b in conn.muxed_conn.stream_buffers.values())
    return total


def muxers(host, peer_id) -> list:
    return [conn.muxed_conn for conn in host.get_network().get_connections(peer_id)]


async def flood(stream, total: int, ignore_window: bool) -> int:
    """Write up to total bytes in 64 KiB pieces (optionally past the window the reader gave);
    returns how many were written before the stream failed or total was reached."""
    piece, sent = b"x" * 65536, 0
    try:
        while sent < total:
            if ignore_window:
                stream.muxed_stream.send_window = 2**40
            with trio.move_on_after(2) as scope:
                await stream.write(piece)
            if scope.cancelled_caught:  # a compliant writer blocks on a full window
                break
            sent += len(piece)
    except Exception:  # the reader reset the stream
        pass
    return sent


def run(fn):
    async def main():
        with trio.fail_after(TIMEOUT):
            await fn()
    trio.run(main)


def test_writing_past_the_window_resets_the_stream_and_buffers_nothing():
    async def scenario():
        a, b = build_host(factories.key("reader")), build_host(factories.key("flooder"))

        async def never_read(stream):
            await trio.sleep_forever()
        async with a.run(LOCAL), b.run(LOCAL):
            a.set_stream_handler(SINK, never_read)
            await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
            stream = await b.new_stream(a.get_id(), [SINK])
            sent = await flood(stream, 64 * 2**20, ignore_window=True)
            await trio.sleep(0.3)
            assert buffered(a, b.get_id()) <= yamux_guard.MAX_WINDOW + 65536  # the window, and a frame header or two
            assert sum(m.window_violations for m in muxers(a, b.get_id())) >= 1
            assert sent < 64 * 2**20  # the flooder's writes failed once the reset reached it
    run(scenario)


def test_a_compliant_writer_on_an_unread_stream_stops_at_the_window_cap():
    async def scenario():
        a, b = build_host(factories.key("reader")), build_host(factories.key("writer"))

        async def close_and_never_read(stream):
            await stream.close()  # half-close: before the guard, py-libp2p buffered on for ever
            await trio.sleep_forever()
        async with a.run(LOCAL), b.run(LOCAL):
            a.set_stream_handler(SINK, close_and_never_read)
            await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
            stream = await b.new_stream(a.get_id(), [SINK])
            await flood(stream, 32 * 2**20, ignore_window=False)
            assert buffered(a, b.get_id()) <= yamux_guard.MAX_WINDOW + 65536  # the window, and a frame header or two
    run(scenario)


def test_mip_server_hangs_up_a_violating_stream_and_keeps_nothing(tmp_path):
    """Garbage, then a flood past the window on the same stream: the requester reads the error
    frame, the server resets the stream, and nothing stays buffered; the server serves on."""
    store = Store(str(tmp_path / "store"))
    cube = factories.plaintext_cube()
    store.put(cube)

    async def scenario():
        a, b = build_host(factories.key("server")), build_host(factories.key("attacker"))
        async with a.run(LOCAL), b.run(LOCAL):
            a.set_stream_handler(TProtocol(wire.PROTOCOL_ID), MipServer(store).handle)
            await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
            stream = await b.new_stream(a.get_id(), [TProtocol(wire.PROTOCOL_ID)])
            await stream.write(b"\x05\xc1\xc1\xc1\xc1\xc1")  # not msgpack: a violation
            reply = await FramedStream(stream).receive(5, 5)
            assert type(reply) is wire.Error and reply.id == 0 and reply.code == "bad_request"
            await flood(stream, 64 * 2**20, ignore_window=True)
            await trio.sleep(0.5)
            assert buffered(a, b.get_id()) == 0
            from memnet.net.client import MipSession
            session = await MipSession.open(b, a.get_id())
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes
            await session.close()
    try:
        run(scenario)
    finally:
        store.close()


def test_hard_reset_frees_what_a_stream_buffered():
    async def scenario():
        a, b = build_host(factories.key("reader")), build_host(factories.key("writer"))
        got = []

        async def hold(stream):
            got.append(stream)
            await trio.sleep_forever()
        async with a.run(LOCAL), b.run(LOCAL):
            a.set_stream_handler(SINK, hold)
            await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
            stream = await b.new_stream(a.get_id(), [SINK])
            await stream.write(b"y" * 200_000)
            await trio.sleep(0.3)
            assert buffered(a, b.get_id()) == 200_000
            await yamux_guard.hard_reset(got[0])
            assert buffered(a, b.get_id()) == 0
            assert not any(s == got[0].muxed_stream.stream_id for m in muxers(a, b.get_id()) for s in m.streams)
    run(scenario)
