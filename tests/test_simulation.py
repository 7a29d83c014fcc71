"""The swarm simulator (simulations/swarm): invariants of small seeded runs, the Kademlia model
against brute force, the find wave rule, and that the simulator drives memnet's own decisions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memnet.net.provider_wave import ProviderWave, run_wave
from simulations.swarm.kademlia import Dht
from simulations.swarm.overlay import Overlay
from simulations.swarm.params import HOUR, Scenario
from simulations.swarm.swarm import Swarm
from simulations.swarm.sweeps import walks_at
from simulations.swarm.world import World

ROOT = Path(__file__).resolve().parents[1]


def small(**options) -> Scenario:
    base = Scenario(nodes=300, hours=3, warmup=0.5 * HOUR, seed=7)
    return base.with_options(prefixes=200, cubes=100, pinned=20, pinners=2, flash_at=1.5 * HOUR,
                             flash_share=0.2, asks_per_hour=3.0, **options)


@pytest.mark.slow  # 2-3 s: the fast tier keeps the invariants run
def test_same_seed_same_result():
    short = small().with_options(hours=1.5, flash_at=HOUR)   # three runs: short, still past warm-up and a flash crowd
    a = Swarm(short).run().summary()
    b = Swarm(short).run().summary()
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    c = Swarm(short.with_options(seed=8)).run().summary()
    assert c != a


def test_invariants_hold_through_a_run():
    budget = 200 * 2**20
    swarm = Swarm(small(store_budget=budget, promote_after=1))
    delivered = []

    def audit(provider, fetcher, cube):
        # no chunk ever comes from a node that is off or does not hold the cube
        assert swarm.world.online[provider], "a chunk from an offline node"
        assert swarm.holds(provider, cube), "a chunk from a node that does not hold the cube"
        delivered.append(provider)

    swarm.on_chunk = audit
    m = swarm.run()
    assert delivered, "the run fetched nothing: the audit checked nothing"
    for node, store in swarm.stores.items():
        pinned = sum(v.size for v in store.views.values() if v.pinned)
        assert store.size <= budget or store.size == pinned, f"node {node} is over its budget"
        assert store.size == sum(c.size for c in store.cubes.values())
    for cube in swarm.library:   # a publish pins: eviction never takes the author's copy
        assert swarm.holds(cube.author, cube)
    assert m.evictions > 0, "the budget never bit: the eviction path went untested"
    s = m.summary()
    assert s["asks"] and s["prefill"]["saved_tokens"] <= s["prefill"]["prefix_tokens"]
    assert m.flash, "the flash crowd asked nothing"
    assert sum(m.probes.values()) > 0


def test_simulator_uses_memnets_fetch_or_recompute(monkeypatch):
    """The decision is memnet's model/perf.choose, not a copy: forcing it to recompute removes
    every fetch of a KV cube from the run."""
    from memnet.model import perf

    base = Swarm(small()).run().summary()["decisions"]
    assert base.get("fetch", 0) > 0
    monkeypatch.setattr(perf, "choose", lambda n, p, b, r: perf.Choice(False, 1.0, 0.5))
    forced = Swarm(small()).run().summary()["decisions"]
    assert forced.get("fetch", 0) == 0 and forced.get("recompute", 0) > 0


def _brute_nearest(world: World, servers: list[int], target: int, k: int) -> list[int]:
    return sorted(servers, key=lambda n: world.pyids[n] ^ target)[:k]


def test_window_holds_the_true_nearest_and_answers_skip_their_owner():
    import random

    sc = Scenario(nodes=5000, seed=3)
    world = World(sc, random.Random(3))
    servers = [i for i in range(sc.nodes) if world.server[i]]
    overlay = Overlay(world.pyids, servers, capacity=300)   # sparse tables: the sampled path
    rng = random.Random(1)
    for _ in range(20):
        target = rng.getrandbits(64)
        nodes, node_list = overlay.window(target, 64)
        assert node_list[:20] == _brute_nearest(world, servers, target, 20)
        askers = rng.sample(servers, 5)
        for asker, answer in zip(askers, overlay.answers(askers, nodes, 20)):
            picked = [node_list[i] for i in answer]
            assert asker not in picked and answer == sorted(answer)
            assert not set(picked) - set(servers)   # only DHT servers are in tables
    # the same pair always gives the same membership: a table is a fixed set
    nodes, _ = overlay.window(12345, 500)
    assert overlay.answers([servers[0]], nodes, 20) == overlay.answers([servers[0]], nodes, 20)


def test_compiled_answers_match_the_membership_hash_and_the_bound_changes_nothing_below_it():
    import random

    import numpy as np

    from simulations.swarm.overlay import _mix

    sc = Scenario(nodes=4000, seed=4)
    world = World(sc, random.Random(4))
    servers = [i for i in range(sc.nodes) if world.server[i]]
    overlay = Overlay(world.pyids, servers, capacity=200)
    rng = random.Random(2)
    for _ in range(20):
        nodes, node_list = overlay.window(rng.getrandbits(64), 400)
        askers, requester = rng.sample(servers, 4), rng.choice(servers)
        full = overlay.answers(askers, nodes, 20)
        for asker, answer in zip(askers, full):
            # the rule written out with numpy: a contact is in asker's table when the hash of
            # the pair falls under the threshold
            member = _mix(overlay.ids[nodes] ^ overlay.salt[asker]) <= overlay.threshold
            expected = [i for i in np.flatnonzero(member).tolist() if node_list[i] != asker][:28]
            assert answer == expected
        below = rng.randrange(1, len(nodes))
        bounded = overlay.answers(askers, nodes, 20, below, requester=requester)
        for answer, whole in zip(bounded, full):
            assert answer == [i for i in whole if node_list[i] != requester and i < below][:20]


def test_walks_find_the_nearest_when_everyone_is_online():
    sc = Scenario(nodes=2000, seed=5).with_options(offline_share=0.0, nat_share=0.0)
    row = walks_at(sc, 200)
    assert row["nearest_reached"] > 0.95 and row["dead_mean"] == 0
    assert row["rounds_mean"] <= 3


def test_dead_contacts_cost_the_query_timeout_and_are_forgotten():
    import random

    sc = Scenario(nodes=500, seed=2).with_options(nat_share=0.0, query_timeout=10.0)
    world = World(sc, random.Random(2))
    overlay = Overlay(world.pyids, list(range(sc.nodes)), sc.kad.table_capacity)
    dht = Dht(sc.kad, overlay, world)
    for n in range(sc.nodes):
        if n % 3:
            world.go_online(n, 0.0)
    walks = [dht.walk(1, target, 10.0) for target in range(0, 2**64, 2**59)]
    hit = [w for w in walks if w.dead]
    assert hit and all(w.seconds >= sc.kad.query_timeout for w in hit)   # lock-step: the round waits
    assert all(w.seconds < sc.kad.query_timeout for w in walks if not w.dead)
    assert all(not overlay.knows(1, p, world.last_start) for p in overlay.forgotten[1])
    again = [dht.walk(1, target, 20.0) for target in range(0, 2**64, 2**59)]
    assert sum(w.seconds for w in again) < sum(w.seconds for w in walks)
    dead = next(iter(overlay.forgotten[1]))
    assert dht.dead_cost(1, dead, 30.0) == 0.0                        # py-libp2p's negative cache
    assert dht.dead_cost(1, dead, 100.0) == sc.kad.query_timeout       # ... for 60 s


def test_provider_wave_rules():
    answers = [(0.1, ["a"]), (0.2, []), (10.0, None), (0.3, ["b"])]
    assert run_wave(answers, None) == (10.0, ["a", "b"])           # waits for the dead peer
    seconds, found = run_wave(answers, 0.05)
    assert seconds == pytest.approx(0.15) and found == ["a"]       # grace after the first provider
    assert run_wave([(0.1, []), (0.4, [])], 0.05) == (0.4, [])      # none found: everyone answers
    assert run_wave([], 0.5, local=["me"]) == (0.0, ["me"])
    assert run_wave([(0.1, []), (3.0, None)], 0.5, local=["p"], timeout=3.0) == (0.5, ["p"])  # known already
    assert run_wave([(0.1, []), (3.0, None)], None, local=["p"], timeout=3.0) == (3.0, ["p"])
    wave = ProviderWave(2, 1.0)
    wave.answer(0.5, ["x"])
    assert not wave.done(1.0) and wave.done(1.5) and wave.deadline() == 1.5


@pytest.mark.slow  # 2-3 s: the fast tier keeps the invariants run
def test_cli_writes_results(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "simulations.swarm", "--nodes", "200", "--hours", "1.5",
                        "--quiet", "--out", str(out), "--set", "prefixes=100", "--set", "cubes=50"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "prefill saved" in r.stdout and "events" in r.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["scenario"]["nodes"] == 200 and result["speed"]["events"] > 0
    for name in ("asks.csv", "ttft.png", "lookups.png", "load.png"):
        assert (out / name).stat().st_size > 0
    bad = subprocess.run([sys.executable, "-m", "simulations.swarm", "--set", "no_such_knob=1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "no_such_knob" in bad.stderr


def test_cli_options_reach_the_scenario_none_included():
    from simulations.swarm.cli import _parser, scenario_from

    args = _parser().parse_args(["run", "--nodes", "50", "--offline", "0.3", "--set", "find_grace=none",
                                 "--set", "query_timeout=2", "--set", "promote_after=1"])
    sc = scenario_from(args)
    assert (sc.nodes, sc.churn.offline_share, sc.policy.find_grace) == (50, 0.3, None)
    assert (sc.kad.query_timeout, sc.policy.promote_after) == (2.0, 1)
    assert scenario_from(_parser().parse_args(["run"])).policy.find_grace == Scenario().policy.find_grace == 0.5
    with pytest.raises(ValueError, match="unknown scenario option"):
        scenario_from(_parser().parse_args(["run", "--set", "no_such_knob=1"]))


def test_pinned_cubes_are_announced_again_every_reprovide_interval():
    def announces(interval: float) -> int:
        swarm = Swarm(small(always_on=1.0, reprovide_interval=interval).with_options(asks_per_hour=0.001,
                                                                                     flash_at=None))
        swarm.run()
        return swarm.metrics.announces

    # 100 published cubes (pinned by their authors) + 20 x 1 more pinner, all nodes always on:
    # the start-up announcements, then one more round per interval that fits in the 3 h
    once, hourly = announces(10 * HOUR), announces(HOUR)
    assert once == 120
    assert hourly >= 3 * once


@pytest.mark.slow  # 2-3 s: the fast tier keeps the invariants run
def test_fetch_deadline_cuts_the_tail_that_slow_uploaders_make():
    """A flash crowd of 60 fetchers shares one residential uplink: without memnet's fetch
    deadline most of them are still waiting when the run ends (counted as waiting that long)."""
    def run(deadline: bool):
        return Swarm(small(fetch_deadline=deadline)).run().summary()

    with_, without = run(True), run(False)
    assert with_["decisions"].get("fetch abandoned", 0) > 0 and "fetch abandoned" not in without["decisions"]
    assert with_["flash_crowd_seconds"]["n"] == without["flash_crowd_seconds"]["n"] > 0   # censored ones too
    assert with_["flash_crowd_seconds"]["p50"] * 10 < without["flash_crowd_seconds"]["p50"]
    assert with_["ttft"]["swarm"]["p99"] * 5 < without["ttft"]["swarm"]["p99"]
