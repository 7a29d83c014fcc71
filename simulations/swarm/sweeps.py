"""Sweeps over one knob: DHT walks against the swarm size, pinned-cube retrieval against the
share of nodes offline."""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import replace

from simulations.swarm.kademlia import Dht
from simulations.swarm.overlay import Overlay
from simulations.swarm.params import Scenario
from simulations.swarm.swarm import Swarm
from simulations.swarm.world import World


def walks_at(scenario: Scenario, walks: int) -> dict:
    """`walks` lookups of random keys from random online nodes in a swarm of scenario.nodes with
    scenario.churn.offline_share of them off (the stationary state of churn). Besides rounds,
    queries and seconds: the share of the 20 nearest online servers each walk ended with (Kad's
    lookups reached 18 % of the replica holders before it was fixed)."""
    rng = random.Random(scenario.seed)
    world = World(scenario, rng)
    servers = [i for i in range(scenario.nodes) if world.server[i]]
    overlay = Overlay(world.pyids, servers, scenario.kad.table_capacity)
    dht = Dht(scenario.kad, overlay, world)
    for node in range(scenario.nodes):
        if world.always_on[node] or rng.random() >= scenario.churn.offline_share:
            world.go_online(node, 0.0)
    online = [i for i in range(scenario.nodes) if world.online[i]]
    rounds, queries, seconds, dead, reached = [], [], [], [], []
    started = time.perf_counter()
    for n in range(walks):
        target = rng.getrandbits(64)
        walk = dht.walk(rng.choice(online), target, 1000.0 + n)   # the clock moves: caches expire
        _, near = overlay.window(target, overlay.window_size(scenario.kad.k))
        truth = [x for x in near if world.online[x]][:scenario.kad.k]
        reached.append(len(set(walk.closest) & set(truth)) / max(1, len(truth)))
        rounds.append(walk.rounds)
        queries.append(walk.queries)
        seconds.append(walk.seconds)
        dead.append(walk.dead)
    return {"nodes": scenario.nodes, "servers": len(servers), "walks": walks,
            "rounds_mean": statistics.fmean(rounds), "rounds_max": max(rounds),
            "queries_mean": statistics.fmean(queries),
            "seconds_p50": statistics.median(seconds), "seconds_p90": sorted(seconds)[int(0.9 * walks)],
            "dead_mean": statistics.fmean(dead), "nearest_reached": statistics.fmean(reached),
            "log2_n": math.log2(scenario.nodes), "wall_s": time.perf_counter() - started}


def lookups(base: Scenario, sizes: list[int], walks: int) -> list[dict]:
    return [walks_at(replace(base, nodes=n), walks) for n in sizes]


def retrieval(base: Scenario, shares: list[float], progress=None) -> list[dict]:
    """The whole scenario once per offline share; the pinned-cube probes of each."""
    out = []
    for share in shares:
        sc = base.with_options(offline_share=share)
        swarm = Swarm(sc)
        m = swarm.run(progress=progress)
        s = m.summary()
        out.append({"offline_share": share, "measured_offline": 1 - (s["online_share"] or 0),
                     **{k: v for k, v in s["pinned_retrieval"].items() if k != "seconds"},
                     "find_p50_s": s["pinned_retrieval"]["seconds"].get("p50")})
    return out
