"""Drive the lifecycle policy (memnet/scheduler/policy.py) over a synthetic workload and compare
LRU with LFU eviction at a few store budgets.

The universe: N cubes of log-uniform random sizes; a few are pinned (this node's own, always
stored), some expire during the run, some are versioned names that get a new version every few
days (the old one becomes superseded once the new one is stored). Each simulated hour brings
Zipf-distributed accesses: a stored cube is a hit, otherwise a miss that fetches it. After each
hour one upkeep pass runs, exactly as the daemon's would: transitions, then eviction under the
budget. The invariants are asserted at every pass:
  - no pinned cube is ever evicted;
  - the stored size is within the budget whenever the pinned cubes alone fit in it;
  - when they do not, the plan says so and only pinned cubes stay;
  - the evicted cubes are the first ones of the policy's eviction order.
"Drifting" swaps popularity ranks every day (150 random swaps: about 60 % of 300 cubes move),
which favours recency over frequency; stationary popularity favours frequency.

    python -m simulations.lifecycle_sim [--cubes 300] [--days 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import random
import time
from dataclasses import dataclass, replace
from itertools import accumulate

from memnet.render import human_size
from memnet.scheduler import policy
from memnet.config import Lifecycle
from memnet.scheduler.policy import CubeView

HOUR, DAY = 3600, 86400
START = 1_790_000_000


@dataclass(frozen=True)
class Workload:
    cubes: int = 300
    days: int = 30
    accesses_per_hour: int = 20
    zipf_s: float = 1.0
    pinned_fraction: float = 0.03
    expiring_fraction: float = 0.1
    versioned_fraction: float = 0.05
    new_version_every_days: int = 5
    drift: bool = False
    drift_swaps_per_day: int = 150  # rank swaps a day when drifting
    seed: int = 1


@dataclass(frozen=True)
class Result:
    strategy: str
    budget: int
    requests: int
    hits: int
    evictions: int
    passes_over_budget: int  # passes whose pinned cubes alone exceeded the budget

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


def _cube_id(family: int, version: int) -> bytes:
    return hashlib.sha256(f"{family}/{version}".encode()).digest()


class Universe:
    """Every cube the swarm holds, by family (a versioned name is one family)."""

    def __init__(self, w: Workload, rng: random.Random):
        self.sizes = [int(2 ** rng.uniform(16, 24)) for _ in range(w.cubes)]  # 64 KiB .. 16 MiB
        families = list(range(w.cubes))
        rng.shuffle(families)
        n_pin, n_exp = int(w.cubes * w.pinned_fraction), int(w.cubes * w.expiring_fraction)
        n_ver = int(w.cubes * w.versioned_fraction)
        self.pinned = set(families[:n_pin])
        end = START + w.days * DAY
        self.expires = {f: rng.randrange(START + DAY, end) for f in families[n_pin:n_pin + n_exp]}
        self.versioned = set(families[n_pin + n_exp:n_pin + n_exp + n_ver])
        self.every = w.new_version_every_days * DAY
        self.ranks = list(range(w.cubes))  # ranks[r] = family at popularity rank r
        rng.shuffle(self.ranks)
        self.cum = list(accumulate(1 / (r + 1) ** w.zipf_s for r in range(w.cubes)))

    def version(self, family: int, now: int) -> int:
        return 1 + (now - START) // self.every if family in self.versioned else 1

    def view(self, family: int, now: int) -> CubeView:
        version = self.version(family, now)
        versioned = family in self.versioned
        return CubeView(_cube_id(family, version), "plaintext", self.sizes[family], created=now,
                        pinned=family in self.pinned, expires=self.expires.get(family),
                        author=b"a" * 32, name=f"f{family}" if versioned else None,
                        version=version if versioned else None)

    def pick(self, rng: random.Random) -> int:
        r = bisect.bisect_left(self.cum, rng.random() * self.cum[-1])
        return self.ranks[min(r, len(self.ranks) - 1)]

    def drift(self, rng: random.Random, swaps: int) -> None:
        for _ in range(swaps):
            i, j = rng.randrange(len(self.ranks)), rng.randrange(len(self.ranks))
            self.ranks[i], self.ranks[j] = self.ranks[j], self.ranks[i]


def check_pass(before: list[CubeView], plan: policy.EvictionPlan, budget: int, strategy: str, now: int) -> None:
    """The invariants of one upkeep pass."""
    by_id = {c.cube_id: c for c in before}
    evicted = [e.cube_id for e in plan.evictions]
    assert not any(by_id[c].pinned for c in evicted), "a pinned cube was evicted"
    kept = [c for c in before if c.cube_id not in set(evicted)]
    kept_size = sum(c.size for c in kept)
    assert kept_size == plan.kept_bytes
    pinned_size = sum(c.size for c in before if c.pinned)
    if pinned_size <= budget:
        assert plan.budget_met and kept_size <= budget, "budget exceeded although the pins fit"
    else:
        assert not plan.budget_met and all(c.pinned for c in kept), "unpinned cubes kept over budget"
    order = [c.cube_id for c in policy.eviction_order(before, strategy, now)]
    assert evicted == order[:len(evicted)], "eviction did not follow the strategy's order"


def simulate(w: Workload, strategy: str, budget: int, check: bool = True) -> Result:
    """One run: the same workload (same seed) for every strategy and budget."""
    rng = random.Random(w.seed)
    world = Universe(w, rng)
    config = Lifecycle(store_budget_bytes=budget, eviction=strategy, archive_after=3 * DAY)
    store: dict[bytes, CubeView] = {}
    now = START
    for family in world.pinned:
        c = world.view(family, now)
        store[c.cube_id] = c
    requests = hits = evictions = over = 0
    for hour in range(w.days * 24):
        now = START + hour * HOUR
        if w.drift and hour % 24 == 0:
            world.drift(rng, w.drift_swaps_per_day)
        for _ in range(w.accesses_per_hour):
            family = world.pick(rng)
            if family in world.expires and now >= world.expires[family]:
                continue  # an expired cube is of no use to anyone: not a request
            at = now + rng.randrange(HOUR)
            wanted = world.view(family, at)
            requests += 1
            held = store.get(wanted.cube_id)
            if held is not None:
                hits += 1
                store[held.cube_id] = replace(held, hits=held.hits + 1, last_used=at)
            else:  # a miss: fetch it
                store[wanted.cube_id] = replace(wanted, hits=1, last_used=at)
        now += HOUR
        cubes = list(store.values())
        changes = policy.transitions(cubes, now, config)
        cubes = policy.with_transitions(cubes, changes, now)
        plan = policy.evict(cubes, budget, strategy, now)
        if check:
            check_pass(cubes, plan, budget, strategy, now)
        store = {c.cube_id: c for c in cubes}
        for e in plan.evictions:
            del store[e.cube_id]
        evictions += len(plan.evictions)
        over += not plan.budget_met
    return Result(strategy, budget, requests, hits, evictions, over)


def compare(w: Workload, fractions=(0.01, 0.05, 0.1, 0.25), check: bool = True) -> list[Result]:
    """LRU and LFU at budgets that are fractions of the universe's total size (the smallest one
    is below what the pinned cubes need)."""
    total = sum(Universe(w, random.Random(w.seed)).sizes)
    return [simulate(w, strategy, int(total * f), check) for f in fractions for strategy in policy.STRATEGIES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cubes", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    for drift in (False, True):
        w = Workload(cubes=args.cubes, days=args.days, drift=drift, seed=args.seed)
        print(f"{'drifting' if drift else 'stationary'} Zipf({w.zipf_s}) over {w.cubes} cubes, {w.days} days")
        print(f"  {'budget':>10}  {'strategy':<8} {'hit rate':>8} {'evictions':>9} {'passes over budget':>18}")
        for r in compare(w):
            print(f"  {human_size(r.budget):>10}  {r.strategy:<8} {r.hit_rate:>8.3f} {r.evictions:>9}"
                  f" {r.passes_over_budget:>18}")
    print(f"invariants held at every pass ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
