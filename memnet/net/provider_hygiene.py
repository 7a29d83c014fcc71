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
  recently, so squatters must keep re-announcing to stay, and cannot lock honest providers out.
Inbound DHT messages are capped at MAX_DHT_MESSAGE (a name record is at most 1 KiB), so a
record with 100 000 addresses is not even parsed.
"""

from __future__ import annotations

import logging

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


def memnet_key(key: bytes) -> bool:
    return (len(key) == 34 and key.startswith(MULTIHASH_SHA256)) or \
        (len(key) == len(PREFIX_NAMESPACE) + 32 and key.startswith(PREFIX_NAMESPACE))


def _trimmed(info: PeerInfo) -> PeerInfo:
    addrs = [a for a in info.addrs if len(a.to_bytes()) <= MAX_ADDR_BYTES][:MAX_ADDRS]
    return info if len(addrs) == len(info.addrs) else PeerInfo(info.peer_id, addrs)


def install(provider_store) -> None:
    """Put the checks in front of one ProviderStore's add_provider (and cap inbound messages)."""
    kad_dht.MAX_DHT_MESSAGE_SIZE = MAX_DHT_MESSAGE  # read per inbound request; replies keep theirs
    original = provider_store.add_provider
    held = provider_store.providers

    def add_provider(key: bytes, provider: PeerInfo) -> None:
        if not isinstance(key, bytes) or not memnet_key(key) or not provider or not provider.peer_id:
            log.debug("provider record under a foreign key refused (%d bytes)", len(key or b""))
            return
        records = held.get(key)
        if records is None and len(held) >= MAX_KEYS:
            log.warning("provider records: %d keys held, a new one refused", len(held))
            return
        peer = str(provider.peer_id)
        if records is not None and len(records) >= store_mod.BUCKET_SIZE and peer not in records:
            stalest = min(records, key=lambda p: records[p].timestamp)
            del records[stalest]  # room for the newcomer: squatting takes constant re-announcing
        original(key, _trimmed(provider))

    provider_store.add_provider = add_provider
