"""What a run measures, and the summary it reports."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field


def gini(values: list[float]) -> float:
    """0: every node carries the same load; 1: one node carries all of it."""
    xs = sorted(v for v in values if v >= 0)
    n, total = len(xs), sum(xs)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * x for i, x in enumerate(xs))
    return (2 * weighted) / (n * total) - (n + 1) / n


def quantiles(xs: list[float], qs=(0.5, 0.9, 0.99)) -> dict[str, float]:
    if not xs:
        return {}
    s = sorted(xs)
    return {f"p{int(q * 100)}": s[min(len(s) - 1, int(q * len(s)))] for q in qs} | {
        "mean": statistics.fmean(s), "n": len(s)}


@dataclass
class Metrics:
    nodes: int
    counting: bool = False
    asks: Counter = field(default_factory=Counter)           # by kind
    decisions: Counter = field(default_factory=Counter)      # local | fetch | recompute | none
    prefix_tokens: int = 0        # shared-prefix tokens asked (private documents included)
    limit_tokens: int = 0         # of them, already computed by a node online at the time
    worth_tokens: int = 0         # of them, worth fetching from the fastest online node that computed them (oracle)
    cached_tokens: int = 0        # of them, held as a KV cube by a node online at the time
    saved_tokens: int = 0         # of them, not prefilled thanks to a cube (local or fetched)
    fetched_tokens: int = 0
    ttft: list[float] = field(default_factory=list)          # with the swarm
    ttft_solo: list[float] = field(default_factory=list)     # the same asks, each node on its own
    ask_lookup: list[float] = field(default_factory=list)    # prefix lookup seconds per ask
    walk_rounds: list[int] = field(default_factory=list)
    walk_queries: list[int] = field(default_factory=list)
    walk_seconds: list[float] = field(default_factory=list)
    walk_dead: list[int] = field(default_factory=list)
    find_seconds: list[float] = field(default_factory=list)
    fetch_seconds: list[float] = field(default_factory=list)
    fetch_failed: int = 0
    cube_asks: Counter = field(default_factory=Counter)      # plaintext/LoRA by outcome
    flash: list[float] = field(default_factory=list)         # flash crowd completion seconds
    probes: Counter = field(default_factory=Counter)         # pinned retrieval: ok | unavailable | lost
    probe_seconds: list[float] = field(default_factory=list)
    up: list[float] = field(default_factory=list)            # bytes served per node
    down: list[float] = field(default_factory=list)
    builds: int = 0
    build_tokens: int = 0         # prefilled again to build a cube (a promotion after a reuse)
    evictions: int = 0
    announces: int = 0
    online_samples: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.up = [0.0] * self.nodes
        self.down = [0.0] * self.nodes

    def walk(self, w) -> None:
        if self.counting:
            self.walk_rounds.append(w.rounds)
            self.walk_queries.append(w.queries)
            self.walk_seconds.append(w.seconds)
            self.walk_dead.append(w.dead)

    def summary(self) -> dict:
        hits = sum(self.probes.values())
        return {
            "asks": dict(self.asks),
            "decisions": dict(self.decisions),
            "prefill": {
                "prefix_tokens": self.prefix_tokens, "limit_tokens": self.limit_tokens,
                "cached_tokens": self.cached_tokens, "saved_tokens": self.saved_tokens,
                "saved_of_limit": self.saved_tokens / self.limit_tokens if self.limit_tokens else None,
                "saved_of_all": self.saved_tokens / self.prefix_tokens if self.prefix_tokens else None,
                "limit_of_all": self.limit_tokens / self.prefix_tokens if self.prefix_tokens else None,
                "worth_tokens": self.worth_tokens,
                "saved_of_worth": self.saved_tokens / self.worth_tokens if self.worth_tokens else None,
                "worth_of_limit": self.worth_tokens / self.limit_tokens if self.limit_tokens else None,
            },
            "ttft": {"swarm": quantiles(self.ttft), "solo": quantiles(self.ttft_solo)},
            "ask_lookup_seconds": quantiles(self.ask_lookup),
            "walks": {"rounds": quantiles(self.walk_rounds), "queries": quantiles(self.walk_queries),
                      "seconds": quantiles(self.walk_seconds), "dead": quantiles(self.walk_dead)},
            "find_seconds": quantiles(self.find_seconds),
            "fetch_seconds": quantiles(self.fetch_seconds), "fetch_failed": self.fetch_failed,
            "cube_asks": dict(self.cube_asks),
            "flash_crowd_seconds": quantiles(self.flash),
            "pinned_retrieval": {**dict(self.probes), "success": self.probes["ok"] / hits if hits else None,
                                 "seconds": quantiles(self.probe_seconds)},
            "load": {"gini_up_all": gini(self.up), "gini_up_serving": gini([u for u in self.up if u > 0]),
                     "bytes_up_per_node": quantiles(self.up), "bytes_down_per_node": quantiles(self.down)},
            "builds": self.builds, "build_tokens": self.build_tokens, "evictions": self.evictions, "announces": self.announces,
            "online_share": statistics.fmean(self.online_samples) if self.online_samples else None,
        }
