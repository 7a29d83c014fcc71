"""The simulator's prediction for a loopback swarm of real daemons (scripts/validate_sim.py):
the same number of nodes, all DHT servers on one machine, a share of them hung (SIGSTOP), the
same query timeout and find grace; finds of freshly provided keys."""

from __future__ import annotations

import random
import statistics

from simulations.swarm.kademlia import Dht
from simulations.swarm.overlay import Overlay, position
from simulations.swarm.params import Scenario
from simulations.swarm.world import World
from memnet.net.provider_wave import run_wave


def predict(nodes: int, keys: int, stopped: float, rpc_cpu: float, query_timeout: float,
            grace: float | None, seed: int = 1, overhead: float = 0.0, table: float | None = None,
            provider_rpc_cpu: float | None = None) -> dict:
    """table: how many peers a daemon's routing table holds (measured; None: everyone);
    rpc_cpu and provider_rpc_cpu: the CPU of a FIND_NODE and of a GET_PROVIDERS answer."""
    sc = Scenario(nodes=nodes, seed=seed, loopback=True, nat_share=0.0).with_options(
        rpc_cpu=rpc_cpu, provider_rpc_cpu=provider_rpc_cpu, query_timeout=query_timeout, always_on=1.0,
        offline_share=0.0, dead_hung=True)
    rng = random.Random(seed)
    world = World(sc, rng)
    # a table of `table` peers of the nodes - 1 others: the overlay draws each pair's knowledge
    # with probability capacity / servers, servers counting the node itself
    capacity = round(table * nodes / (nodes - 1)) if table else sc.kad.table_capacity
    overlay = Overlay(world.pyids, list(range(nodes)), capacity)
    dht = Dht(sc.kad, overlay, world)
    for n in range(nodes):
        world.go_online(n, 0.0)
    hung = rng.sample(range(nodes), int(round(stopped * nodes)))
    live = [n for n in range(nodes) if n not in set(hung)]
    rows = []
    now = 100.0
    for k in range(keys):
        p, q = rng.sample(live, 2)
        key = position(b"validate/%d/%d" % (seed, k))
        for h in hung:            # hung after the swarm formed: in every table, never answering
            world.online[h] = 0
        dht.provide(p, [key], now)
        f = dht.find(q, key, now + 1, lambda answers, local: run_wave(answers, grace, local, query_timeout))
        rows.append({"rounds": f.walk.rounds, "queries": f.walk.queries, "walk_s": f.walk.seconds,
                     "find_s": f.seconds + overhead, "found": p in f.providers})
        now += 100.0   # past py-libp2p's 60 s negative cache, as between the real script's keys
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    return {"n": len(rows), "rounds": med("rounds"), "queries": med("queries"), "walk_s": med("walk_s"),
            "find_s": med("find_s"), "found": sum(1 for r in rows if r["found"]) / len(rows), "rows": rows}


def predict_fetch(nodes: int, sizes: list[int], fetch_cpu: float, mbps: float, seed: int = 1) -> dict:
    """Fetch times of cubes of the given sizes, each from one provider, through the simulator's
    own fetch (asks.fetch: memnet's FetchPlan, the loopback link of the calibrated rate)."""
    from simulations.swarm.swarm import Swarm
    from simulations.swarm.asks import fetch
    from simulations.swarm.workload import Cube

    sc = Scenario(nodes=nodes, seed=seed, loopback=True, nat_share=0.0).with_options(
        always_on=1.0, offline_share=0.0, fetch_cpu=fetch_cpu, loopback_mbps=mbps)
    swarm = Swarm(sc)
    rng = random.Random(seed)
    for n in range(nodes):
        swarm.world.go_online(n, 0.0)
    seconds = []
    for i, size in enumerate(sizes):
        p, q = rng.sample(range(nodes), 2)
        cube = Cube(cube_id=b"validate-fetch/%d" % i, kind="plaintext", size=size, author=p)
        swarm.put(p, cube, pinned=True)
        start = swarm.env.now
        done = swarm.env.process(fetch(swarm, q, cube, [p]))
        swarm.env.run(until=done)
        if not done.value:
            raise AssertionError("a simulated loopback fetch failed")
        seconds.append(swarm.env.now - start)
    return {"n": len(seconds), "fetch_s": statistics.median(seconds), "rows": seconds}
