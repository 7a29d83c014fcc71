"""A simulated memnet swarm on SimPy: churn, the DHT, stores, and the population's asks.

Each node's sessions and downtimes are SimPy processes; asks arrive as one Poisson stream over
the online nodes (rate: asks_per_hour per online node); each ask is a process that waits for its
lookup, fetch and compute. DHT walks are computed in one step at the simulated time they start
(a walk takes seconds, churn moves in hours), and the seconds they would take are then waited.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import simpy

from memnet.net.provider_wave import run_wave
from simulations.swarm import asks
from simulations.swarm.kademlia import Dht
from simulations.swarm.metrics import Metrics
from simulations.swarm.overlay import Overlay
from simulations.swarm.params import Scenario
from simulations.swarm.store import NodeStore
from simulations.swarm.workload import Cube, Prefixes, library
from simulations.swarm.world import World

class CountingEnvironment(simpy.Environment):
    """SimPy's environment, counting the events it schedules (for events per second)."""

    events = 0

    def schedule(self, event, priority=simpy.core.NORMAL, delay=0):
        self.events += 1
        super().schedule(event, priority, delay)


BOOTSTRAP = 5.0        # s from start-up to the first announcements
PROBE_EVERY = 60.0     # s between pinned-cube retrieval probes


class Swarm:
    def __init__(self, scenario: Scenario):
        self.sc = scenario
        self.rng = random.Random(scenario.seed)
        self.env = CountingEnvironment()
        self.world = World(scenario, self.rng)
        servers = [i for i in range(scenario.nodes) if self.world.server[i]]
        self.overlay = Overlay(self.world.pyids, servers, scenario.kad.table_capacity)
        self.dht = Dht(scenario.kad, self.overlay, self.world)
        self.metrics = Metrics(scenario.nodes)
        self.prefixes = Prefixes(scenario, self.rng)
        self.stores: dict[int, NodeStore] = {}
        # prefix -> upload rate -> the nodes that computed or hold it (by rate: the oracle looks
        # for the fastest one online, and a popular prefix has thousands)
        self.known: dict[int, dict[float, set[int]]] = {}
        self.holders: dict[bytes, set[int]] = {}      # cube id -> nodes holding it (the truth)
        self.uses: dict[tuple[int, int], int] = {}     # (node, prefix) -> asks so far
        self.perf: dict[int, asks.Perf] = {}
        self.neighbours: dict[int, list[int]] = {}     # recent MIP peers, newest last
        self.uploading = [0] * scenario.nodes
        self.library = library(scenario, self.rng)
        self.pinned: list[Cube] = []
        self.ask_count = 0
        self.on_chunk = None   # a test's audit hook: (provider, fetcher, cube) per chunk delivered
        self.grace = scenario.policy.find_grace
        self.in_flight: dict[int, tuple[float, float, bool]] = {}   # counted prefix asks not answered yet

    # -- helpers for the flows ---------------------------------------------------------------

    def store(self, node: int) -> NodeStore:
        s = self.stores.get(node)
        if s is None:
            s = self.stores[node] = NodeStore()
        return s

    def wait_rule(self, answers, local):
        return run_wave(answers, self.grace, local, self.sc.kad.query_timeout)

    def random_online(self) -> int | None:
        if self.world.online_count == 0:
            return None
        online, n = self.world.online, self.sc.nodes
        while True:
            node = self.rng.randrange(n)
            if online[node]:
                return node

    def remember_peer(self, node: int, peer: int) -> None:
        peers = self.neighbours.setdefault(node, [])
        if peer in peers:
            peers.remove(peer)
        peers.append(peer)
        if len(peers) > 16:
            del peers[0]

    def holds(self, node: int, cube: Cube) -> bool:
        s = self.stores.get(node)
        return s is not None and s.has(cube.cube_id)

    def computed(self, p: int, node: int) -> None:
        """node computed or holds prefix p (the oracle behind the limit and worth figures)."""
        self.known.setdefault(p, {}).setdefault(self.world.up[node], set()).add(node)

    def put(self, node: int, cube: Cube, pinned: bool) -> None:
        """Store a cube and keep the store within its budget (memnet's eviction policy)."""
        s = self.store(node)
        s.put(cube, self.env.now, pinned)
        self.holders.setdefault(cube.cube_id, set()).add(node)
        if cube.prefix is not None:
            self.computed(cube.prefix, node)
        gone = s.evict(self.sc.policy.store_budget, self.sc.policy.eviction, self.env.now)
        for old in gone:
            self.holders[old.cube_id].discard(node)
        self.metrics.evictions += len(gone)

    def holders_of(self, cube: Cube) -> set[int]:
        return self.holders.get(cube.cube_id, set())

    def announce(self, node: int, cube: Cube) -> None:
        if not self.world.online[node]:
            return
        for walk in self.dht.provide(node, cube.dht, self.env.now):
            self.metrics.walk(walk)
        self.metrics.announces += 1

    def announce_later(self, node: int, cube: Cube, delay: float) -> None:
        def go(_event):
            if self.holds(node, cube):
                self.announce(node, cube)
        self.env.timeout(delay).callbacks.append(go)

    # -- processes ---------------------------------------------------------------------------

    def _churn(self, node: int):
        env, world, churn, rng = self.env, self.world, self.sc.churn, self.rng
        if world.always_on[node]:
            self._start(node)
            return
        median_down = churn.downtime_median()
        session = lambda: rng.weibullvariate(churn.session_scale, churn.session_shape)  # noqa: E731
        down = lambda: rng.lognormvariate(math.log(median_down), churn.downtime_sigma)  # noqa: E731
        if rng.random() >= churn.offline_share:     # online at the start, part-way into a session
            self._start(node)
            yield env.timeout(session() * rng.random())
            world.go_offline(node)
        else:
            yield env.timeout(down() * rng.random())
        while True:
            self._start(node)
            yield env.timeout(session())
            world.go_offline(node)
            yield env.timeout(down())

    def _start(self, node: int) -> None:
        """A daemon starts: online, its in-memory provider records gone; after bootstrap it
        announces its pinned cubes (the announcer does at start)."""
        self.world.go_online(node, self.env.now)
        s = self.stores.get(node)
        if s is not None and any(v.pinned for v in s.views.values()):
            delay = BOOTSTRAP if self.env.now > 0 else self.rng.uniform(BOOTSTRAP, 600)  # not all at once
            self.env.process(self._reprovide(node, s, delay))

    def _reprovide(self, node: int, s: NodeStore, delay: float):
        """The announcer: the pinned cubes after bootstrap, then every reprovide_interval, for as
        long as this session lasts."""
        started = self.env.now
        yield self.env.timeout(delay)
        while self.world.online[node] and self.world.last_start[node] == started:
            for c, v in list(s.views.items()):
                if v.pinned:
                    self.announce(node, s.cubes[c])
            yield self.env.timeout(self.sc.policy.reprovide_interval)

    def _arrivals(self):
        env, rate = self.env, self.sc.workload.asks_per_hour / 3600
        while True:
            yield env.timeout(self.rng.expovariate(rate * max(1, self.world.online_count)))
            node = self.random_online()
            if node is not None:
                self.ask_count += 1
                env.process(asks.ask(self, node, self.ask_count))

    def _flash(self):
        w = self.sc.workload
        yield self.env.timeout(w.flash_at)
        author = self.random_online()
        if author is None:
            return
        yield from asks.build(self, author, -1)
        for _ in range(int(w.flash_share * self.sc.nodes)):
            self.env.process(self._flash_ask(self.rng.uniform(0, w.flash_window)))

    def _flash_ask(self, delay: float):
        yield self.env.timeout(delay)
        node = self.random_online()
        if node is not None:
            self.ask_count += 1
            yield from asks.prefix_ask(self, node, self.ask_count, -1, flash=True)

    def _probes(self):
        while self.pinned:
            yield self.env.timeout(PROBE_EVERY)
            if self.metrics.counting:
                node = self.random_online()
                if node is not None:
                    asks.probe(self, node, self.rng.choice(self.pinned))

    def _count(self):
        yield self.env.timeout(self.sc.warmup)
        self.metrics.counting = True
        while True:
            self.metrics.online_samples.append(self.world.online_count / self.sc.nodes)
            yield self.env.timeout(600)

    # -- the run -----------------------------------------------------------------------------

    def setup(self) -> None:
        for node in range(self.sc.nodes):
            self.env.process(self._churn(node))
        w = self.sc.workload
        picks = self.rng.sample(range(len(self.library)), min(w.pinned, len(self.library)))
        pinned = set(picks)
        for i, cube in enumerate(self.library):
            self.put(cube.author, cube, pinned=True)       # a publish pins (memnet publish)
            if i in pinned:
                self.pinned.append(cube)
                for other in self.rng.sample(range(self.sc.nodes), max(0, w.pinners - 1)):
                    self.put(other, cube, pinned=True)
        self.env.process(self._arrivals())
        self.env.process(self._probes())
        self.env.process(self._count())
        if w.flash_at is not None and w.flash_at < self.sc.hours * 3600:
            self.env.process(self._flash())

    def run(self, progress: Callable[[float], None] | None = None, step: float = 600.0) -> Metrics:
        self.setup()
        end = self.sc.hours * 3600
        t = 0.0
        while t < end:
            t = min(end, t + step)
            self.env.run(until=t)
            if progress is not None:
                progress(t)
        m = self.metrics
        for start, solo, flash in self.in_flight.values():   # censored: waiting at least this long
            m.ttft.append(end - start)
            m.ttft_solo.append(solo)
            m.decisions["unanswered at the end"] += 1
            if flash:
                m.flash.append(end - start)
        self.in_flight.clear()
        return m
