"""Who knows whom in the DHT, at 10^4-10^5 nodes without storing 10^8 routing-table entries.

Positions are the first 64 bits of sha256(peer id) and sha256(DHT key bytes), as py-libp2p
measures XOR distance between the sha256 of both (64 bits tell 10^5 nodes apart; ties would need
2^32 of them). py-libp2p's routing table is every DHT server a node has heard of, up to about
256 buckets x 14 = 3 500 peers (any full bucket splits): at scale, a near-uniform sample of the
servers. The overlay draws that sample by hashing the pair (node, contact) against the density
capacity / servers, so a table costs no memory and always gives the same answer, and a query
("your 20 contacts closest to t") only looks at the few thousand servers nearest t: the XOR-closest
members of a table lie in the smallest subtree around t that holds enough of them.

A node forgets a contact when a dial to it fails (py-libp2p removes it from the table) and learns
it again once the contact has restarted; offline contacts it has not tried stay in its table.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numba
import numpy as np

MASK64 = (1 << 64) - 1
WINDOW_CACHE = 4096    # windows kept (a 10^5-node window is ~1 000 servers: ~45 KB with its list)


def position(data: bytes) -> int:
    """Where a peer id or DHT key lies in the key space (the top 64 bits of its sha256)."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True)
def _members(ids, salt, nodes, askers, threshold, keep, other):
    """For each asker, the indices in nodes of its first `keep` table members (the owner and
    node `other` left out; -1: none) and how many there are, by a scan that stops at the last
    one. Compiled: walks call it millions of times on a few dozen to a thousand nodes, where
    numpy's per-call cost was most of the work. The same splitmix64 as _mix, in uint64
    arithmetic throughout."""
    found = np.empty((len(askers), keep), np.int64)
    counts = np.zeros(len(askers), np.int64)
    for r in range(len(askers)):
        owner = askers[r]
        salt_r = salt[owner]
        c = 0
        for j in range(len(nodes)):
            node = nodes[j]
            if node == owner or node == other:
                continue
            x = ids[node] ^ salt_r
            x ^= x >> np.uint64(30)
            x *= np.uint64(0xBF58476D1CE4E5B9)
            x ^= x >> np.uint64(27)
            x *= np.uint64(0x94D049BB133111EB)
            x ^= x >> np.uint64(31)
            if x <= threshold:
                found[r, c] = j
                c += 1
                if c == keep:
                    break
        counts[r] = c
    return found, counts


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised: a good 64-bit hash of a 64-bit value."""
    x = x ^ (x >> _S30)
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    return x ^ (x >> _S31)


class Overlay:
    def __init__(self, ids: list[int], servers: list[int], capacity: int):
        """ids: every node's position; servers: the nodes in DHT server mode (not behind NAT)."""
        self.ids = np.array(ids, dtype=np.uint64)
        srv = np.array(servers, dtype=np.int64)
        order = srv[np.argsort(self.ids[srv], kind="stable")]
        self.order = order
        self.sorted_ids = self.ids[order]
        self.n = len(order)
        self.density = min(1.0, capacity / max(1, self.n - 1))
        self.threshold = np.uint64(min(MASK64, int(self.density * 2.0 ** 64)))
        self.salt = _mix(self.ids ^ np.uint64(0x9E3779B97F4A7C15))
        self.forgotten: dict[int, dict[int, float]] = {}   # node -> {contact: when a dial failed}
        self._windows: OrderedDict[int, tuple[np.ndarray, list[int]]] = OrderedDict()

    def window(self, target: int, wanted: int) -> tuple[np.ndarray, list[int]]:
        """The servers of the smallest subtree around target holding at least `wanted` of them
        (all servers if there are fewer), nearest first: (as an array, as a list). Cached:
        popular keys are looked up again and again."""
        hit = self._windows.get(target)
        if hit is not None:
            return hit
        depth = max(0, int(np.log2(max(1, self.n / max(1, wanted)))))
        while True:
            lo, hi = self._subtree(target, depth)
            if hi - lo >= wanted or depth == 0:
                break
            depth -= 1
        nodes, pos = self.order[lo:hi], self.sorted_ids[lo:hi]
        # stable: the sorted positions xor target are sorted runs, which a merge sort takes
        # in a few passes (6x quicker than quicksort here)
        nodes = nodes[np.argsort(pos ^ np.uint64(target), kind="stable")]
        if len(self._windows) >= WINDOW_CACHE:
            self._windows.popitem(last=False)   # a plain dict's first key is found by a scan
        self._windows[target] = hit = (nodes, nodes.tolist())
        return hit

    def _subtree(self, target: int, depth: int) -> tuple[int, int]:
        if depth == 0:
            return 0, self.n
        shift = 64 - depth
        start = (target >> shift) << shift
        lo = int(np.searchsorted(self.sorted_ids, np.uint64(start), side="left"))
        end = start + (1 << shift)
        hi = self.n if end > MASK64 else int(np.searchsorted(self.sorted_ids, np.uint64(end), side="left"))
        return lo, hi

    def window_size(self, count: int) -> int:
        """Servers to look at so that each table has `count` members among them (3x the mean)."""
        return min(self.n, int(3 * count / self.density) + 64)

    def answers(self, askers: list[int], nodes: np.ndarray, count: int,
                below: int | None = None, requester: int = -1) -> list[list[int]]:
        """For each asker, the window indices (so: nearest first) of its `count` table contacts
        nearest the window's target, with a few spare for contacts it has forgotten. A table
        never lists its owner. `below`: only indices under it matter to the caller (a walk whose
        20 nearest so far end there can use no other), so only that part of the window is
        tested: the answers' part under `below` is exactly that of the full answers. A
        responder never lists the `requester` either (then `count`, not more, are returned)."""
        if below is not None and below < len(nodes):
            nodes = nodes[:below]
        keep = count if requester >= 0 else count + 8
        found, counts = _members(self.ids, self.salt, nodes, np.array(askers, dtype=np.int64),
                                 self.threshold, keep, requester)
        return [row[:c] for row, c in zip(found.tolist(), counts.tolist())]

    def forget(self, node: int, contact: int, now: float) -> None:
        self.forgotten.setdefault(node, {})[contact] = now

    def knows(self, node: int, contact: int, last_start: list[float]) -> bool:
        """False while node remembers contact as dead and contact has not restarted since."""
        when = self.forgotten.get(node, {}).get(contact)
        return when is None or last_start[contact] > when
