"""The libp2p host of a memnet node: TCP, Noise only, yamux only, memnet's own Kademlia protocol.

py-libp2p's defaults are unsafe for us: new_host() offers plaintext, secio and TLS next to Noise
(so a peer can pick plaintext), and KadDHT speaks /ipfs/kad/1.0.0 whatever protocol_prefix says
(0.8.1 uses a module constant in every DHT module), which would make a node a server of the
public IPFS DHT. This module fixes both in one place, and installs buffered TCP reads
(memnet/net/tcp_reads.py) and a yamux that never buffers past the window it advertised
(memnet/net/yamux_guard.py).
"""

from __future__ import annotations

import importlib
import weakref
from typing import Any

import multiaddr
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import Ed25519PrivateKey as P2PPrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.rcmgr import ResourceManager
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID

from memnet.errors import UsageError
from memnet.net import swarm_guard, yamux_guard
from memnet.net.tcp_reads import buffer_tcp_reads

KAD_PROTOCOL = TProtocol("/memnet/kad/1.0.0")
_KAD_MODULES = ("common", "kad_dht", "peer_routing", "provider_store", "value_store")


def use_memnet_kad_protocol() -> None:
    """Point every py-libp2p DHT module at /memnet/kad/1.0.0 (see the module docstring)."""
    for name in _KAD_MODULES:
        module = importlib.import_module(f"libp2p.kad_dht.{name}")
        module.PROTOCOL_ID = KAD_PROTOCOL


def set_dht_query_timeout(seconds: float) -> None:
    """py-libp2p reads QUERY_TIMEOUT from its modules' globals: the lookup's FIND_NODE, provide's
    ADD_PROVIDER and GET_PROVIDERS all use it (daemon.dht_query_timeout)."""
    for name in ("common", "kad_dht", "peer_routing", "provider_store"):
        importlib.import_module(f"libp2p.kad_dht.{name}").QUERY_TIMEOUT = seconds


def key_pair(key: Ed25519PrivateKey) -> KeyPair:
    """The node's identity key as a libp2p key pair: same key, so PeerID == author's PeerID."""
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    private = P2PPrivateKey.from_bytes(seed)
    return KeyPair(private, private.get_public_key())


_RESOURCES: weakref.WeakKeyDictionary[IHost, ResourceManager] = weakref.WeakKeyDictionary()


def build_host(key: Ed25519PrivateKey, mdns: bool = False, resources: ResourceManager | None = None,
               max_connections: int = swarm_guard.MAX_CONNECTIONS) -> IHost:
    """max_connections: open at once, both ways; inbound ones stop at max_connections -
    MIN_CONNECTIONS, so that the node can always dial out (memnet/net/swarm_guard.py)."""
    buffer_tcp_reads()
    yamux_guard.install()
    pair = key_pair(key)
    security = {NOISE_ID: NoiseTransport(pair, noise_privkey=new_x25519_pair().private_key)}
    resources = resources or swarm_guard.resource_manager(max_connections)
    config = swarm_guard.connection_config(max_connections, min(swarm_guard.MIN_CONNECTIONS, max_connections // 5))
    host = new_host(key_pair=pair, sec_opt=security, muxer_opt={TProtocol(YAMUX_ID): yamux_guard.GuardedYamux},
                    enable_mDNS=mdns, resource_manager=resources, connection_config=config)
    swarm_guard.install(host)
    _RESOURCES[host] = resources
    return host


def resource_use(host: IHost) -> dict[str, Any]:
    """What py-libp2p's resource manager counts as held now, beside its limits."""
    stats = _RESOURCES[host].get_stats()
    return {"connections": stats["connections"], "streams": stats["streams"], "memory_bytes": stats["memory_bytes"],
            "limits": stats["limits"]}


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text.strip())
    except Exception:  # multiaddr raises several unrelated types for bad text
        raise UsageError(f"not a multiaddr: {text!r}") from None


def peer_info(text: str) -> PeerInfo:
    """A dialable peer from '/ip4/.../tcp/N/p2p/PEERID'."""
    try:
        return info_from_p2p_addr(parse_multiaddr(text))
    except UsageError:
        raise
    except Exception:
        raise UsageError(f"a peer address needs /p2p/PEERID at the end: {text!r}") from None
