"""py-libp2p 0.8.1's lookup, provide and memnet's find, as the simulator runs them.

The walk (libp2p/kad_dht/peer_routing.py find_closest_peers_network): start from the node's own
20 contacts nearest the key; each round asks up to alpha not-yet-asked peers among the current 20
nearest and waits for every answer (lock-step, so a round lasts as long as its slowest query: a
dead contact costs the full query timeout); merge, keep the 20 nearest; stop when the 20 do not
change, when nobody is left to ask, after 20 rounds or when 30 s have passed at a round's start.
memnet's find (net/discovery.py) then sends GET_PROVIDERS to all 20 at once and waits for the
wave; provide sends ADD_PROVIDER to the 20 (fire and forget; a receiver takes at most 10 per
sender per 10 s). Records live in the holders' memory: a holder that restarts has lost them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulations.swarm.overlay import Overlay
from simulations.swarm.params import Kademlia

NEGATIVE_CACHE = 60.0   # s: py-libp2p fails a dial at once for this long after one failed


@dataclass
class Walk:
    closest: list[int]
    rounds: int = 0
    queries: int = 0
    dead: int = 0
    seconds: float = 0.0


@dataclass
class Find:
    providers: list[int]
    walk: Walk
    seconds: float
    asked: int = 0
    answers: list[tuple[float, list[int]]] = field(default_factory=list)


class Records:
    """Provider records: per key, per provider, when stored and at which holders."""

    def __init__(self, kad: Kademlia):
        self.kad = kad
        self.by_key: dict[int, dict[int, tuple[float, tuple[int, ...]]]] = {}

    def add(self, key: int, provider: int, holders: tuple[int, ...], now: float) -> None:
        recs = self.by_key.setdefault(key, {})
        recs[provider] = (now, holders)
        if len(recs) > self.kad.providers_per_key:  # memnet's hygiene evicts the stalest record
            del recs[min(recs, key=lambda p: recs[p][0])]

    def at(self, holder: int, key: int, now: float, last_start: list[float]) -> list[int]:
        """The providers holder answers GET_PROVIDERS with."""
        recs = self.by_key.get(key)
        if not recs:
            return []
        ttl, started = self.kad.record_ttl, last_start[holder]
        return [p for p, (t, hs) in recs.items() if now - t < ttl and t >= started and holder in hs]

    def count(self) -> int:
        return sum(len(r) for r in self.by_key.values())


class Dht:
    """The DHT side of the swarm: walks, finds and provides over the overlay."""

    def __init__(self, kad: Kademlia, overlay: Overlay, world):
        self.kad, self.overlay, self.world = kad, overlay, world
        self.records = Records(kad)
        self._sent: dict[tuple[int, int], tuple[float, int]] = {}   # ADD_PROVIDER windows
        self._sent_pruned = 0.0

    # -- the walk ---------------------------------------------------------------------------

    def walk(self, start: int, target: int, now: float) -> Walk:
        """Peers are handled as their index in the target's window, which is their rank by
        distance: merging answers is merging sorted integers."""
        kad, overlay, world = self.kad, self.overlay, self.world
        online, last_start = world.online, world.last_start
        nodes, node_list = overlay.window(target, overlay.window_size(kad.k))
        own = [i for i in overlay.answers([start], nodes, kad.k)[0]
               if overlay.knows(start, node_list[i], last_start)][:kad.k]
        closest = own
        queried: set[int] = set()
        rounds = queries = dead = 0
        seconds = 0.0
        while rounds < kad.max_rounds and seconds < kad.lookup_budget:
            batch = [i for i in closest if i not in queried][:kad.alpha]
            if not batch:
                break
            rounds += 1
            queried.update(batch)
            queries += len(batch)
            alive = []
            waits = []
            for i in batch:
                peer = node_list[i]
                if online[peer]:
                    alive.append(peer)
                else:
                    dead += 1
                    waits.append(self.dead_cost(start, peer, now))
                    if not kad.dead_hung:   # a failed dial removes the peer from the table
                        overlay.forget(start, peer, now)
            # an answer later than the query timeout is a failure (the peer stays in the table)
            times = world.answer_times(start, alive)
            alive = [peer for peer, t in zip(alive, times) if t < kad.query_timeout]
            seconds += min(kad.query_timeout, max(times + waits, default=0.0))
            if not alive:
                continue  # every answer empty: go on while someone is left to ask
            heard = set(closest)
            # only contacts nearer than the 20th nearest so far can enter the 20
            below = closest[-1] + 1 if len(closest) >= kad.k else None
            for answer in overlay.answers(alive, nodes, kad.k, below, requester=start):
                heard.update(answer)
            merged = sorted(heard)[:kad.k]
            if merged == closest:
                break
            closest = merged
        return Walk([node_list[i] for i in closest], rounds, queries, dead, seconds)

    def dead_cost(self, node: int, contact: int, now: float) -> float:
        """What asking an offline contact costs: nothing inside the negative cache, else the
        dial: refused at once by a host whose daemon is gone (dead_refuse), else no answer
        until the timeout (a home machine that is off, a stopped process)."""
        when = self.overlay.forgotten.get(node, {}).get(contact)
        if when is not None and now - when < NEGATIVE_CACHE and self.world.last_start[contact] <= when:
            return 0.0
        return self.kad.refused_cost if self.kad.dead_refuse else self.kad.query_timeout

    # -- find and provide --------------------------------------------------------------------

    def find(self, node: int, key: int, now: float, wait) -> Find:
        """memnet's find: the walk, then GET_PROVIDERS to each of the 20 at once; `wait` decides
        when the wave is over from the (seconds, providers) answers."""
        walk = self.walk(node, key, now)
        world, last_start = self.world, self.world.last_start
        alive = [h for h in walk.closest if world.online[h]]
        answers = [(at, self.records.at(h, key, now, last_start))
                   for h, at in zip(alive, world.answer_times(node, alive, self.kad.provider_rpc_cpu))]
        answers += [(self.dead_cost(node, h, now), None) for h in walk.closest if not world.online[h]]
        local = self.records.at(node, key, now, last_start) if world.server[node] else []
        seconds, found = wait(answers, local)
        providers = list(dict.fromkeys(p for p in found if p != node))
        return Find(providers[:self.kad.providers_per_key], walk, walk.seconds + seconds, len(answers), answers)

    def provide(self, node: int, keys: list[int], now: float) -> list[Walk]:
        """Provide each key (all at once, as the announcer does); the walks, for the figures."""
        world = self.world
        if now - self._sent_pruned > 60:
            self._sent = {pair: w for pair, w in self._sent.items() if now - w[0] < 10}
            self._sent_pruned = now
        walks = []
        for key in keys:
            walk = self.walk(node, key, now)
            holders = tuple(h for h in walk.closest if world.online[h] and self._admit(node, h, now))
            self.records.add(key, node, holders, now)
            walks.append(walk)
        return walks

    def _admit(self, sender: int, receiver: int, now: float) -> bool:
        """py-libp2p's ADD_PROVIDER limit: 10 per sender per fixed 10 s window, the rest reset
        (the sender is not told)."""
        start, n = self._sent.get((sender, receiver), (now, 0))
        if now - start >= 10:
            start, n = now, 0
        self._sent[(sender, receiver)] = (start, n + 1)
        return n < self.kad.add_provider_limit
