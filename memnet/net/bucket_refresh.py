"""Kademlia's join, its second half (pure: the daemon's peers service runs the lookups).

After the lookup of its own id, a joining node "refreshes all k-buckets further away than its
closest neighbor" (Maymounkov & Mazières 2002, §2.3): one lookup of a random key in each such
bucket's range. The lookups pass through peers all over the key space, and every peer queried adds
the node to its table with its current signed address. A daemon that skips this is known again,
after a restart, only to its nearest neighbours (those its own-id lookup met): the others keep a
stale address, or dropped it while it was down, and until it queries them their lookups and
provider records miss it (docs/simulation.md §4, "On real daemons").

py-libp2p places a key and a peer id in its key space by their SHA-256, so a key for a bucket is
found by drawing random keys until one's hash shares exactly the bucket's prefix with ours:
2^(cpl+1) draws expected, hence the cap (MAX_CPL); buckets nearer than that are reached by the
own-id lookup anyway.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

BITS = 256
MAX_CPL = 15   # ~65 000 hashes for the nearest refreshed bucket, under 0.1 s


def position(key: bytes) -> int:
    """Where py-libp2p places a key (or a peer id's bytes) in its key space."""
    return int.from_bytes(hashlib.sha256(key).digest(), "big")


def common_prefix(a: int, b: int) -> int:
    """Leading bits two positions share (BITS when equal): the index of the bucket b is in, seen from a."""
    return BITS - (a ^ b).bit_length()


def buckets_to_refresh(own: int, neighbours: Iterable[int], max_cpl: int = MAX_CPL) -> list[int]:
    """The buckets (by common prefix length) further away than the nearest neighbour, farthest
    first; none when there are no neighbours (nothing to ask)."""
    nearest = max((common_prefix(own, n) for n in neighbours), default=None)
    if nearest is None:
        return []
    return list(range(min(nearest, max_cpl + 1)))


def key_in_bucket(own: int, cpl: int, rng: random.Random) -> bytes:
    """A random 32-byte key whose position shares exactly cpl leading bits with own."""
    if not 0 <= cpl <= MAX_CPL:
        raise ValueError(f"bucket {cpl} is outside 0..{MAX_CPL}")
    while True:
        key = rng.randbytes(32)
        if common_prefix(own, position(key)) == cpl:
            return key
