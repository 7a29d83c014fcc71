"""Which servers a distributed generation goes through (pure; the bridge's client calls it, a
simulator can too). Dijkstra over layer positions 0..n, as Petals routes for inference: from
position s a server whose span covers s carries the hidden state to the end of its span, at the
cost of half a round trip, its compute for those layers and tokens, and
  - a large penalty when its cache budget has no room for the session (it would refuse);
  - the estimated time to fetch its share of the seed cube when it does not hold the seed
    (a server that already holds the cube starts at once).
Servers whose largest session is below the one asked for are left out; banned servers (failed
this session) too, unless nothing else covers a layer.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from memnet.span.records import SpanRecord

DEFAULT_RTT = 0.010          # s, a server never pinged
NO_ROOM_PENALTY = 10.0       # s: as good as absent, but better than no route at all
FETCH_BANDWIDTH = 100e6      # bytes/s assumed for a server fetching its share of the seed


@dataclass(frozen=True)
class Hop:
    peer: str
    start: int
    end: int


@dataclass(frozen=True)
class Need:
    layers: int              # the model's layer count
    max_length: int          # tokens the session may reach
    tokens: int = 1          # tokens per step the estimate is for (the prompt's suffix)
    seed_key: bytes | None = None   # prefix-chain key of the seed cube (None: no seed)
    seed_bytes_per_layer: float = 0.0  # the seed's payload bytes / layers


def cost(record: SpanRecord, start: int, need: Need, rtt: dict[str, float]) -> float:
    layers = record.end - start
    total = rtt.get(record.peer, DEFAULT_RTT) / 2 + record.layer_seconds * layers * max(1, need.tokens)
    if record.cache_tokens_left < need.max_length:
        total += NO_ROOM_PENALTY
    if need.seed_key is not None and not record.holds(need.seed_key):
        total += need.seed_bytes_per_layer * layers / FETCH_BANDWIDTH
    return total


def route(records: list[SpanRecord], need: Need, rtt: dict[str, float] | None = None,
          banned: frozenset[str] = frozenset(), start: int = 0, end: int | None = None) -> list[Hop] | None:
    """The cheapest chain of hops covering layers [start, end) (None if the servers leave a gap)."""
    end = need.layers if end is None else end
    rtt = rtt or {}
    records = [r for r in records if r.max_length >= need.max_length]  # others would refuse the session
    usable = [r for r in records if r.peer not in banned] or list(records)
    best = _dijkstra(usable, need, rtt, start, end)
    if best is None and banned:
        best = _dijkstra(list(records), need, rtt, start, end)
    return best


def _dijkstra(records: list[SpanRecord], need: Need, rtt: dict[str, float], start: int, end: int) -> list[Hop] | None:
    frontier: list[tuple[float, int, tuple[Hop, ...]]] = [(0.0, start, ())]
    done: dict[int, float] = {}
    while frontier:
        spent, position, path = heapq.heappop(frontier)
        if position >= end:
            return list(path)
        if position in done:
            continue
        done[position] = spent
        for record in sorted(records, key=lambda r: r.peer):
            if record.start <= position < record.end:
                reach = min(record.end, end)
                if reach not in done:
                    step = cost(record, position, need, rtt) * (reach - position) / max(1, record.end - position)
                    heapq.heappush(frontier, (spent + step, reach, path + (Hop(record.peer, position, reach),)))
    return None
