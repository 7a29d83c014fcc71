"""Provider-record hygiene (memnet/net/provider_hygiene.py) on py-libp2p's real ProviderStore:
foreign keys, oversized address lists, too many keys, and squatters (reliability findings:
records under random keys of 1-80 bytes were kept; 20 Sybils could lock a key)."""

from __future__ import annotations

import multiaddr
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p.kad_dht.provider_store import BUCKET_SIZE, ProviderStore
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from memnet.cube import cid
from memnet.net import provider_hygiene
from memnet.net.dht_keys import cube_key, prefix_key
from memnet.net.host import build_host, key_pair


def peer(addrs: int = 1, ip: str = "127.0.0.1") -> PeerInfo:
    pid = ID.from_pubkey(key_pair(Ed25519PrivateKey.generate()).public_key)
    return PeerInfo(pid, [multiaddr.Multiaddr(f"/ip4/{ip}/tcp/{4000 + i}") for i in range(addrs)])


def store() -> ProviderStore:
    s = ProviderStore(build_host(Ed25519PrivateKey.generate()))
    provider_hygiene.install(s)
    return s


def test_only_memnet_keys_are_kept():
    s = store()
    good = [cube_key(cid.cid_of(b"cube")), prefix_key(bytes(32))]
    for key in good:
        s.add_provider(key, peer())
    for key in (b"x", bytes(80), b"\x12\x20" + bytes(31), b"/memnet/prefix/" + bytes(31), b"/ipfs/" + bytes(40)):
        s.add_provider(key, peer())
    assert set(s.providers) == set(good)


def test_address_lists_are_capped():
    s = store()
    key = cube_key(cid.cid_of(b"cube"))
    s.add_provider(key, peer(addrs=1000))
    [record] = s.providers[key].values()
    assert len(record.provider_info.addrs) == provider_hygiene.MAX_ADDRS


def test_a_full_key_takes_newcomers_in_place_of_the_stalest(monkeypatch):
    s = store()
    key = cube_key(cid.cid_of(b"cube"))
    squatters = [peer(ip=f"10.0.{i}.1") for i in range(BUCKET_SIZE)]   # twenty networks
    for p in squatters:
        s.add_provider(key, p)
    stalest = str(squatters[0].peer_id)
    s.providers[key][stalest].timestamp -= 3600
    honest = peer()
    s.add_provider(key, honest)
    held = s.providers[key]
    assert str(honest.peer_id) in held and stalest not in held and len(held) == BUCKET_SIZE


def test_the_number_of_keys_is_capped(monkeypatch):
    monkeypatch.setattr(provider_hygiene, "MAX_KEYS", 3)
    s = store()
    keys = [cube_key(cid.cid_of(bytes([i]))) for i in range(5)]
    for key in keys:
        s.add_provider(key, peer())
    assert list(s.providers) == keys[:3]
    s.add_provider(keys[0], peer())  # a key already held still takes providers
    assert len(s.providers[keys[0]]) == 2


def test_identities_from_one_network_hold_four_slots_and_cannot_push_the_honest_out():
    """DHT poisoning: thirty identities re-announcing from one network (their records cached
    from a lookup: the network is the one their record claims) share that network's
    MAX_PER_GROUP slots; the honest providers of other networks keep theirs."""
    s = store()
    key = cube_key(cid.cid_of(b"cube"))
    honest = [peer(ip="127.0.0.1"), peer(ip="93.184.216.9"), peer(ip="151.101.1.7")]
    for p in honest:
        s.add_provider(key, p)
    for _ in range(3):   # rounds of re-announcing: the honest records are the stalest by far
        for p in honest:
            s.providers[key][str(p.peer_id)].timestamp -= 3600
        for _ in range(30):
            s.add_provider(key, peer(ip="127.0.0.2"))
    held = s.providers[key]
    assert all(str(p.peer_id) in held for p in honest)
    assert len(held) == len(honest) + provider_hygiene.MAX_PER_GROUP


def test_address_groups():
    group = provider_hygiene.address_group
    assert group("93.184.216.9") == group("93.184.216.200") == "93.184.216.0/24"
    assert group("93.184.217.9") != group("93.184.216.9")
    assert group("2a00:1450:4001:2::1") == group("2a00:1450:4001:ffff::9") == "2a00:1450:4001::/48"
    assert group("127.0.0.1") != group("127.0.0.2")          # a testbed: each address its own
    assert group("192.168.1.10") != group("192.168.1.11")    # a LAN: each machine its own
