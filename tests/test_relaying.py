"""Circuit relay v2 as memnet uses it (memnet/net/relaying.py, addresses.py), on real libp2p hosts
on loopback: a reservation, a circuit that carries bytes end to end encrypted, two circuits to one
node that end independently, the relay's byte limit, and the advertised addresses."""

from __future__ import annotations

import hashlib
import os

import multiaddr
import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service.context import background_trio_service

from memnet.config.sections import RelayLimits
from memnet.net import relaying
from memnet.net.addresses import Addresses, is_circuit
from memnet.net.host import build_host
from tests import factories

BLOB = TProtocol("/memnet-test/blob/1.0.0")
LOOP = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
MARKER = b"MEMNET-PLAINTEXT-MARKER-2f1c"


async def _read_all(stream) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = await stream.read(1 << 16)
        except StreamEOF:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def _digest_handler(stream) -> None:
    data = await _read_all(stream)
    await stream.write(f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())
    await stream.close()


class _Spy(relaying.Relay):
    """The relay, keeping what it forwards (to look for plaintext)."""

    seen = bytearray()

    async def _relay_data(self, src, dst, peer_id, deadline=None, circuit_data_limit=None):
        write = dst.write

        async def keep(data):
            if len(self.seen) < 16 << 20:
                self.seen.extend(data)
            await write(data)

        dst.write = keep
        await super()._relay_data(src, dst, peer_id, deadline, circuit_data_limit)


async def _world(nursery, limits: RelayLimits = RelayLimits(), sources: int = 1):
    """A relay R serving HOP, a node D holding a slot on it, and sources with a Dialer each."""
    relay_host = build_host(factories.key("relay"))
    hosts = [relay_host, build_host(factories.key("destination"))] + \
        [build_host(factories.key(f"source-{i}")) for i in range(sources)]
    for host in hosts:
        await nursery.start(_run_host, host)
    relay = _Spy(relay_host, limits)
    relay.seen = bytearray()
    await nursery.start(_run_service, relay)
    relay.hop(True)
    dest = hosts[1]
    dest.set_stream_handler(BLOB, _digest_handler)
    dest_relay = relaying.Relay(dest, limits)
    await nursery.start(_run_service, dest_relay)
    dest_dialer = relaying.Dialer(dest, dest_relay, hole_punch=False)
    dest_dialer.install(nursery)
    await dest.connect(PeerInfo(relay_host.get_id(), relay_host.get_addrs()))
    addresses = Addresses(dest)
    addresses.install()
    reserver = relaying.Reserver(dest, dest_dialer, addresses, lambda: None)
    reserver.want = 1
    with trio.fail_after(10):
        while not reserver.slots:
            await reserver.pass_once()
            await trio.sleep(0.1)
    circuit = next(iter(reserver.slots.values())).addr.encapsulate(multiaddr.Multiaddr(f"/p2p/{dest.get_id()}"))
    dialers = []
    for source in hosts[2:]:
        source_relay = relaying.Relay(source, limits)
        await nursery.start(_run_service, source_relay)
        dialer = relaying.Dialer(source, source_relay, hole_punch=False)
        dialer.install(nursery)
        dialers.append(dialer)
    return relay, dest, circuit, addresses, dialers


async def _run_host(host, task_status=trio.TASK_STATUS_IGNORED):
    async with host.run([LOOP]):
        task_status.started()
        await trio.sleep_forever()


async def _run_service(service, task_status=trio.TASK_STATUS_IGNORED):
    async with background_trio_service(service):
        task_status.started()
        await trio.sleep_forever()


async def _send(host, peer, data: bytes) -> str:
    stream = await host.new_stream(peer, [BLOB])
    await stream.write(data)
    await stream.close()
    return (await _read_all(stream)).decode()


@pytest.mark.slow
def test_a_circuit_carries_a_stream_end_to_end_and_the_relay_sees_only_ciphertext():
    async def main():
        async with trio.open_nursery() as nursery:
            relay, dest, circuit, addresses, (dialer,) = await _world(nursery)
            source = dialer.host
            assert is_circuit(circuit) and str(circuit).count("/p2p/") == 2
            await source.connect(PeerInfo(dest.get_id(), [circuit]))  # only the circuit: no way around it
            assert relaying.path_to(source, dest.get_id()) == relaying.RELAYED
            payload = MARKER + os.urandom(2 << 20)
            answer = await _send(source, dest.get_id(), payload)
            assert answer == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
            assert len(relay.seen) > len(payload) and MARKER not in relay.seen and payload[4096:4128] not in relay.seen
            assert relay.stats.circuits == 1 and relay.stats.bytes >= len(payload)
            assert dialer.counts[relaying.RELAYED] == 1
            # the node advertises the circuit with its own id once, beside its direct addresses
            advertised = [str(a) for a in dest.get_addrs()]
            assert str(circuit) in advertised and not any("/0.0.0.0/" in a for a in advertised)
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.slow
def test_two_circuits_to_one_node_end_independently():
    # py-libp2p's relay keyed circuits by destination: closing the first circuit cut the second
    async def main():
        async with trio.open_nursery() as nursery:
            relay, dest, circuit, _, dialers = await _world(nursery, sources=2)
            first, second = (d.host for d in dialers)
            for source in (first, second):
                await source.connect(PeerInfo(dest.get_id(), [circuit]))
            assert (await _send(first, dest.get_id(), b"one")).startswith("3 ")
            await first.disconnect(dest.get_id())
            await trio.sleep(0.5)
            payload = os.urandom(1 << 20)
            assert await _send(second, dest.get_id(), payload) == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.slow
def test_a_circuit_past_its_byte_limit_is_cut():
    async def main():
        async with trio.open_nursery() as nursery:
            _, dest, circuit, _, (dialer,) = await _world(nursery, RelayLimits(circuit_bytes=256 << 10))
            await dialer.host.connect(PeerInfo(dest.get_id(), [circuit]))
            with pytest.raises(Exception):
                with trio.fail_after(20):
                    answer = await _send(dialer.host, dest.get_id(), os.urandom(2 << 20))
                    assert answer.startswith(str(2 << 20))  # not reached: the relay cut it
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_addresses_rank_public_first_and_name_circuits_by_their_relay():
    ranked = sorted([multiaddr.Multiaddr(a) for a in ("/ip4/127.0.0.1/tcp/1", "/ip4/10.1.0.2/tcp/1",
                                                       "/ip4/172.32.0.1/tcp/1")], key=relaying.address_rank)
    assert [str(a).split("/")[2] for a in ranked] == ["172.32.0.1", "10.1.0.2", "127.0.0.1"]
    relay_id = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
    peer, addr = relaying.circuit_parts(multiaddr.Multiaddr(
        f"/ip4/172.32.0.10/tcp/4737/p2p/{relay_id}/p2p-circuit/p2p/12D3KooWFFVXrstt22rUNUxKpowBhcfKwVwskEWepi37MbgNGEY4"))
    assert str(peer) == relay_id and str(addr) == "/ip4/172.32.0.10/tcp/4737"
