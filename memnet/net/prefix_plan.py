"""Finding the longest cached prefix in the swarm: the decisions, pure (docs/MIP.md §17.1).
memnet/net/prefix_lookup.py does the asking; a simulator can drive the same planner.

Each probe is one salt's prefix-chain keys of the prompt (one list per KV dtype the caller would
accept). Connected peers are asked first, for every key (a DHT lookup is ~20 stream round trips,
a neighbour one), as Bitswap asks its neighbours before content routing. The DHT is then asked
only for keys longer than the longest one a neighbour holds (the whole prompt, typically), so it
can still find a better cube elsewhere; of the keys it finds, the longest with a provider wins,
and up to PROVIDERS_ASKED of its providers are asked which cubes they hold under it. Every
offered manifest must authenticate (hash, then signature) and list the key it was offered under;
a peer that lies is scored and nothing it said is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from memnet.cube import manifest as manifest_mod
from memnet.errors import FormatError, PeerError, UsageError

MAX_PROBES = 8            # salts per lookup
MAX_KEYS = 65             # keys per probe: 16 384 tokens in 256-token blocks, plus the tail
NEIGHBOURS = 8            # connected peers asked before the DHT (the daemon's prefix_neighbours)
PROVIDERS_ASKED = 3       # per winning key
CUBES_PER_PROBE = 4

Peer = TypeVar("Peer")    # whatever the caller uses to name a peer (a PeerInfo, a simulated node)


def check_probes(probes: object) -> list[list[bytes]]:
    if not isinstance(probes, list) or not 0 < len(probes) <= MAX_PROBES:
        raise UsageError(f"probes must be a list of 1 … {MAX_PROBES} key lists")
    for keys in probes:
        if not isinstance(keys, list) or not 0 < len(keys) <= MAX_KEYS or not all(
                isinstance(k, bytes) and len(k) == 32 for k in keys):
            raise UsageError(f"each probe must list 1 … {MAX_KEYS} 32-byte prefix keys")
    return probes


def longest_held(keys: list[bytes], held: dict[bytes, list[bytes]]) -> int:
    """The index of the longest key in keys with cubes in held (-1: none)."""
    return max((i for i, key in enumerate(keys) if held.get(key)), default=-1)


def check_offer(data: bytes, cube_id: bytes, key: bytes, peer: str) -> None:
    """PeerError unless data is the authentic manifest of cube_id, an activation cube listing
    key (a peer that fails this lied, and is scored so)."""
    try:
        m = manifest_mod.decode(data, cube_id)  # hash, then signature
    except FormatError:
        raise PeerError(f"peer {peer} sent a manifest that does not authenticate") from None
    if m.kind != "activation" or key not in m.meta["prefix_keys"]:
        raise PeerError(f"peer {peer} offered cube {cube_id.hex()[:16]}… under a key it does not have")


@dataclass
class ProbeResult(Generic[Peer]):
    """The longest key of one probe found so far and the authenticated cubes held under it."""

    index: int = -1
    cubes: dict[bytes, tuple[bytes, list[Peer]]] = field(default_factory=dict)

    def offer(self, index: int, cube_id: bytes, data: bytes, peer: Peer, same=lambda a, b: a == b) -> None:
        if index > self.index:
            self.index, self.cubes = index, {}
        if index == self.index:
            data, holders = self.cubes.setdefault(cube_id, (data, []))
            if not any(same(h, peer) for h in holders):
                holders.append(peer)

    def dht_start(self) -> int:
        """The first key the DHT still has to be asked for: only a longer key can do better."""
        return self.index + 1


@dataclass(frozen=True)
class Offer:
    probe: int
    index: int
    cube_id: bytes
    key: bytes


class PrefixLookup(Generic[Peer]):
    """The state of one lookup: what to ask whom, and what was found."""

    def __init__(self, probes: list[list[bytes]], same=lambda a, b: a == b):
        self.probes = probes
        self.results: list[ProbeResult[Peer]] = [ProbeResult() for _ in probes]
        self._same = same

    def everything(self) -> list[int]:
        """wanted for a neighbour: every key of every probe (from index 0)."""
        return [0] * len(self.probes)

    def keys_to_ask(self, wanted: list[int]) -> list[bytes]:
        """The distinct keys of each probe from wanted[i] on (-1: not that probe)."""
        return list(dict.fromkeys(k for probe, start in zip(self.probes, wanted) if start >= 0
                                  for k in probe[start:]))

    def offers(self, wanted: list[int], held: dict[bytes, list[bytes]]) -> list[Offer]:
        """The cubes to authenticate from a peer's answer: under the longest key it holds per
        probe, if that beats what is already known."""
        out = []
        for i, (probe, start) in enumerate(zip(self.probes, wanted)):
            if start < 0:
                continue
            index = longest_held(probe, held)
            if index < max(start, self.results[i].index):
                continue
            out += [Offer(i, index, cube_id, probe[index]) for cube_id in held[probe[index]][:CUBES_PER_PROBE]]
        return out

    def accept(self, offers: list[tuple[Offer, bytes]], peer: Peer) -> None:
        """A peer's authenticated offers (only if everything it said held up)."""
        for offer, data in offers:
            self.results[offer.probe].offer(offer.index, offer.cube_id, data, peer, self._same)

    def dht_keys(self, i: int) -> tuple[int, list[bytes]]:
        """(index of the first key, the keys) that probe i still needs the DHT for."""
        start = self.results[i].dht_start()
        return start, self.probes[i][start:]

    @staticmethod
    def longest_found(found: dict[int, list[Peer]]) -> tuple[int, list[Peer]]:
        """Of the DHT's answers (key index -> providers), the longest key with providers."""
        if not found:
            return -1, []
        best = max(found)
        return best, found[best]

    def wanted_after_dht(self, i: int, index: int) -> list[int]:
        """wanted for the providers of probe i's key at index: that key alone."""
        wanted = [-1] * len(self.probes)
        wanted[i] = index
        return wanted

    def found(self) -> list[tuple[bytes, bytes, list[Peer]]]:
        """(cube id, authenticated manifest bytes, holders) under each probe's longest key."""
        merged: dict[bytes, tuple[bytes, list[Peer]]] = {}
        for result in self.results:
            merged.update(result.cubes)
        return [(cube_id, data, holders) for cube_id, (data, holders) in merged.items()]

    def longest(self) -> list[int]:
        """Per probe, how many keys long the best find is (0: none)."""
        return [r.index + 1 for r in self.results]
