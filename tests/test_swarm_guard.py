"""memnet/net/swarm_guard.py on real libp2p hosts (loopback, one process): a node's inbound
connection slots come back when connections close, so it keeps admitting peers for its whole
life (py-libp2p 0.8.1 kept one slot per inbound connection ever made: after 250 in its life a
daemon refused everyone), while the cap on connections open at once still holds."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.peer.peerinfo import PeerInfo

from memnet.net.host import build_host

LOCAL = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
CAP = 10   # max_connections 12: 12 - 12 // 5 = 10 inbound slots


async def ping(client, server) -> bool:
    """Connect and round-trip a ping; False if the server would not have us."""
    try:
        with trio.fail_after(5):
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            stream = await client.new_stream(server.get_id(), ["/ipfs/ping/1.0.0"])
            await stream.write(b"p" * 32)
            ok = await stream.read(32) == b"p" * 32
            await stream.close()
            return ok
    except Exception:
        return False


async def hang_up(client, server) -> None:
    """Close the client's connections (py-libp2p 0.8.1's host.run() leaves them open on exit)."""
    for conn in client.get_network().get_connections(server.get_id()):
        await conn.close()


async def until_closed(server, live: int) -> None:
    with trio.fail_after(10):
        while len(server.get_network().connections) > live:
            await trio.sleep(0.05)


@pytest.mark.slow
def test_inbound_slots_come_back_when_connections_close():
    async def scenario():
        server = build_host(Ed25519PrivateKey.generate(), max_connections=12)
        async with server.run(LOCAL):
            assert server.get_network()._inbound_limiter.total_tokens == CAP
            for i in range(CAP + 3):   # one at a time, each gone before the next
                client = build_host(Ed25519PrivateKey.generate())
                async with client.run([]):
                    assert await ping(client, server), f"connection {i} refused"
                    await hang_up(client, server)
                await until_closed(server, 0)
            assert server.get_network()._inbound_limiter.borrowed_tokens == 0
    trio.run(scenario)


def test_the_cap_on_open_inbound_connections_still_holds():
    async def scenario():
        server = build_host(Ed25519PrivateKey.generate(), max_connections=12)
        async with server.run(LOCAL), trio.open_nursery() as nursery:
            done = trio.Event()
            admitted = []

            async def hold() -> None:
                client = build_host(Ed25519PrivateKey.generate())
                async with client.run([]):
                    admitted.append(await ping(client, server))
                    await done.wait()
                    await hang_up(client, server)

            for _ in range(CAP):
                nursery.start_soon(hold)
            with trio.fail_after(20):
                while len(admitted) < CAP:
                    await trio.sleep(0.05)
            assert all(admitted)
            extra = build_host(Ed25519PrivateKey.generate())
            async with extra.run([]):
                assert not await ping(extra, server)   # the eleventh waits outside
                await hang_up(extra, server)
            done.set()
            await until_closed(server, 0)
            late = build_host(Ed25519PrivateKey.generate())
            async with late.run([]):
                assert await ping(late, server)        # and is admitted once the others left
    trio.run(scenario)
