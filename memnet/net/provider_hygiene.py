"""What this node keeps of other peers' provider records (py-libp2p 0.8.1's ProviderStore takes
any key of 1-80 bytes, any number of addresses, any number of keys, and ignores new providers of
a key that already has 20: whoever announced first, Sybils included, keeps the slot).

Here, as every ADD_PROVIDER (and every provider cached from a lookup) goes through
ProviderStore.add_provider:
- only memnet's own keys are kept: a cube's sha2-256 multihash (34 bytes) or a prefix-chain key
  (/memnet/prefix/ + 32 bytes);
- a record keeps at most MAX_ADDRS addresses of at most MAX_ADDR_BYTES each;
- at most MAX_KEYS keys are held; beyond that new keys are refused (old ones expire in 48 h);
- a key's 20 slots are not first-come-first-kept: a newcomer replaces the record refreshed least
  recently, so squatters must keep re-announcing to stay, and cannot lock honest providers out;
- at most MAX_PER_GROUP of a key's records come from one network (the announcing connection's
  address: a public IPv4 /24 or IPv6 /48; a loopback or private address is a group of its own),
  and a newcomer from a full network replaces that network's stalest record: identities are
  free, addresses are not, so a flood of identities re-announcing from one network (DHT
  poisoning, docs/reliability.md) holds four slots, not all twenty, and cannot push the honest
  providers out.
Inbound DHT messages are capped at MAX_DHT_MESSAGE (a name record is at most 1 KiB), so a
record with 100 000 addresses is not even parsed.
"""

from __future__ import annotations

import logging

import ipaddress
from collections import OrderedDict

from libp2p.kad_dht import kad_dht
from libp2p.kad_dht import provider_store as store_mod
from libp2p.peer.peerinfo import PeerInfo

from memnet.net.dht_keys import PREFIX_NAMESPACE

log = logging.getLogger("memnet.dht")

MAX_ADDRS = 8
MAX_ADDR_BYTES = 128
MAX_KEYS = 100_000
MAX_DHT_MESSAGE = 64 * 1024
MULTIHASH_SHA256 = b"\x12\x20"
MAX_PER_GROUP = 4
MAX_GROUPS_KNOWN = 100_000   # peers whose network is remembered, the least recently seen forgotten


def memnet_key(key: bytes) -> bool:
    return (len(key) == 34 and key.startswith(MULTIHASH_SHA256)) or \
        (len(key) == len(PREFIX_NAMESPACE) + 32 and key.startswith(PREFIX_NAMESPACE))


def _trimmed(info: PeerInfo) -> PeerInfo:
    addrs = [a for a in info.addrs if len(a.to_bytes()) <= MAX_ADDR_BYTES][:MAX_ADDRS]
    return info if len(addrs) == len(info.addrs) else PeerInfo(info.peer_id, addrs)


def address_group(ip: str) -> str:
    """The network an address counts under: a public IPv4 /24 or IPv6 /48; a loopback, private
    or link-local address alone (a testbed or a LAN: each machine its own)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.is_loopback or addr.is_private or addr.is_link_local:
        return str(addr)
    return str(ipaddress.ip_network(f"{ip}/{24 if addr.version == 4 else 48}", strict=False))


def _first_ip(addrs) -> str | None:
    for addr in addrs:
        for proto in ("ip4", "ip6"):
            try:
                return addr.value_for_protocol(proto)
            except Exception:  # multiaddr raises when the protocol is absent
                continue
    return None


def install(provider_store) -> None:
    """Put the checks in front of one ProviderStore's add_provider (and cap inbound messages)."""
    kad_dht.MAX_DHT_MESSAGE_SIZE = MAX_DHT_MESSAGE  # read per inbound request; replies keep theirs
    original = provider_store.add_provider
    held = provider_store.providers
    network = provider_store.host.get_network()
    groups: OrderedDict[str, str] = OrderedDict()   # peer -> its network, as its connection showed it

    def group_of(provider: PeerInfo) -> str:
        """The provider's network: the address of its connection to us (it announced itself, so
        it is connected), else (a record cached from a lookup) what was seen last, else the
        address its record claims."""
        peer = str(provider.peer_id)
        for conn in network.get_connections(provider.peer_id):
            try:
                ip = _first_ip(conn.get_transport_addresses())
            except Exception:  # a connection closing under us
                ip = None
            if ip is not None:
                groups.pop(peer, None)
                groups[peer] = address_group(ip)
                if len(groups) > MAX_GROUPS_KNOWN:
                    groups.popitem(last=False)
                return groups[peer]
        known = groups.get(peer)
        if known is not None:
            return known
        ip = _first_ip(provider.addrs)
        return address_group(ip) if ip else "unknown"

    def make_room(records: dict, provider: PeerInfo) -> None:
        peer = str(provider.peer_id)
        if peer in records:
            return
        group = group_of(provider)
        same = [p for p, r in records.items() if group_of(r.provider_info) == group]
        if len(same) >= MAX_PER_GROUP:
            del records[min(same, key=lambda p: records[p].timestamp)]   # its own network's stalest
        elif len(records) >= store_mod.BUCKET_SIZE:
            stalest = min(records, key=lambda p: records[p].timestamp)
            del records[stalest]  # room for the newcomer: squatting takes constant re-announcing

    def add_provider(key: bytes, provider: PeerInfo) -> None:
        if not isinstance(key, bytes) or not memnet_key(key) or not provider or not provider.peer_id:
            log.debug("provider record under a foreign key refused (%d bytes)", len(key or b""))
            return
        records = held.get(key)
        if records is None and len(held) >= MAX_KEYS:
            log.warning("provider records: %d keys held, a new one refused", len(held))
            return
        if records is not None:
            make_room(records, provider)
        original(key, _trimmed(provider))

    provider_store.add_provider = add_provider
