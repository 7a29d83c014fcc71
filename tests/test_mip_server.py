"""MIP over real libp2p hosts on 127.0.0.1: MipServer (memnet/net/server.py) serving a real LMDB
store, MipSession (memnet/net/client.py) asking, raw streams misbehaving; and build_host's
security options (Noise only)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.exceptions import SwarmException
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from memnet.cube import cid
from memnet.errors import FetchError, PeerError
from memnet.net import wire
from memnet.net.client import MipSession
from memnet.net.host import build_host
from memnet.config import ServeLimits
from memnet.net.server import MipServer
from memnet.net.streams import FramedStream
from memnet.store import Store
from tests import factories

LOCAL = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
MIP = TProtocol(wire.PROTOCOL_ID)
TIMEOUT = 15


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    yield s
    s.close()


@pytest.fixture
def cube(store):
    texts = [f"item {i}: " + "memory " * 300 for i in range(4)]  # ~8.5 KB in 1 KiB chunks
    c = factories.plaintext_cube(texts=texts, chunk_size=1024)
    assert len(c.manifest.chunks) > 4
    store.put(c)
    return c


@asynccontextmanager
async def pair(store: Store, limits: ServeLimits = ServeLimits()):
    """Host A serves store over MIP; host B is connected to it. Yields (a, b, server)."""
    a, b = build_host(factories.key("server-a")), build_host(factories.key("client-b"))
    server = MipServer(store, limits)
    async with a.run(LOCAL), b.run(LOCAL):
        a.set_stream_handler(MIP, server.handle)
        await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
        yield a, b, server


def run(fn, *args):
    async def main():
        with trio.fail_after(TIMEOUT):
            await fn(*args)
    trio.run(main)


async def read_all(framed: FramedStream) -> list[dict]:
    """Frames until the server closes its side."""
    out = []
    while (message := await framed.receive(5, 5)) is not None:
        out.append(message)
    return out


# -- the happy path -------------------------------------------------------------------------------

def test_session_gets_manifest_have_and_chunks(store, cube):
    async def scenario():
        async with pair(store) as (a, b, server):
            session = await MipSession.open(b, a.get_id())
            assert session.peer == str(a.get_id())
            assert await session.manifest(cube.cube_id) == store.manifest_bytes(cube.cube_id)
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes
            ids = list(cube.manifest.chunks)
            assert await session.have(cube.cube_id, len(ids)) == [True] * len(ids)
            got = [(c, d) async for c, d in session.chunks(cube.cube_id, ids)]
            assert [c for c, _ in got] == ids
            assert all(d == bytes(cube.chunks[c]) for c, d in got)
            assert b"".join(d for _, d in got) == cube.payload()
            assert server.served_bytes == sum(len(d) for _, d in got)
            await session.close()
    run(scenario)


def test_chunk_not_held_is_missing_in_place(store, cube):
    async def scenario():
        async with pair(store) as (a, b, _):
            session = await MipSession.open(b, a.get_id())
            ids = list(cube.manifest.chunks)
            stranger = cid.cid_of(b"a chunk nobody stored")
            got = [(c, d) async for c, d in session.chunks(cube.cube_id, [ids[0], stranger, ids[1]])]
            assert got == [(ids[0], bytes(cube.chunks[ids[0]])), (stranger, None),
                           (ids[1], bytes(cube.chunks[ids[1]]))]
            # the stream is still good for the next request
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes
    run(scenario)


def test_have_follows_the_store(store):
    """have() answers from the live store: not_found before the cube is stored, all true after."""
    async def scenario():
        other = factories.plaintext_cube(k=factories.key("bob"),
                                         texts=["x " * 1500, "y " * 1500], chunk_size=1024)
        async with pair(store) as (a, b, _):
            session = await MipSession.open(b, a.get_id())
            with pytest.raises(PeerError, match="not_found"):
                await session.have(other.cube_id, len(other.manifest.chunks))
            store.put(other)
            flags = await session.have(other.cube_id, len(other.manifest.chunks))
            assert flags == [True] * len(other.manifest.chunks)
    run(scenario)


def test_cube_not_held_is_not_found(store, cube):
    async def scenario():
        async with pair(store) as (a, b, _):
            session = await MipSession.open(b, a.get_id())
            stranger = cid.cid_of(b"no such manifest")
            with pytest.raises(PeerError, match="not_found"):
                await session.manifest(stranger)
            with pytest.raises(PeerError, match="not_found"):
                await session.have(stranger, 3)
            # not_found is an answer, not a protocol violation: the stream stays usable
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes
    run(scenario)


# -- misbehaving requesters -----------------------------------------------------------------------

GARBAGE = [
    b"\xff\xff\xff\xff\xff",                                     # varint longer than 4 bytes
    b"\x05\xc1\xc1\xc1\xc1\xc1",                                 # not msgpack
    b"\x80\x00",                                                 # non-minimal varint
    b"\x00",                                                     # empty frame
    b"\xff\xff\xff\x7f",                                         # announces a 256 MiB frame
    wire._varint(3) + b"\x93\x01\x02\x03",                       # msgpack, not a map
]
NOT_REQUESTS = [
    wire.manifest(1, b"\x85manifest"),
    wire.have(2, b""),
    wire.error(3, "busy", "a requester does not send errors"),
    wire.chunk(4, cid.cid_of(b"x"), b"x"),
]


def test_garbage_gets_an_error_frame_and_the_stream_closes(store, cube):
    payloads = GARBAGE + [wire.encode_frame(m) for m in NOT_REQUESTS]

    async def scenario():
        async with pair(store) as (a, b, server):
            for payload in payloads:
                stream = await b.new_stream(a.get_id(), [MIP])
                await stream.write(payload)
                replies = await read_all(FramedStream(stream))  # ends: the server closed its side
                assert len(replies) == 1, payload
                assert type(replies[0]) is wire.Error and replies[0].code == "bad_request", payload
                assert replies[0].id == 0 and replies[0].message
            # the server is fine, and the refused streams gave their slots back
            session = await MipSession.open(b, a.get_id())
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes
            await session.close()
            with trio.fail_after(5):
                while server._streams:
                    await trio.sleep(0.01)
    run(scenario)


def test_good_request_after_garbage_on_same_stream_is_not_answered(store, cube):
    async def scenario():
        async with pair(store) as (a, b, _):
            stream = await b.new_stream(a.get_id(), [MIP])
            await stream.write(wire.encode_frame(wire.manifest(1, b"x")) +
                               wire.encode_frame(wire.get_manifest(2, cube.cube_id)))
            replies = await read_all(FramedStream(stream))
            assert [(r.t, r.id) for r in replies] == [("error", 0)]
    run(scenario)


def test_truncated_frame_at_close_gets_an_error(store, cube):
    async def scenario():
        async with pair(store) as (a, b, _):
            stream = await b.new_stream(a.get_id(), [MIP])
            frame = wire.encode_frame(wire.get_manifest(1, cube.cube_id))
            await stream.write(frame[:-3])
            await stream.close()  # half-close mid-frame
            replies = await read_all(FramedStream(stream))
            assert [(r.t, r.code) for r in replies] == [("error", "bad_request")]
            assert "truncated" in replies[0].message
    run(scenario)


def test_rate_limited_beyond_burst(store, cube):
    async def scenario():
        async with pair(store, ServeLimits(requests_per_s=1, request_burst=2)) as (a, b, _):
            session = await MipSession.open(b, a.get_id())
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes
            with pytest.raises(PeerError, match="rate_limited"):
                await session.manifest(cube.cube_id)
            # the limit is per peer, not per stream
            second = await MipSession.open(b, a.get_id())
            with pytest.raises(PeerError, match="rate_limited"):
                await second.have(cube.cube_id, len(cube.manifest.chunks))
            # a refused request is not a violation: after a second the same stream is served again
            await trio.sleep(1.05)
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes
            with pytest.raises(PeerError, match="rate_limited"):
                await session.manifest(cube.cube_id)
    run(scenario)


def test_a_batch_of_chunks_is_one_request(store, cube):
    async def scenario():
        async with pair(store, ServeLimits(requests_per_s=1, request_burst=1)) as (a, b, _):
            session = await MipSession.open(b, a.get_id())
            ids = list(cube.manifest.chunks)
            got = [d async for _, d in session.chunks(cube.cube_id, ids)]
            assert len(got) == len(ids) and None not in got
            with pytest.raises(PeerError, match="rate_limited"):
                await session.manifest(cube.cube_id)
    run(scenario)


def test_more_streams_than_allowed_are_busy(store, cube):
    async def scenario():
        async with pair(store, ServeLimits(streams_per_peer=2)) as (a, b, server):
            first = await MipSession.open(b, a.get_id())
            second = await MipSession.open(b, a.get_id())
            for s in (first, second):  # a round trip each: both handlers are running now
                assert await s.manifest(cube.cube_id) == cube.manifest_bytes
            third = await MipSession.open(b, a.get_id())
            with pytest.raises(PeerError, match="busy"):
                await third.manifest(cube.cube_id)
            assert await first.manifest(cube.cube_id) == cube.manifest_bytes  # the others go on
            # closing one frees its slot (once the server has seen the close)
            await first.close()
            while True:
                fourth = await MipSession.open(b, a.get_id())
                try:
                    assert await fourth.manifest(cube.cube_id) == cube.manifest_bytes
                    break
                except PeerError as exc:
                    assert "busy" in str(exc)
                    await trio.sleep(0.02)
            assert await second.manifest(cube.cube_id) == cube.manifest_bytes
    run(scenario)


# -- security -------------------------------------------------------------------------------------

def plaintext_host():
    pair_ = create_new_key_pair()
    return new_host(key_pair=pair_, sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(pair_)},
                    muxer_opt={TProtocol(YAMUX_ID): Yamux})


def test_build_host_offers_noise_only():
    host = build_host(factories.key("noise"))
    upgrader = host.get_network().upgrader
    assert list(upgrader.security_multistream.transports) == ["/noise"]
    assert list(upgrader.muxer_multistream.transports) == [YAMUX_ID]
    # a host built by new_host's defaults would offer plaintext next to noise: the reason for build_host
    default = new_host(key_pair=create_new_key_pair())
    assert PLAINTEXT_PROTOCOL_ID in default.get_network().upgrader.security_multistream.transports


def test_plaintext_host_cannot_connect_to_a_memnet_host():
    async def scenario():
        memnet_host, plain, plain2 = build_host(factories.key("noise")), plaintext_host(), plaintext_host()
        async with memnet_host.run(LOCAL), plain.run(LOCAL), plain2.run(LOCAL):
            # control: two plaintext hosts do connect, so the failure below is the security protocol
            await plain2.connect(PeerInfo(plain.get_id(), plain.get_addrs()))
            assert plain.get_id() in plain2.get_connected_peers()
            # both directions refused promptly (a timeout would be TooSlowError, not SwarmException);
            # dialled concurrently because libp2p retries a failed dial for ~0.7 s
            async def refused(dialer, target):
                with trio.fail_after(5), pytest.raises(SwarmException):
                    await dialer.connect(PeerInfo(target.get_id(), target.get_addrs()))
                outcomes.append(str(dialer.get_id()))
            outcomes: list[str] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(refused, plain, memnet_host)
                nursery.start_soon(refused, memnet_host, plain)
            assert sorted(outcomes) == sorted([str(plain.get_id()), str(memnet_host.get_id())])
            assert memnet_host.get_id() not in plain.get_connected_peers()
            assert plain.get_id() not in memnet_host.get_connected_peers()
    run(scenario)


def test_version_is_negotiated_by_multistream_select(store, cube):
    """A client offering only a version this node does not speak is refused; one offering a
    newer version first and v1 after it gets v1."""
    async def scenario():
        async with pair(store) as (a, b, _):
            with pytest.raises(Exception):
                await b.new_stream(a.get_id(), [TProtocol("/memnet/mip/2.0.0")])
            stream = await b.new_stream(a.get_id(), [TProtocol("/memnet/mip/2.0.0"), MIP])
            assert stream.get_protocol() == MIP
            session = MipSession(stream)
            assert await session.manifest(cube.cube_id) == cube.manifest_bytes
            await session.close()
    run(scenario)


def test_pipelined_requests_are_answered_in_order(store, cube):
    async def scenario():
        async with pair(store) as (a, b, _):
            session = await MipSession.open(b, a.get_id())
            ids = list(cube.manifest.chunks)
            first, second = ids[:2], ids[2:4]
            rid1 = await session.request_chunks(cube.cube_id, first)
            rid2 = await session.request_chunks(cube.cube_id, second)  # sent before any answer
            assert rid1 != rid2
            got1 = [c async for c, _ in session.receive_chunks(rid1, first)]
            got2 = [(c, d) async for c, d in session.receive_chunks(rid2, second)]
            assert got1 == first
            assert got2 == [(c, bytes(cube.chunks[c])) for c in second]
            await session.close()
    run(scenario)


# -- fetch_cube over two providers ----------------------------------------------------------------

@asynccontextmanager
async def providers(fast_store: Store, slow_store: Store, slow_limits: ServeLimits):
    """Hosts A (fast_store) and B (slow_store, slow_limits) serve MIP; host C is connected to both.
    Yields (c, [A's info, B's info], [A's server, B's server])."""
    hosts = [build_host(factories.key(f"provider-{i}")) for i in range(2)] + [build_host(factories.key("fetcher"))]
    servers = [MipServer(fast_store), MipServer(slow_store, slow_limits)]
    async with hosts[0].run(LOCAL), hosts[1].run(LOCAL), hosts[2].run(LOCAL):
        infos = []
        for host, server in zip(hosts, servers):
            host.set_stream_handler(MIP, server.handle)
            infos.append(PeerInfo(host.get_id(), host.get_addrs()))
            await hosts[2].connect(infos[-1])
        yield hosts[2], infos, servers


def test_fetch_stops_waiting_for_end_game_duplicates(store, cube, tmp_path):
    """Once every chunk is in, answers still due from a slow provider (end-game duplicates) are
    abandoned: its stream is reset rather than drained."""
    from memnet.net.fetch import fetch_cube
    from memnet.net.peer_scores import PeerScores

    slow, mine = Store(str(tmp_path / "slow")), Store(str(tmp_path / "mine"))
    slow.put(cube)

    async def scenario():
        async with providers(store, slow, ServeLimits(upload_bytes_per_s=1024)) as (c, infos, servers):
            async def find():
                return infos
            started = trio.current_time()
            report = await fetch_cube(c, mine, cube.cube_id, find, scores=PeerScores())
            # the slow provider's first chunk alone takes ~1 s at 1 KiB/s, its batch ~4 s
            assert trio.current_time() - started < 2.5
            assert report.cube.cube_id == cube.cube_id and mine.has(cube.cube_id)
            assert sum(report.bytes_from.values()) == cube.manifest.size
            assert servers[1].served_bytes < 4 * 1024
    try:
        run(scenario)
    finally:
        slow.close()
        mine.close()


def test_fetch_drops_and_bans_a_provider_of_a_bad_chunk(store, cube, tmp_path):
    from memnet.net.fetch import fetch_cube
    from memnet.net.peer_scores import PeerScores

    liar, mine = Store(str(tmp_path / "liar")), Store(str(tmp_path / "mine"))
    liar.put(cube)
    forged = list(cube.manifest.chunks)[:4]  # every chunk of the liar's first batches is wrong
    with liar.env.begin(write=True) as txn:
        for chunk_id in forged:
            txn.put(chunk_id, b"x" * len(cube.chunks[chunk_id]), db=liar._db["chunks"])
    scores = PeerScores()

    async def scenario():
        async with providers(store, liar, ServeLimits()) as (c, infos, _):
            async def only_liar():
                return infos[1:]
            with pytest.raises(FetchError, match="does not match its CID"):
                await fetch_cube(c, mine, cube.cube_id, only_liar, scores=scores, rounds=1)
            assert scores.banned(str(infos[1].peer_id))
            assert not mine.has(cube.cube_id) and not any(mine.has_chunks(forged))

            async def both():
                return infos
            report = await fetch_cube(c, mine, cube.cube_id, both, scores=scores)
            assert str(infos[1].peer_id) not in report.bytes_from  # banned: not asked again
            assert mine.read_payload(cube.cube_id) == cube.payload()
    try:
        run(scenario)
    finally:
        liar.close()
        mine.close()


def test_a_peer_that_refuses_mip_is_not_asked_twice_but_a_failed_handshake_is():
    """MipSession.open tries again only when the peer did not refuse: py-libp2p's real refusal
    ("protocols not supported") is recognised through its StreamFailure wrapper; a handshake
    that timed out or broke is not a refusal."""
    from libp2p.host.exceptions import StreamFailure
    from libp2p.protocol_muxer.exceptions import MultiselectClientError

    from memnet.net.client import refused

    async def scenario():
        a, b = build_host(factories.key("a")), build_host(factories.key("b"))   # neither serves MIP
        async with a.run(LOCAL), b.run(LOCAL):
            await b.connect(PeerInfo(a.get_id(), a.get_addrs()))
            with trio.fail_after(5), pytest.raises(Exception) as real:
                await b.new_stream(a.get_id(), [MIP])
            assert refused(real.value)
            with trio.fail_after(5), pytest.raises(PeerError, match="does not speak"):
                await MipSession.open(b, a.get_id())
    run(scenario)

    def wrapped(message: str) -> StreamFailure:
        try:
            try:
                raise MultiselectClientError(message)
            except MultiselectClientError as inner:
                raise StreamFailure("failed to open a stream to peer x") from inner
        except StreamFailure as outer:
            return outer
    assert not refused(wrapped("response timed out after 5s, protocols=['/memnet/mip/1.0.0']"))
    assert not refused(wrapped("handshake read failed: stream reset"))
    assert refused(wrapped("protocols not supported: tried ['/memnet/mip/1.0.0'], timeout=5s"))
    assert not refused(None)
