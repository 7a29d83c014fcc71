"""Generation through a chain of span servers (Petals-style): the embeddings and the LM head
stay here, every transformer layer runs on the span servers the hivemind bridge routes to.

The longest cached prefix this node may inject (local store or swarm, the gate deciding, as for
local reuse) seeds the chain: each server fills its layers of the session cache from that
activation cube (its own copy, or its share fetched), so no one prefills the prefix. A server
that cannot use the seed makes the chain start from position 0, and the prompt is prefilled
through the chain instead.

    generate_distributed(store, gate, loaded, ids, options, chain, swarm=None) -> Generation

chain is anything with open/step/close (memnet/span/local_client.BridgeClient).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from memnet.cube import cid
from memnet.errors import UsageError
from memnet.governance.gate import Gate
from memnet.model import generate
from memnet.model.generate import Generation, Options, Swarm
from memnet.model.loader import LoadedModel
from memnet.span.executor import embed, from_bytes, head, to_bytes
from memnet.store import Store


class Chain(Protocol):
    def open(self, max_length: int, tokens: int, seed: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def step(self, position: int, tokens: int, hidden: bytes) -> dict[str, Any]: ...
    def close(self) -> None: ...


def seed_for(store: Store, gate: Gate, loaded: LoadedModel, ids: list[int], options: Options,
             swarm: Swarm | None) -> generate.Candidate | None:
    """The best activation cube to seed the chain with: the most usable tokens, local or found in
    the swarm, among cubes this node may inject (the servers fetch their shares themselves)."""
    found = generate.find_local(store, gate, loaded, ids, options) if options.use_local else []
    if swarm is not None and options.use_swarm:
        found += generate.find_swarm(swarm, gate, loaded, ids, options)
    return generate.best_candidate(found, options)


def generate_distributed(store: Store, gate: Gate, loaded: LoadedModel, ids: list[int], options: Options,
                         chain: Chain, swarm: Swarm | None = None,
                         hints: Callable[[generate.Candidate], list[str]] | None = None) -> Generation:
    """hints(seed candidate): memnet multiaddrs of nodes holding it (this node's own when it is
    local, the providers the prefix lookup found), passed on so servers skip a DHT lookup."""
    from memnet.model.runtime import torch

    if not ids:
        raise UsageError("the prompt has no tokens")
    if options.adapter is not None:
        raise UsageError("distributed generation runs the base model: no --lora")
    max_length = len(ids) + options.max_new_tokens
    result = Generation("", [], len(ids), source="distributed")
    start = time.perf_counter()
    best = seed_for(store, gate, loaded, ids, options, swarm)
    result.steps["lookup"] = time.perf_counter() - start
    seed = None
    if best is not None:
        key = best.meta["prefix_keys"][-1]
        seed = {"cube": best.cube_id, "tokens": best.usable, "key": key, "bytes": best.size}
        providers = hints(best) if hints else []
        if providers:
            seed["providers"] = providers[:8]
    mark = time.perf_counter()
    opened = chain.open(max_length, len(ids) - (best.usable if best else 0), seed)
    result.steps["open"] = time.perf_counter() - mark
    position = int(opened["position"])
    result.route = opened["route"]
    if position:
        result.reused, result.cube_id, result.dtype = position, best.cube_id, best.meta["dtype"]
        result.source = "distributed, seeded"
    elif best is not None:
        result.decision = f"a span server refused cube {cid.to_text(best.cube_id)[:16]}…: prefilled through the chain"
    hidden_size = int(loaded.model.config.hidden_size)
    stops = generate.stop_ids(loaded)
    mark = time.perf_counter()
    suffix = ids[position:]
    reply = chain.step(position, len(suffix), to_bytes(embed(loaded, suffix)))
    logits = head(loaded, from_bytes(reply["hidden"], len(suffix), hidden_size))
    next_id = int(logits.argmax())
    result.ttft = time.perf_counter() - start
    result.steps["prefill"] = time.perf_counter() - mark
    if options.check:
        with torch.inference_mode():
            full = loaded.model(input_ids=torch.tensor([ids]), use_cache=False, logits_to_keep=1).logits[0, -1]
        result.max_logit_diff = float((full - logits).abs().max())
        result.same_top1 = int(full.argmax()) == next_id
    position = len(ids)
    while len(result.new_ids) < options.max_new_tokens and next_id not in stops:
        result.new_ids.append(next_id)
        if len(result.new_ids) == options.max_new_tokens:
            break
        reply = chain.step(position, 1, to_bytes(embed(loaded, [next_id])))
        next_id = int(head(loaded, from_bytes(reply["hidden"], 1, hidden_size)).argmax())
        position += 1
    result.failovers = int(reply.get("failovers", 0))
    result.route = reply.get("route", result.route)
    result.seconds = time.perf_counter() - start
    result.text = loaded.decode(result.new_ids)
    return result
