"""Drive the consolidation policy (memnet/scheduler/consolidation.py) over simulated days: which
memory sets become adapters, within the daily CPU budget and the cap on adapters, as sets get
used, change their notes, and go cold.

The universe: S memory sets with Zipf(1) popularity; each simulated hour brings asks, each one
use of a set. A set's notes change now and then (a new version: its adapter is superseded and it
starts again from zero uses). Each hour one upkeep pass runs, exactly as the daemon's does:
demotions, then the policy's next candidate is distilled if the day's budget allows. A
distillation costs a log-normal number of CPU seconds (median --train-cpu, measured with
scripts/bench_consolidate.py) and is stopped when it would pass the budget (the daemon's child
runs under RLIMIT_CPU = what is left); it passes its gate with probability --pass-rate. The
invariants are asserted at every pass:
  - the CPU spent in a UTC day never exceeds the budget;
  - the active adapters never exceed the cap;
  - no active adapter has changed notes (never answer from stale facts).
Reported: adapters made, discarded and stopped; the share of uses answered by an adapter; CPU
spent per day.

    python -m simulations.consolidation_sim [--sets 200] [--days 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
from dataclasses import dataclass, replace
from itertools import accumulate

from memnet.config import ConsolidationSettings
from memnet.scheduler import consolidation as policy
from memnet.scheduler.consolidation import Record, SetFacts

HOUR, DAY = 3600, 86400
START = 1_790_006_400     # a UTC midnight


@dataclass(frozen=True)
class Workload:
    sets: int = 200
    days: int = 30
    asks_per_hour: int = 20
    change_per_day: float = 0.02     # chance a set's notes get a new version on a given day
    train_cpu: float = 130.0         # median CPU seconds of one distillation
    pass_rate: float = 0.6
    seed: int = 1


@dataclass
class Result:
    made: int = 0
    discarded: int = 0
    stopped: int = 0
    uses: int = 0
    by_adapter: int = 0
    cpu_by_day: dict[int, float] | None = None
    max_active: int = 0


def run(w: Workload, config: ConsolidationSettings) -> Result:
    rng = random.Random(w.seed)
    weights = list(accumulate(1 / (rank + 1) for rank in range(w.sets)))
    keys = [i.to_bytes(32, "big") for i in range(w.sets)]
    uses = {k: 0 for k in keys}
    last = {k: 0 for k in keys}
    version = {k: 0 for k in keys}             # notes version the record was made from
    records: dict[bytes, Record] = {}
    made_from: dict[bytes, int] = {}
    cpu: dict[int, float] = {}
    result = Result(cpu_by_day=cpu)
    for hour in range(w.days * 24):
        now = START + hour * HOUR
        if hour % 24 == 0:
            for k in keys:
                if rng.random() < w.change_per_day:
                    version[k] += 1
                    uses[k] = 0                  # a new memory set key in reality: counted afresh
        for _ in range(w.asks_per_hour):
            k = keys[bisect.bisect_left(weights, rng.random() * weights[-1])]
            uses[k] += 1
            last[k] = now
            result.uses += 1
            r = records.get(k)
            if r is not None and r.state == policy.ACTIVE and made_from[k] == version[k]:
                result.by_adapter += 1
                records[k] = replace(r, last_used=now)
        live = {k: made_from.get(k) == version[k] for k in records}
        for t in policy.demotions(records.values(), live, now, config):
            records[t.set_key] = replace(records[t.set_key], state=t.new_state, at=now, reason=t.reason)
        day = policy.day_of(now)
        facts = [SetFacts(k, uses[k], last[k], notes=(b"n",), notes_live=True) for k in keys if uses[k]]
        key = policy.next_candidate(facts, records, cpu.get(day, 0.0), config, now)
        if key is not None:
            cost = rng.lognormvariate(math.log(w.train_cpu), 0.3)
            left = policy.remaining_cpu(cpu.get(day, 0.0), config)
            if cost > left:
                cpu[day] = cpu.get(day, 0.0) + left
                records[key] = Record(key, policy.DISCARDED, now, reason="stopped: over the day's CPU budget")
                result.stopped += 1
            else:
                cpu[day] = cpu.get(day, 0.0) + cost
                passed = rng.random() < w.pass_rate
                records[key] = Record(key, policy.ACTIVE if passed else policy.DISCARDED, now,
                                      adapter=b"a" + key[:8] if passed else None, accuracy=0.9 if passed else 0.4)
                made_from[key] = version[key]
                result.made += passed
                result.discarded += not passed
        active = [k for k, r in records.items() if r.state == policy.ACTIVE]
        result.max_active = max(result.max_active, len(active))
        assert cpu.get(day, 0.0) <= config.cpu_budget_per_day + 1e-6, "daily CPU budget exceeded"
        assert len(active) <= config.max_adapters, "adapter cap exceeded"
        assert all(made_from[k] == version[k] for k in active), "an adapter with changed notes is still active"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    w = Workload(sets=args.sets, days=args.days, seed=args.seed)
    print(f"{w.sets} memory sets, Zipf(1), {w.asks_per_hour} asks/hour, {w.days} days; distillation "
          f"{w.train_cpu:.0f} CPU-s median, gate pass rate {w.pass_rate:.0%}")
    print("budget/day  cap  made  discarded  stopped  uses by adapter  CPU/day max")
    for budget, cap in ((300.0, 4), (900.0, 4), (900.0, 16), (3600.0, 16)):
        config = ConsolidationSettings(cpu_budget_per_day=budget, max_adapters=cap)
        r = run(w, config)
        print(f"{budget:>9.0f} s {cap:>4} {r.made:>5} {r.discarded:>10} {r.stopped:>8} "
              f"{r.by_adapter / r.uses:>15.1%} {max(r.cpu_by_day.values(), default=0):>10.0f} s")


if __name__ == "__main__":
    main()
