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
        self.up, self.down = self._rates()
        # the extra round trip to reach each node (through a relay when it is behind NAT)
        self.relayed = [scenario.relay_rtt_ms / 1000 if x else 0.0 for x in self.nat]
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
        return self._rtt[self.region[a]][self.region[b]] + self.relayed[b]

    def answer_times(self, a: int, peers: list[int], cpu: float | None = None) -> list[float]:
        """When a's requests sent at once to peers are answered. Across the internet each is a
        stream, multistream-select and the request (rpc_round_trips), with a dial first when the
        two are not connected yet (the auto-connector keeps about `connections` of the online
        peers connected), plus the answer's CPU; on one machine (loopback) every daemon shares
        the same cores, so the answers come one CPU cost after another. cpu: an answer's CPU
        (None: kad.rpc_cpu)."""
        if cpu is None:
            cpu = self.kad.rpc_cpu
        if self.loopback:
            step = cpu
            return [self.kad.rpc_round_trips * 0.0001 + step * (i + 1) for i in range(len(peers))]
        # one loop over plain lists: walks ask millions of these
        kad, relayed, region, rnd = self.kad, self.relayed, self.region, self.rng.random
        row = self._rtt[region[a]]
        p_connected = kad.connections / max(1, self.online_count)
        rpc, dial = kad.rpc_round_trips, kad.rpc_round_trips + kad.dial_round_trips
        return [(rpc if rnd() < p_connected else dial) * (row[region[p]] + relayed[p]) + cpu for p in peers]

    def upload_rate(self, node: int) -> float:
        return self.up[node]

    def download_rate(self, node: int) -> float:
        return self.down[node]

    def _rates(self) -> tuple[list[float], list[float]]:
        """Each node's upload and download rate (bytes/s): a NAT node uploads through a relay."""
        if self.loopback:
            rate = self.scenario.loopback_mbps * MBIT
            return [rate] * self.n, [rate] * self.n
        relay = self.scenario.relay_mbps * MBIT
        up = [min(LINKS[link].up_mbps * MBIT, relay) if nat else LINKS[link].up_mbps * MBIT
              for link, nat in zip(self.link, self.nat)]
        return up, [LINKS[link].down_mbps * MBIT for link in self.link]

    def prefill_seconds(self, node: int, tokens: int) -> float:
        return tokens / self.scenario.spec.machines[self.machine[node]].prefill_tps
