"""The nodes of a simulated swarm: identity, place, link, machine, NAT, and whether online.

Plain Python lists (not numpy) for everything read one node at a time: an element of a list
reads in tens of nanoseconds, an element of a numpy array in about a microsecond.
"""

from __future__ import annotations

import hashlib
import random
from itertools import accumulate

from simulations.swarm.overlay import position
from simulations.swarm.params import LINKS, REGIONS, RTT_MS, Scenario

MBIT = 1e6 / 8


def pick(rng: random.Random, shares: list[float]) -> int:
    """An index drawn with the given weights."""
    cum = list(accumulate(shares))
    x = rng.random() * cum[-1]
    return next(i for i, c in enumerate(cum) if x < c)


class World:
    def __init__(self, scenario: Scenario, rng: random.Random):
        n = scenario.nodes
        self.scenario, self.n, self.rng = scenario, n, rng
        self.loopback = scenario.loopback
        self.kad = scenario.kad
        self.peer_ids = [hashlib.sha256(b"memnet-sim/peer/%d/%d" % (scenario.seed, i)).digest() for i in range(n)]
        self.pyids = [position(p) for p in self.peer_ids]
        self.region = [pick(rng, [r.share for r in REGIONS]) for _ in range(n)]
        self.link = [pick(rng, [link.share for link in LINKS]) for _ in range(n)]
        machines = scenario.spec.machines
        self.machine = [pick(rng, [m.share for m in machines]) for _ in range(n)]
        self.nat = [rng.random() < scenario.nat_share for _ in range(n)]
        self.server = [not x for x in self.nat]      # DHT server mode only when dialable
        self.always_on = [rng.random() < scenario.churn.always_on for _ in range(n)]
        self.online = bytearray(n)
        self.last_start = [0.0] * n                  # records held in memory die with a restart
        self.online_count = 0
        names = [r.name for r in REGIONS]
        self._rtt = [[RTT_MS.get((a, b), RTT_MS.get((b, a))) / 1000 for b in names] for a in names]

    # -- state ------------------------------------------------------------------------------

    def go_online(self, node: int, now: float) -> None:
        if not self.online[node]:
            self.online[node] = 1
            self.online_count += 1
            self.last_start[node] = now

    def go_offline(self, node: int) -> None:
        if self.online[node]:
            self.online[node] = 0
            self.online_count -= 1

    # -- costs ------------------------------------------------------------------------------

    def rtt(self, a: int, b: int) -> float:
        if self.loopback:
            return 0.0001
        extra = self.scenario.relay_rtt_ms / 1000 if self.nat[b] else 0.0  # b can only be reached via a relay
        return self._rtt[self.region[a]][self.region[b]] + extra

    def connected(self) -> bool:
        """Whether a peer picked at random is already connected (the auto-connector keeps about
        `connections` of the online peers connected)."""
        return self.rng.random() < self.kad.connections / max(1, self.online_count)

    def rpc_seconds(self, a: int, b: int) -> float:
        """One DHT request from a to b: a stream, multistream-select, the request; a dial first
        when not connected."""
        rtt = self.rtt(a, b)
        trips = self.kad.rpc_round_trips + (0 if self.connected() else self.kad.dial_round_trips)
        return trips * rtt + self.kad.rpc_cpu

    def answer_times(self, a: int, peers: list[int]) -> list[float]:
        """When a's requests sent at once to peers are answered. Across the internet each takes
        its own round trips; on one machine (loopback) every daemon shares the same cores, so
        the answers come one CPU cost after another."""
        if self.loopback:
            step = self.kad.rpc_cpu
            return [self.kad.rpc_round_trips * 0.0001 + step * (i + 1) for i in range(len(peers))]
        return [self.rpc_seconds(a, p) for p in peers]

    def upload_rate(self, node: int) -> float:
        if self.loopback:
            return self.scenario.loopback_mbps * MBIT
        rate = LINKS[self.link[node]].up_mbps * MBIT
        return min(rate, self.scenario.relay_mbps * MBIT) if self.nat[node] else rate

    def download_rate(self, node: int) -> float:
        return self.scenario.loopback_mbps * MBIT if self.loopback else LINKS[self.link[node]].down_mbps * MBIT

    def prefill_seconds(self, node: int, tokens: int) -> float:
        return tokens / self.scenario.spec.machines[self.machine[node]].prefill_tps
