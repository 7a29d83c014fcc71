"""A misbehaving libp2p peer for the swarm tests (run as its own process):

    put KEY VALUEHEX ADDR...   push a name record to the daemons at ADDR without any validation
    get KEY ADDR...            print, per daemon, the record it holds for KEY (hex or "none")
    plaintext ADDR             try to reach a daemon offering plaintext security only
    plaintext-listen           listen with plaintext security only; print the address; wait
    prefix-liar ADDR           connect to the daemon at ADDR and answer its MIP get_prefix with a
                               made-up cube under every key (its manifest: junk); print; wait
"""

from __future__ import annotations

import sys

import multiaddr
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p import new_host
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.records.validator import NamespacedValidator, Validator
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.tools.anyio_service.context import background_trio_service

from memnet.cube import cid
from memnet.cube.name_record import NAMESPACE
from memnet.net import wire
from memnet.net.host import build_host, key_pair, peer_info, use_memnet_kad_protocol
from memnet.net.session import ServerSession
from memnet.net.streams import FramedStream

LISTEN = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]


class AcceptAnything(Validator):
    def validate(self, key: str, value: bytes) -> None:
        return None

    def select(self, key: str, values: list[bytes]) -> int:
        return len(values) - 1


async def dht_peer(mode: str, key: str, value: bytes | None, addrs: list[str]) -> None:
    use_memnet_kad_protocol()
    host = build_host(Ed25519PrivateKey.generate())
    async with host.run(LISTEN):
        dht = KadDHT(host, DHTMode.SERVER, validator=NamespacedValidator({NAMESPACE: AcceptAnything()}),
                     validator_changed=True, protocol_prefix=TProtocol("/memnet"))
        async with background_trio_service(dht):
            for addr in addrs:
                info = peer_info(addr)
                await host.connect(info)
                if mode == "put":
                    ok = await dht.value_store._store_at_peer(info.peer_id, key.encode(), value)
                    print(f"{info.peer_id} {'stored' if ok else 'refused'}", flush=True)
                else:
                    got = await dht.value_store._get_from_peer(info.peer_id, key.encode())
                    print(f"{info.peer_id} {got.hex() if isinstance(got, bytes) else 'none'}", flush=True)


async def plaintext(addr: str | None) -> None:
    pair = key_pair(Ed25519PrivateKey.generate())
    host = new_host(key_pair=pair, sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(pair)})
    async with host.run(LISTEN):
        if addr is None:
            print(str(host.get_addrs()[0]), flush=True)
            await trio.sleep_forever()
        try:
            with trio.fail_after(15):
                await host.connect(peer_info(addr))
            print("connected", flush=True)
        except Exception as exc:
            print(f"refused: {type(exc).__name__}", flush=True)


async def prefix_liar(addr: str) -> None:
    made_up = cid.cid_of(b"a cube nobody holds")

    async def answer(stream) -> None:
        framed = FramedStream(stream, ServerSession())
        while (message := await framed.receive(60, 10)) is not None:
            if type(message) is wire.GetPrefix:
                await framed.send(wire.cubes(message.id, [made_up]))
            elif type(message) is wire.GetManifest:
                await framed.send(wire.manifest(message.id, b"junk, not a manifest"))
            else:
                await framed.send(wire.error(message.id, "not_found", "no such cube here"))
        await framed.close()

    host = build_host(Ed25519PrivateKey.generate())
    host.set_stream_handler(wire.PROTOCOL_ID, answer)
    async with host.run(LISTEN):
        with trio.fail_after(15):
            await host.connect(peer_info(addr))
        print("connected", flush=True)
        await trio.sleep_forever()


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode in ("put", "get"):
        value = bytes.fromhex(argv[2]) if mode == "put" else None
        addrs = argv[3:] if mode == "put" else argv[2:]
        trio.run(dht_peer, mode, argv[1], value, addrs)
    elif mode == "plaintext":
        trio.run(plaintext, argv[1])
    elif mode == "prefix-liar":
        trio.run(prefix_liar, argv[1])
    elif mode == "plaintext-listen":
        trio.run(plaintext, None)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
