"""Generation that reuses a cached prefix: the longest one in the local store, else in the swarm,
fetched only when that is measured to be faster than recomputing it.

    generate(store, gate, perf, loaded, ids, options, swarm=None) -> Generation

The gate decides which cubes may be used (trust, revocations) and remembers what it refused; the
perf book holds this node's measured costs. The swarm is anything with find_prefix and get (the
CLI passes the daemon's control client wrapper): this layer knows cubes, the store and the
model, not the network.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from memnet.cube import cid, manifest as manifest_mod
from memnet.cube import prefix
from memnet.errors import FetchDeadline, FetchError, MemnetError, UsageError
from memnet.governance.gate import Gate
from memnet.local import Publisher
from memnet.model import batch, kv, kv_stream, perf, sampling
from memnet.model.loader import LoadedModel
from memnet.model.segments import Segments
from memnet.store import Store

MIN_REUSE = 16  # fewer cached tokens than this save less than the lookup costs


class Swarm(Protocol):
    def find_prefix(self, probes: list[list[bytes]]) -> list[tuple[bytes, bytes]]:
        """For lists of prompt prefix keys (one list per salt), authenticated (cube id, manifest
        bytes) of cubes that peers hold under the longest key found."""

    def get(self, cube_id: bytes, deadline: float | None = None) -> tuple[int, float, str]:
        """Fetch a cube into the local store: (bytes moved, seconds, peer it mostly came from);
        FetchDeadline when it has not finished within deadline seconds."""


@dataclass
class Options:
    max_new_tokens: int = 64
    dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16", "int8")  # preference on ties
    adapter: bytes | None = None
    use_local: bool = True
    use_swarm: bool = True
    check: bool = False         # also run the full prefill and compare the first logits
    fetch: str = "auto"         # auto: measured costs decide; always; never (swarm lookup only)
    boundaries: tuple[int, ...] = ()  # prompt lengths where a cached prefix likely ends (a memory layout)
    sampling: sampling.Sampling | None = None  # None: greedy
    prefill_chunk: int = 0      # > 0: prefill this many tokens per step (a server interleaves requests; read per chunk)
    overlap: bool = True        # a fetched cube feeds the first forward layer by layer as it arrives (kv_stream)


@dataclass
class Candidate:
    cube_id: bytes
    meta: dict[str, Any]
    size: int
    usable: int
    local: bool
    manifest: manifest_mod.Manifest | None = None  # a remote cube's authenticated manifest (its chunk list)


@dataclass
class Generation:
    text: str
    new_ids: list[int]
    prompt_tokens: int
    reused: int = 0
    source: str = "none"          # none | local | peer
    peer: str | None = None       # the PeerID most of a fetched cube came from
    cube_id: bytes | None = None
    dtype: str | None = None
    ttft: float = 0.0
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    decision: str = ""
    max_logit_diff: float | None = None
    same_top1: bool | None = None
    model_load_seconds: float = 0.0   # not part of TTFT: the model is loaded once per process
    cache: Any = field(default=None, repr=False)  # the final KV cache (prompt + answer), for promotion
    route: list[dict[str, Any]] = field(default_factory=list)  # distributed: the span servers, in order
    failovers: int = 0                # distributed: span servers replaced mid-generation
    finish: str = ""                  # stop (a stop token) | length (max_new_tokens)

    def timing_line(self) -> str:
        if self.reused and self.route:
            reuse = f"{self.reused}/{self.prompt_tokens} prompt tokens seeded on the span servers from cube " \
                    f"{cid.to_text(self.cube_id)[:16]}… ({self.dtype})"
        elif self.reused:
            where = "from the local store" if self.source == "local" else f"from peer {self.peer}"
            where += f" (cube {cid.to_text(self.cube_id)[:16]}…, {self.dtype})"
            reuse = f"{self.reused}/{self.prompt_tokens} prompt tokens reused {where}"
        else:
            reuse = f"0/{self.prompt_tokens} prompt tokens reused (full prefill)"
        line = f"TTFT {self.ttft * 1000:.0f} ms · {reuse} · {len(self.new_ids)} tokens in {self.seconds:.2f} s"
        if self.route:
            hops = " → ".join(f"{h['peer'][-6:]}[{h['start']},{h['end']})"
                              + (f" {h['source']}" if h.get("source") not in (None, "none") else "") for h in self.route)
            line += f" · route {hops}" + (f" · {self.failovers} failover(s)" if self.failovers else "")
        if self.decision:
            line += f" · {self.decision}"
        if self.max_logit_diff is not None:
            line += f" · max |Δlogit| {self.max_logit_diff:.2e}, top-1 {'same' if self.same_top1 else 'DIFFERENT'}"
        return line


def _candidate(cube_id: bytes, m: manifest_mod.Manifest, ids: list[int], loaded: LoadedModel,
               adapter: bytes | None, local: bool, gate: Gate | None = None) -> Candidate | None:
    if m.kind != "activation":
        return None
    try:
        kv.check_binding(m.meta, loaded, adapter)
    except MemnetError:
        return None
    usable = kv.usable_tokens(m.meta, ids)
    if usable < MIN_REUSE or (gate is not None and not gate.usable(cube_id, m, local)):
        return None
    return Candidate(cube_id, m.meta, m.size, usable, local)


def probe_keys(binding: kv.Binding, ids: list[int], boundaries: tuple[int, ...] = ()) -> list[bytes]:
    """The prompt's keys a cached prefix can be found under: every full block and the whole
    prompt, plus each length inside the first block (a cube shorter than a block, such as a
    system prompt, is keyed by its own length) and the given boundaries."""
    salt = binding.salt()
    keys = prefix.prefix_keys(ids, salt, kv.BLOCK_SIZE)
    short = prefix.short_keys(ids, salt, range(MIN_REUSE, max(MIN_REUSE, min(len(ids), kv.BLOCK_SIZE))))
    return keys + short + _boundary_keys(salt, ids, boundaries)


def _boundary_keys(salt: bytes, ids: list[int], boundaries: tuple[int, ...]) -> list[bytes]:
    return [prefix.prefix_keys(ids[:n], salt, kv.BLOCK_SIZE)[-1]
            for n in sorted(set(boundaries)) if MIN_REUSE <= n < len(ids)]


def find_local(store: Store, gate: Gate, loaded: LoadedModel, ids: list[int], options: Options) -> list[Candidate]:
    found: dict[bytes, Candidate] = {}
    for dtype in options.dtypes:
        binding = kv.binding_for(loaded, options.adapter, dtype)
        for key in probe_keys(binding, ids, options.boundaries):
            for cube_id in store.find("prefix", key):
                if cube_id not in found:
                    c = _candidate(cube_id, store.manifest(cube_id), ids, loaded, options.adapter, True, gate)
                    if c is not None:
                        found[cube_id] = c
    return list(found.values())


def find_swarm(swarm: Swarm, gate: Gate, loaded: LoadedModel, ids: list[int], options: Options) -> list[Candidate]:
    salts = [kv.binding_for(loaded, options.adapter, d).salt() for d in options.dtypes]
    probes = [prefix.prefix_keys(ids, salt, kv.BLOCK_SIZE) + _boundary_keys(salt, ids, options.boundaries)
              for salt in salts]
    found = []
    for cube_id, manifest_bytes in swarm.find_prefix(probes):
        m = manifest_mod.decode(manifest_bytes, cube_id)  # authenticated: hash, then signature
        c = _candidate(cube_id, m, ids, loaded, options.adapter, False, gate)
        if c is not None:
            c.manifest = m
            found.append(c)
    return found


def best_candidate(candidates: list[Candidate], options: Options) -> Candidate | None:
    order = {d: i for i, d in enumerate(options.dtypes)}
    return max(candidates, default=None,
               key=lambda c: (c.usable, c.local, -order.get(c.meta["dtype"], 99), -c.size))


def stop_ids(loaded: LoadedModel) -> set[int]:
    ids = {loaded.tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|endoftext|>"):
        value = loaded.tokenizer.convert_tokens_to_ids(token)
        if isinstance(value, int) and value != loaded.tokenizer.unk_token_id:
            ids.add(value)
    return {i for i in ids if i is not None}


@dataclass
class PrefixChoice:
    """Which cached prefix a generation will use, decided before any byte moves."""

    best: Candidate | None = None   # local, or remote when fetch is set
    fetch: bool = False
    decision: str = ""
    saved_estimate: float | None = None  # estimated prefill seconds the cube saves (None: unmeasured)
    cost_estimate: float | None = None   # estimated seconds to fetch (if remote) and load it
    local: Candidate | None = None       # the local cube to fall back on when a fetch runs late
    deadline: float | None = None        # seconds the fetch may take (perf.fetch_deadline; None: --fetch always)
    steps: dict[str, float] = field(default_factory=dict)


def choose_prefix(store: Store, gate: Gate, book: perf.PerfBook, loaded: LoadedModel, ids: list[int],
                  options: Options, swarm: Swarm | None = None) -> PrefixChoice:
    """The longest usable cached prefix of ids, locally and then in the swarm, and whether to
    fetch a remote one (measured prefill rate against measured bandwidth and load rate)."""
    samples = book.prefill_samples(loaded.pinned.fingerprint)
    choice = PrefixChoice()
    start = time.perf_counter()
    best = best_candidate(find_local(store, gate, loaded, ids, options), options) if options.use_local else None
    choice.steps["lookup_local"] = time.perf_counter() - start
    if best is not None:
        choice.best = best
        choice.saved_estimate = perf.estimate_prefill(samples, best.usable)
        choice.cost_estimate = best.size / book.load_rate()
    rest = len(ids) - (best.usable if best is not None else 0)
    worth = options.fetch == "always" or perf.worth_asking(perf.estimate_prefill(samples, rest), book.lookup_seconds())
    if swarm is not None and options.use_swarm and rest > 1 and not worth:
        choice.decision = (f"swarm not asked: the {rest} tokens left prefill in ≈ "
                           f"{perf.estimate_prefill(samples, rest):.2f} s, a swarm lookup takes ≈ {book.lookup_seconds():.2f} s")
    elif swarm is not None and options.use_swarm and rest > 1:
        mark = time.perf_counter()
        remote = find_swarm(swarm, gate, loaded, ids, options)
        choice.steps["lookup_swarm"] = time.perf_counter() - mark
        book.add_lookup(choice.steps["lookup_swarm"])
        better = best_candidate([c for c in remote if best is None or c.usable > best.usable], options)
        if better is not None:
            saved = better.usable - (best.usable if best else 0)
            estimate = perf.estimate_prefill(samples, saved)
            fetch = perf.choose(better.size, estimate, book.bandwidth(), book.load_rate())
            choice.decision = fetch.reason()
            if options.fetch != "auto":
                choice.decision = f"{'fetch' if options.fetch == 'always' else 'recompute'} (--fetch "\
                                  f"{options.fetch}; measured: {fetch.reason()})"
            if options.fetch == "always" or (options.fetch == "auto" and fetch.fetch):
                choice.local, choice.best, choice.fetch = best, better, True
                choice.deadline = perf.fetch_deadline(estimate) if options.fetch == "auto" else None
                choice.saved_estimate = perf.estimate_prefill(samples, better.usable)
                choice.cost_estimate = fetch.fetch_seconds
    if gate.refused:  # say why a cached prefix was not used
        choice.decision = " · ".join(filter(None, [choice.decision, gate.summary()]))
    return choice


@dataclass
class Prepared:
    """A generation whose cached prefix is chosen and, if remote, fetched: what is left is the
    model's work (steps)."""

    result: Generation
    best: Candidate | None
    start: float   # perf_counter when the request began: TTFT counts from here
    fetching: kv_stream.BackgroundFetch | None = None  # best, still arriving (options.overlap)
    fallback: Candidate | None = None                  # what to use if that fetch fails


def prepare(store: Store, gate: Gate, book: perf.PerfBook, loaded: LoadedModel, ids: list[int],
            options: Options, swarm: Swarm | None = None, choice: PrefixChoice | None = None,
            start: float | None = None) -> Prepared:
    """Everything before the model runs: check the request, choose the cached prefix (or take the
    given choice, made moments before by a planner) and fetch it when that was chosen. No tensor
    is touched, so a server can run this beside another request's forward passes."""
    if not ids:
        raise UsageError("the prompt has no tokens")
    if len(ids) + options.max_new_tokens > loaded.max_tokens:
        raise UsageError(f"{len(ids)} prompt tokens + {options.max_new_tokens} new exceed the model's "
                         f"{loaded.max_tokens}")
    result = Generation("", [], len(ids))
    start = time.perf_counter() if start is None else start
    if choice is None:
        choice = choose_prefix(store, gate, book, loaded, ids, options, swarm)
    result.steps.update(choice.steps)
    result.decision = choice.decision
    best = choice.best
    if best is not None and choice.fetch:
        if swarm is None:
            raise UsageError("the plan fetches a cube from a peer, but there is no swarm to fetch from")
        if options.overlap and best.manifest is not None:  # steps() takes each layer as it arrives
            fetching = kv_stream.BackgroundFetch(lambda: swarm.get(best.cube_id, deadline=choice.deadline))
            return Prepared(result, best, start, fetching, choice.local)
        mark = time.perf_counter()
        try:
            moved, seconds, result.peer = swarm.get(best.cube_id, deadline=choice.deadline)
            book.add_fetch(moved, seconds)
        except FetchDeadline:
            # the rest of the fetch would have come later than a prefill from now (perf.keep_waiting):
            # computing is at worst twice the better choice, waiting on has no bound. The sample
            # (all of the cube in the time waited) is a rate it did not reach: the next choice is
            # warier of fetching
            book.add_fetch(best.size, time.perf_counter() - mark)
            result.decision = " · ".join(filter(None, [result.decision, (
                f"fetch abandoned after {time.perf_counter() - mark:.1f} s (the prefill it saves takes "
                f"≈ {choice.deadline:.1f} s, and the rest of the cube was coming slower): "
                f"computed instead; the daemon finishes the fetch for next time")]))
            best = choice.local
        except FetchError as exc:   # every provider failed: the answer does not need the cube
            result.decision = " · ".join(filter(None, [result.decision, f"fetch failed ({exc}): computed instead"]))
            best = choice.local
        result.steps["fetch"] = time.perf_counter() - mark
    return Prepared(result, best, start)


def steps(store: Store, book: perf.PerfBook, loaded: LoadedModel, ids: list[int], options: Options,
          prepared: Prepared) -> Generator[int | None | batch.Decode, Any, Generation]:
    """The model's part of a generation, one unit of work per step, so that a server can
    interleave requests between steps; returns the Generation. It yields:
      None          after each prefill chunk (options.prefill_chunk) that made no token;
      a token id    as each new token is chosen;
      batch.Decode  when it needs the next forward: the driver answers with send((logits,
                    cache)), from batch.forward_one or from one batched forward of several
                    requests (batch.forward_many).
    Each forward runs in its own inference_mode block: interleaved generators must not nest it."""
    from memnet.model import kv_buffer
    from memnet.model.runtime import torch

    result, best = prepared.result, prepared.best
    # one buffer per layer for the prompt and the answer, filled in place (kv_buffer)
    capacity = len(ids) + options.max_new_tokens
    cache, n_cached, feed = kv_buffer.new_cache(loaded.model, capacity), 0, None
    if best is not None and prepared.fetching is not None:
        feed = kv_stream.LayerFeed(store, best.manifest, best.usable, cache, prepared.fetching)
        n_cached = best.usable
        result.reused, result.cube_id, result.dtype, result.source = n_cached, best.cube_id, best.meta["dtype"], "peer"
    elif best is not None:
        cache, n_cached = _load(store, book, loaded, best, capacity, result)
    compute = 0.0   # the prefill's own seconds, without the time other requests' steps took
    begin = n_cached
    while begin < len(ids):
        # read at every chunk: a server chunks only while other requests wait (a chunked prefill
        # costs 15-30 % more here: each chunk attends to the cache through a mask)
        mark = time.perf_counter()
        end = min(begin + (options.prefill_chunk or len(ids)), len(ids))
        hooks, threads = [], torch.get_num_threads()
        try:
            if feed is not None:  # layer 0 now (the mask is sized from it), the others as the forward reaches them
                feed.fill(0)
                hooks = feed.hooks(list(loaded.model.model.layers))
                # leave a core to the daemon still receiving the cube (Noise and hashing are CPU
                # work): with every core, the fetch and the forward slow each other down
                torch.set_num_threads(max(1, threads - 1))
            with torch.inference_mode():
                # logits of the last position only: the others are never used, and at 2048 tokens the
                # vocabulary projection of every position would be a quarter of the prefill
                out = loaded.model(input_ids=torch.tensor([ids[begin:end]]), past_key_values=cache,
                                   position_ids=torch.arange(begin, end).unsqueeze(0), use_cache=True,
                                   logits_to_keep=1)
        except FetchError as exc:  # the cube stopped arriving: compute instead, as a failed fetch does
            book.add_fetch(best.size, time.perf_counter() - prepared.fetching.started)
            why = "ran past the prefill it saves" if isinstance(exc, FetchDeadline) else f"failed ({exc})"
            result.decision = " · ".join(filter(None, [result.decision, f"fetch {why}: computed instead"]))
            feed, best = None, prepared.fallback
            result.reused, result.cube_id, result.dtype, result.source = 0, None, None, "none"
            cache, n_cached = kv_buffer.new_cache(loaded.model, capacity), 0
            if best is not None:
                cache, n_cached = _load(store, book, loaded, best, capacity, result)
            begin = n_cached
            continue
        finally:
            for hook in hooks:
                hook.remove()
            torch.set_num_threads(threads)
        cache = out.past_key_values
        compute += time.perf_counter() - mark
        begin = end
        if end < len(ids):
            yield None
    logits = out.logits[0, -1]
    pick = sampling.picker(options.sampling)
    next_id = pick(logits)
    result.ttft = time.perf_counter() - prepared.start
    result.steps["prefill"] = compute
    if feed is not None:   # every layer came: the fetch's own end is not part of the first token
        _finish_stream(store, book, feed, best, result)
    if n_cached == 0:
        book.add_prefill(loaded.pinned.fingerprint, len(ids), compute)
    if options.check:
        with torch.inference_mode():
            full = loaded.model(input_ids=torch.tensor([ids]), use_cache=False, logits_to_keep=1).logits[0, -1]
        result.max_logit_diff = float((full - logits).abs().max())
        result.same_top1 = int(full.argmax()) == int(logits.argmax())
    stops, position = stop_ids(loaded), len(ids)
    while len(result.new_ids) < options.max_new_tokens and next_id not in stops:
        result.new_ids.append(next_id)
        yield next_id
        if len(result.new_ids) == options.max_new_tokens:
            break
        logits, cache = yield batch.Decode(next_id, position, cache)  # the driver runs the forward
        position += 1
        next_id = pick(logits)
    result.finish = "length" if len(result.new_ids) == options.max_new_tokens else "stop"
    result.seconds = time.perf_counter() - prepared.start
    result.text = loaded.decode(result.new_ids)
    result.cache = cache
    return result


def _load(store: Store, book: perf.PerfBook, loaded: LoadedModel, best: Candidate, capacity: int,
          result: Generation) -> tuple[Any, int]:
    """A stored cube's first best.usable positions as an in-place cache with room for capacity."""
    mark = time.perf_counter()
    cache = store.with_payload_views(
        best.cube_id, lambda views: kv.cache_from_payload(Segments(views), best.meta, loaded, best.usable, capacity))
    load_seconds = time.perf_counter() - mark
    result.steps["load"] = load_seconds
    book.add_load(best.size, load_seconds)
    store.record_access(best.cube_id)
    result.reused, result.cube_id, result.dtype = best.usable, best.cube_id, best.meta["dtype"]
    result.source = "local" if best.local else "peer"
    return cache, best.usable


def _finish_stream(store: Store, book: perf.PerfBook, feed: kv_stream.LayerFeed, best: Candidate,
                   result: Generation) -> None:
    """The fetch that fed the first forward: its figures, once it has committed the cube."""
    result.steps["load"] = feed.loading
    result.steps["stream_wait"] = feed.waited
    try:
        moved, seconds, result.peer = feed.fetch.wait()
        book.add_fetch(moved, seconds)
        store.record_access(best.cube_id)
    except MemnetError as exc:  # every layer had come, checked: the answer stands
        result.decision = " · ".join(filter(None, [result.decision, f"the fetch failed after the cube's "
                                                   f"last layer came ({exc}); the daemon retries for next time"]))
    result.steps["fetch"] = feed.fetch.seconds


def run(work: Generator[Any, Any, Generation], loaded: LoadedModel) -> Generation:
    """Drive steps() to the end, one request alone."""
    reply = None
    while True:
        try:
            value = work.send(reply)
        except StopIteration as done:
            return done.value
        reply = batch.forward_one(loaded, value) if isinstance(value, batch.Decode) else None


def generate(store: Store, gate: Gate, book: perf.PerfBook, loaded: LoadedModel, ids: list[int],
             options: Options, swarm: Swarm | None = None, choice: PrefixChoice | None = None) -> Generation:
    """Generate from ids, reusing the cached prefix choose_prefix picks (or the given choice,
    made moments before by a planner: TTFT then starts at the fetch or load)."""
    prepared = prepare(store, gate, book, loaded, ids, options, swarm, choice)
    return run(steps(store, book, loaded, ids, options, prepared), loaded)


def build(publisher: Publisher, book: perf.PerfBook, loaded: LoadedModel, ids: list[int], dtype: str,
          adapter: bytes | None = None, **publish_options: Any):
    """Prefill ids and publish the K/V as an activation cube (pinned): (cube, prefill seconds)."""
    kv.binding_for(loaded, adapter, dtype)  # a bad dtype fails before the prefill
    cache, _logits, seconds = kv.prefill(loaded, ids)
    book.add_prefill(loaded.pinned.fingerprint, len(ids), seconds)
    return publish_cache(publisher, loaded, cache, ids, dtype, adapter, **publish_options), seconds


def publish_cache(publisher: Publisher, loaded: LoadedModel, cache: Any, ids: list[int], dtype: str,
                  adapter: bytes | None = None, **publish_options: Any):
    """Publish the first len(ids) positions of a cache computed from position 0 over ids (and
    possibly more tokens after them: a causal cache's first positions depend on those ids alone)."""
    binding = kv.binding_for(loaded, adapter, dtype)
    payload = kv.payload_from_cache(cache, len(ids), dtype)
    return publisher.publish("activation", payload, kv.meta_for(binding, loaded, ids), **publish_options)
