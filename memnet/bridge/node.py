"""The bridge's hivemind node: a P2P daemon (p2pd) under the memnet identity, and a DHTNode on it,
in one asyncio loop (hivemind's forking DHT process is not used)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

IDENTITY_FILE = "hivemind.key"


def write_identity(home: Path, key: Ed25519PrivateKey) -> Path:
    """p2pd's identity file for the node key: a libp2p PrivateKey protobuf, Ed25519 (type 1),
    data = seed ‖ public key (64 bytes; go-libp2p refuses py-libp2p's 32-byte form). Written before
    P2P starts: given a missing path, hivemind would make up an RSA identity there."""
    from hivemind.proto import crypto_pb2

    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    message = crypto_pb2.PrivateKey(key_type=crypto_pb2.KeyType.Ed25519, data=seed + public)
    path = Path(home) / IDENTITY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(message.SerializeToString())
    os.chmod(path, 0o600)
    return path


class Node:
    def __init__(self, p2p: Any, dht: Any):
        self.p2p, self.dht = p2p, dht

    @property
    def peer_id(self) -> str:
        return self.p2p.peer_id.to_base58()

    async def maddrs(self) -> list[str]:
        try:
            return [str(m) for m in await self.p2p.get_visible_maddrs()]
        except ValueError:
            return []

    @classmethod
    async def start(cls, home: Path, key: Ed25519PrivateKey, listen: list[str], announce: list[str],
                    initial_peers: list[str]) -> Node:
        from hivemind.dht.node import DHTNode
        from hivemind.p2p import P2P

        identity = write_identity(home, key)
        # relays, NAT port mapping and AutoNAT are the daemon's business (memnet's libp2p host); the
        # bridge only listens where it is told
        p2p = await P2P.create(initial_peers=initial_peers or None, host_maddrs=listen,
                               announce_maddrs=announce or None, identity_path=str(identity),
                               check_if_identity_free=False, use_relay=False, auto_nat=False,
                               nat_port_map=False, use_ipfs=False)
        dht = await DHTNode.create(p2p=p2p, initial_peers=initial_peers or None,
                                   ensure_bootstrap_success=bool(initial_peers))
        return cls(p2p, dht)

    async def stop(self) -> None:
        try:
            await self.dht.shutdown()
        finally:
            await self.p2p.shutdown()
