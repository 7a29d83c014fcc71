"""The DHT keys a cube is announced and looked up under (pure: the daemon and the swarm
simulator use the same functions; docs/MIP.md §8).

A cube is announced under its CID's multihash (as IPFS does); an activation cube also under each
of its prefix-chain keys, as b"/memnet/prefix/" + key, so a peer can look up the longest cached
prefix of its own token ids. py-libp2p places a key at the peers nearest sha256(key bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

PREFIX_NAMESPACE = b"/memnet/prefix/"


def cube_key(cube_id: bytes) -> bytes:
    return cube_id[2:]  # drop the CID version and codec: the sha2-256 multihash


def prefix_key(key: bytes) -> bytes:
    return PREFIX_NAMESPACE + key


def announce_keys(cube_id: bytes, kind: str, prefix_keys: Sequence[bytes] = ()) -> list[bytes]:
    """Every DHT key a cube is provided under: its own, then an activation cube's prefix keys
    (one per 256-token block: a 2048-token cube is 9 provides)."""
    keys = [cube_key(cube_id)]
    if kind == "activation":
        keys += [prefix_key(k) for k in prefix_keys]
    return keys
