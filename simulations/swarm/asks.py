"""One ask, as memnet's generate.choose_prefix and the daemon would run it, over simulated time.

A prefix ask: look in the local store; unless the local cube already covers all but the last
token, ask the swarm (net/prefix_plan.PrefixLookup: connected neighbours first, then one DHT
find per remaining key, all at once, then up to PROVIDERS_ASKED providers of the longest key
found); fetch a better remote cube when model/perf.choose says fetch+load beats the prefill it
saves; prefill what is left. After answering: a fetched cube is stored and announced after 2 s
(provide_fetched); a memory prefix used promote_after times becomes a KV cube (scheduler/
plan.promotion), built with one more prefill and announced.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

from memnet.config import Config
from memnet.model import perf
from memnet.net.fetch_plan import FetchPlan
from memnet.net.prefix_plan import PrefixLookup
from memnet.scheduler import plan
from simulations.swarm.workload import Cube, activation_cube

ANNOUNCE_DELAY = 2.0        # daemon/announcer.py: a fetched cube is announced after its first use
IN_FLIGHT = 16              # finds a prefix lookup runs at once (net/prefix_lookup.py)
MIP_ROUND_TRIPS = 3         # a MIP request on a new stream
_ASK_SETTINGS = Config().ask


@dataclass
class Perf:
    """A node's own measurements (HOME/perf.json): what perf.choose decides with."""

    prefill: list[list[float]] = field(default_factory=list)   # [tokens, seconds]
    fetch: list[list[float]] = field(default_factory=list)     # [bytes, seconds]
    lookup: list[list[float]] = field(default_factory=list)    # [seconds]

    def add(self, series: list, *sample: float) -> None:
        series.append(list(sample))
        del series[:-perf.KEEP]


def ask(swarm, node: int, number: int):
    w, rng = swarm.sc.workload, swarm.rng
    x = rng.random()
    if x < w.plaintext_share + w.lora_share:
        yield from cube_ask(swarm, node, x < w.lora_share)
    else:
        yield from prefix_ask(swarm, node, number, swarm.prefixes.draw(node))


# -- prefix asks ------------------------------------------------------------------------------

def prefix_ask(swarm, node: int, number: int, p: int, flash: bool = False):
    env, world, m, pol = swarm.env, swarm.world, swarm.metrics, swarm.sc.policy
    prefixes = swarm.prefixes
    start = env.now
    counting = m.counting
    n_prefix = prefixes.length(p)
    n_prompt = n_prefix + swarm.sc.workload.suffix_tokens
    uses = swarm.uses[(node, p)] = swarm.uses.get((node, p), 0) + 1
    solo_hit = uses > pol.promote_after and n_prefix >= pol.min_promote_tokens
    ttft_solo = (world.prefill_seconds(node, n_prompt - n_prefix if solo_hit else n_prompt)
                 + (n_prefix * swarm.sc.spec.kv_bytes_per_token / perf.DEFAULT_LOAD_RATE if solo_hit else 0))
    if counting:   # an ask still waiting when the run ends is counted then, as waiting that long
        swarm.in_flight[number] = (start, ttft_solo, flash)
    limit, cached = _available(swarm, node, p)
    store = swarm.store(node)
    mine = perf_of(swarm, node)

    local_id = store.by_prefix.get(p)
    worth = local_id is not None or (limit and _worth_fetching(swarm, node, p, n_prefix))
    usable = n_prefix if local_id is not None else 0
    lookup_seconds, remote = 0.0, None
    rest = n_prompt - usable
    solo = world.prefill_seconds(node, rest) + (store.cubes[local_id].size / perf.DEFAULT_LOAD_RATE
                                                 if local_id is not None else 0.0)
    ask_swarm = pol.overlap_lookup or not pol.skip_slow_lookups or perf.worth_asking(
        perf.estimate_prefill(mine.prefill, rest), perf.median([s[0] for s in mine.lookup]))
    if rest > 1 and ask_swarm:
        keys = prefixes.prompt_keys(p, number)
        lookup_seconds, found = prefix_lookup(swarm, node, keys)
        mine.add(mine.lookup, lookup_seconds)
        remote = _better(swarm, found, usable, keys)
    decision = "local" if local_id is not None else ("none" if ask_swarm else "not asked")
    fetch_seconds = 0.0
    source = None
    if remote is not None:
        cube, holders = remote
        saved = cube.tokens - usable
        choice = perf.choose(cube.size, perf.estimate_prefill(mine.prefill, saved),
                             perf.rate(mine.fetch, None), perf.DEFAULT_LOAD_RATE)
        if choice.fetch:
            yield env.timeout(lookup_seconds)
            lookup_done = env.now
            watch: dict = {}
            pulling = env.process(fetch(swarm, node, cube, holders, watch))
            deadline = perf.fetch_deadline(perf.estimate_prefill(mine.prefill, saved)) if pol.fetch_deadline else None
            if deadline is None:
                yield pulling
            else:
                # the caller's rule, looked at every tenth of the deadline (the CLI: every 0.25 s)
                yield pulling | env.timeout(deadline)
                while pulling.is_alive and perf.keep_waiting(env.now - lookup_done, watch["plan"].done_bytes,
                                                             cube.size, deadline):
                    yield pulling | env.timeout(max(0.25, deadline / 10))
            fetch_seconds = env.now - lookup_done
            moved = not pulling.is_alive and pulling.value
            if pulling.is_alive:   # model/generate: computed instead; the daemon finishes the fetch
                mine.add(mine.fetch, cube.size, fetch_seconds)
                pulling.callbacks.append(lambda e: e.value and _keep(swarm, node, cube))
                decision = "fetch abandoned"
            elif moved:
                mine.add(mine.fetch, cube.size, fetch_seconds)
                swarm.put(node, cube, pinned=False)
                if pol.provide_fetched:
                    swarm.announce_later(node, cube, ANNOUNCE_DELAY)
                usable, decision, source = cube.tokens, "fetch", cube
                lookup_seconds = 0.0   # already waited
            else:
                decision = "fetch-failed"
            if not moved:
                lookup_seconds = 0.0   # already waited
        else:
            decision = "recompute"
    if source is None and local_id is not None:
        source = store.cubes[local_id]
    if source is not None:
        store.use(source.cube_id, env.now)
    load = (source.size / perf.DEFAULT_LOAD_RATE) if source is not None else 0.0
    compute = world.prefill_seconds(node, n_prompt - usable)
    if pol.overlap_lookup:
        # the prefill ran from the start beside the lookup: the swarm's answer only counts when
        # it (fetch, load, the rest) beat it; a fetched cube is kept either way
        swarm_path = (env.now - start) + load + compute
        if decision == "fetch" and swarm_path >= solo:
            decision, usable, source = "fetch lost the race", n_prefix if local_id is not None else 0, None
            compute = world.prefill_seconds(node, rest)
        finish = min(solo, swarm_path) if decision == "fetch" else solo
        if usable == 0:
            mine.add(mine.prefill, n_prompt, compute)
            swarm.computed(p, node)
        yield env.timeout(max(0.0, start + finish - env.now))
        ttft = finish
    else:
        if usable == 0:
            mine.add(mine.prefill, n_prompt, compute)
            swarm.computed(p, node)
        yield env.timeout(lookup_seconds + load + compute)
        ttft = env.now - start
    if counting:
        m.asks["flash" if flash else ("private" if p >= swarm.sc.workload.prefixes else "shared")] += 1
        m.decisions[decision] += 1
        m.prefix_tokens += n_prefix
        m.limit_tokens += n_prefix if limit else 0
        m.worth_tokens += n_prefix if worth else 0
        m.cached_tokens += n_prefix if cached else 0
        m.saved_tokens += usable
        m.fetched_tokens += usable if decision == "fetch" else 0
        m.ttft.append(ttft)
        m.ask_lookup.append(lookup_seconds if decision != "fetch" else 0.0)
        m.ttft_solo.append(ttft_solo)
        swarm.in_flight.pop(number, None)
        if flash:
            m.flash.append(ttft)
    yield from _maybe_promote(swarm, node, p, uses, n_prefix, store, free=usable == 0)


def _keep(swarm, node: int, cube: Cube) -> None:
    """A fetch the answer stopped waiting for has finished: stored and announced all the same."""
    if swarm.world.online[node]:
        swarm.put(node, cube, pinned=False)
        if swarm.sc.policy.provide_fetched:
            swarm.announce_later(node, cube, ANNOUNCE_DELAY)


def _available(swarm, node: int, p: int) -> tuple[bool, bool]:
    """(computed by a node online now, held as a cube by a node online now): the limit."""
    online = swarm.world.online
    who = swarm.known.get(p, {}).values()
    computed = any(online[x] for nodes in who for x in nodes)
    cached = any(online[x] and swarm.stores.get(x) is not None and p in swarm.stores[x].by_prefix
                 for nodes in who for x in nodes)
    return computed, cached


def _worth_fetching(swarm, node: int, p: int, n_prefix: int) -> bool:
    """An oracle's answer: would the prefix's KV, pulled from the fastest online node that
    computed it (no lookup, its whole upload) and loaded, arrive before this node prefills it?
    Saving compute by fetching what a GPU recomputes faster would lengthen time to first token."""
    world = swarm.world
    online = world.online
    # the fastest uploader online: by rate class, fastest first
    by_rate = swarm.known.get(p, {})
    up = next((rate for rate in sorted(by_rate, reverse=True)
               if any(online[x] and x != node for x in by_rate[rate])), 0.0)
    if up <= 0:
        return False
    size = n_prefix * swarm.sc.spec.kv_bytes_per_token
    fetch = size / min(up, world.download_rate(node)) + size / perf.DEFAULT_LOAD_RATE
    return fetch < world.prefill_seconds(node, n_prefix)


def _better(swarm, found, usable: int, keys: list[bytes]):
    """The remote cube that covers the most tokens beyond `usable`, with its holders."""
    best = None
    for cube, holders in found:
        if cube.tokens > usable and (best is None or cube.tokens > best[0].tokens):
            best = (cube, holders)
    return best


def _maybe_promote(swarm, node: int, p: int, uses: int, n_prefix: int, store, free: bool):
    pol = swarm.sc.policy
    kv = plan.KvFacts(cube_id=store.by_prefix.get(p), usable=n_prefix if p in store.by_prefix else 0)
    settings = replace(_ASK_SETTINGS, promote_after=pol.promote_after, min_promote_tokens=pol.min_promote_tokens)
    promote, _why = plan.promotion(uses, settings, n_prefix, kv)
    if promote and swarm.world.online[node]:
        yield from build(swarm, node, p, free)


def build(swarm, node: int, p: int, free: bool = False):
    """A promotion (scheduler/ask.py): the answer's own cache when the ask prefilled everything
    (free), else one more prefill of the prefix; stored unpinned and announced."""
    env = swarm.env
    if not free:
        yield env.timeout(swarm.world.prefill_seconds(node, swarm.prefixes.length(p)))
    if not swarm.world.online[node]:
        return
    cube = activation_cube(swarm.prefixes, p, node, env.now, swarm.sc.spec.kv_bytes_per_token)
    swarm.put(node, cube, pinned=False)
    if swarm.metrics.counting:
        swarm.metrics.builds += 1
        swarm.metrics.build_tokens += 0 if free else cube.tokens
    swarm.announce(node, cube)


def perf_of(swarm, node: int) -> Perf:
    mine = swarm.perf.get(node)
    if mine is None:
        mine = swarm.perf[node] = Perf()
    return mine


# -- the prefix lookup -------------------------------------------------------------------------

def prefix_lookup(swarm, node: int, keys: list[bytes]) -> tuple[float, list[tuple[Cube, list[int]]]]:
    """memnet's neighbours-first lookup (PrefixLookup), timed: (seconds, [(cube, holders)])."""
    world, pol, m = swarm.world, swarm.sc.policy, swarm.metrics
    lookup = PrefixLookup([keys])
    cubes: dict[bytes, Cube] = {}
    seconds = 0.0
    neighbours = [p for p in reversed(swarm.neighbours.get(node, [])) if world.online[p]][:pol.prefix_neighbours]
    if neighbours:
        wanted = lookup.everything()
        ask_keys = lookup.keys_to_ask(wanted)
        slowest = 0.0
        for peer in neighbours:
            slowest = max(slowest, MIP_ROUND_TRIPS * world.rtt(node, peer))
            held = _held(swarm, peer, ask_keys)
            offers = lookup.offers(wanted, held)
            lookup.accept([(o, b"") for o in offers], peer)
            cubes.update({o.cube_id: swarm.stores[peer].cubes[o.cube_id] for o in offers})
        seconds += slowest
    start, dht_keys = lookup.dht_keys(0)
    if dht_keys:
        finds = {}
        waves = []
        for i, key in enumerate(dht_keys):
            f = swarm.dht.find(node, swarm.prefixes.position(key), swarm.env.now, swarm.wait_rule)
            m.walk(f.walk)
            if m.counting:
                m.find_seconds.append(f.seconds)
            finds[start + i] = f.providers
            waves.append(f.seconds)
        # IN_FLIGHT finds at a time: the lookup lasts as long as its slowest wave
        seconds += sum(max(waves[i:i + IN_FLIGHT]) for i in range(0, len(waves), IN_FLIGHT))
        index, providers = lookup.longest_found({i: ps for i, ps in finds.items() if ps})
        if index >= 0:
            wanted = lookup.wanted_after_dht(0, index)
            slowest = 0.0
            for peer in providers[:pol.providers_asked]:
                if not world.online[peer]:
                    slowest = max(slowest, swarm.dht.dead_cost(node, peer, swarm.env.now))
                    continue
                slowest = max(slowest, MIP_ROUND_TRIPS * world.rtt(node, peer) + world.rtt(node, peer) * 4)
                held = _held(swarm, peer, [keys[index]])
                offers = lookup.offers(wanted, held)
                lookup.accept([(o, b"") for o in offers], peer)
                cubes.update({o.cube_id: swarm.stores[peer].cubes[o.cube_id] for o in offers})
                swarm.remember_peer(node, peer)
            seconds += slowest
    found = [(cubes[cube_id], holders) for cube_id, _data, holders in lookup.found()]
    return seconds, found


def _held(swarm, peer: int, keys: list[bytes]) -> dict[bytes, list[bytes]]:
    store = swarm.stores.get(peer)
    if store is None:
        return {}
    return {k: store.by_key[k] for k in keys if k in store.by_key}


# -- fetching ----------------------------------------------------------------------------------

def fetch(swarm, node: int, cube: Cube, holders: list[int], progress: dict | None = None):
    """Pull the cube's chunks from its holders with memnet's FetchPlan; returns True when
    complete. Each provider's share of its upload link is split among its current uploads.
    progress["plan"] is the plan, for a caller watching done_bytes (the daemon's progress)."""
    env, world, pol, m = swarm.env, swarm.world, swarm.sc.policy, swarm.metrics
    tuning = Config().daemon.fetch
    n_chunks = max(1, -(-cube.size // pol.chunk_size))
    chunk_ids = list(range(n_chunks))
    sizes = {c: min(pol.chunk_size, cube.size - c * pol.chunk_size) for c in chunk_ids}
    fetch_plan = FetchPlan(chunk_ids, sizes, batch=tuning.chunks_per_request * tuning.requests_per_stream)
    if progress is not None:
        progress["plan"] = fetch_plan
    peers = [p for p in holders if p != node][:pol.fetch_fanout]
    started = env.now
    if not peers:
        return False

    finished: list = []

    def worker(peer: int):
        if not world.online[peer] or not swarm.holds(peer, cube):
            yield env.timeout(swarm.dht.dead_cost(node, peer, env.now) if not world.online[peer] else world.rtt(node, peer))
            fetch_plan.drop(peer, "offline" if not world.online[peer] else "lacks the cube")
            return
        swarm.remember_peer(node, peer)
        swarm.remember_peer(peer, node)
        rtt, started_at = world.rtt(node, peer), world.last_start[peer]
        yield env.timeout(rtt * MIP_ROUND_TRIPS + swarm.sc.fetch_cpu)  # stream + manifest, its checks
        while True:
            batch = fetch_plan.next_batch(peer)
            if not batch:
                return
            nbytes = sum(sizes[c] for c in batch)
            swarm.uploading[peer] += 1
            rate = min(world.upload_rate(peer) / swarm.uploading[peer], world.download_rate(node) / len(peers))
            try:
                yield env.timeout(nbytes / rate + rtt)
            finally:
                swarm.uploading[peer] -= 1
            if not world.online[peer] or world.last_start[peer] != started_at:
                fetch_plan.drop(peer, "went offline")
                return
            if not swarm.holds(peer, cube):   # evicted while we fetched: it answers "not here"
                for c in batch:
                    fetch_plan.lacks(peer, c)
                continue
            for c in batch:
                if swarm.on_chunk is not None:
                    swarm.on_chunk(peer, node, cube)
                if fetch_plan.received(peer, c):
                    m.up[peer] += sizes[c]
                    m.down[node] += sizes[c]
            if fetch_plan.complete and finished and not finished[0].triggered:
                finished[0].succeed()

    workers = [env.process(worker(p)) for p in peers]
    complete = env.event()
    watch = env.all_of(workers)
    watch.callbacks.append(lambda _e: complete.triggered or complete.succeed())
    finished.append(complete)
    yield complete   # the plan is complete (the end game beat a slow peer) or every worker stopped
    if m.counting:
        m.fetch_seconds.append(env.now - started)
    if not fetch_plan.complete:
        m.fetch_failed += 1 if m.counting else 0
        return False
    return True


# -- plaintext and LoRA cubes; pinned-cube probes -----------------------------------------------

def cube_ask(swarm, node: int, lora: bool):
    env, m = swarm.env, swarm.metrics
    kinds = [c for c in swarm.library if (c.kind == "parameter") == lora] or swarm.library
    cube = kinds[min(len(kinds) - 1, _zipf_index(swarm, len(kinds)))]
    if swarm.holds(node, cube):
        m.cube_asks["local"] += 1 if m.counting else 0
        return
    f = swarm.dht.find(node, cube.own_key, env.now, swarm.wait_rule)
    m.walk(f.walk)
    yield env.timeout(f.seconds)
    ok = (yield env.process(fetch(swarm, node, cube, f.providers))) if f.providers else False
    if ok:
        swarm.put(node, cube, pinned=True)   # memnet get pins what it fetched
        if swarm.sc.policy.provide_fetched:
            swarm.announce_later(node, cube, ANNOUNCE_DELAY)
    if m.counting:
        m.cube_asks["fetched" if ok else ("no provider" if not f.providers else "failed")] += 1


def _zipf_index(swarm, n: int) -> int:
    cum = swarm.prefixes.cum
    x = swarm.rng.random() * cum[min(n, len(cum)) - 1]
    return bisect.bisect_right(cum, x)


def probe(swarm, node: int, cube: Cube) -> None:
    """Can a node find a live holder of a pinned cube? ok, unavailable (no holder online: no DHT
    could help), or lost (a holder is online but the find did not name one)."""
    m, world = swarm.metrics, swarm.world
    f = swarm.dht.find(node, cube.own_key, swarm.env.now, swarm.wait_rule)
    m.walk(f.walk)
    live = [p for p in f.providers if world.online[p] and swarm.holds(p, cube)]
    if live or swarm.holds(node, cube):
        m.probes["ok"] += 1
        m.probe_seconds.append(f.seconds)
    elif any(world.online[x] and swarm.holds(x, cube) for x in swarm.holders_of(cube)):
        m.probes["lost"] += 1
    else:
        m.probes["unavailable"] += 1
