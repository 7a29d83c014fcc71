"""One decode step for one request, or for several at once.

A generation (memnet/model/generate.steps) asks for each next-token forward by yielding a
Decode; whoever drives it answers with (logits, cache). Alone, that is the single forward it
always was (forward_one: the CLI, exact as before). A server with several requests decoding at
the same time answers them with one batched forward (forward_many): their caches, of different
lengths, are left-padded into one and the padding masked out. On 2 cores a 135M model's decode
step is mostly per-operator overhead across 30 layers, so four requests in one forward cost
little more than one. The padded copy of every cache is made each step, so the batch is kept to
requests whose caches are short (MAX_BATCH_TOKENS in all); longer ones step alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memnet.model.loader import LoadedModel

MAX_BATCH_TOKENS = 8192   # padded cache positions in one batched step (~380 MB of fp32 K/V for SmolLM2)


@dataclass
class Decode:
    token: int       # the token to feed
    position: int    # its position
    cache: Any       # the request's DynamicCache (its length is `position`)


def forward_one(loaded: LoadedModel, step: Decode) -> tuple[Any, Any]:
    from memnet.model.runtime import torch

    with torch.inference_mode():
        out = loaded.model(input_ids=torch.tensor([[step.token]]), past_key_values=step.cache,
                           position_ids=torch.tensor([[step.position]]), use_cache=True)
    return out.logits[0, -1], out.past_key_values


def batchable(steps: list[Decode]) -> bool:
    return len(steps) > 1 and len(steps) * max(s.position for s in steps) <= MAX_BATCH_TOKENS


def forward_many(loaded: LoadedModel, steps: list[Decode]) -> list[tuple[Any, Any]]:
    """The next-token logits and cache of each request, from one forward over all of them."""
    from memnet.model.runtime import torch, transformers

    if not batchable(steps):
        return [forward_one(loaded, s) for s in steps]
    lengths = [s.position for s in steps]
    longest, batch = max(lengths), len(steps)
    padded = transformers.DynamicCache(config=loaded.model.config)
    with torch.inference_mode():
        for index, layer in enumerate(padded.layers):
            pair = []
            for which in ("keys", "values"):
                first = getattr(steps[0].cache.layers[index], which)
                shape = (batch, first.shape[1], longest, first.shape[3])
                tensor = torch.zeros(shape, dtype=first.dtype)
                for row, (s, n) in enumerate(zip(steps, lengths)):
                    tensor[row, :, longest - n:] = getattr(s.cache.layers[index], which)[0]
                pair.append(tensor)
            layer.lazy_initialization(*pair)
            layer.keys, layer.values = pair
        mask = torch.zeros((batch, longest + 1), dtype=torch.long)
        for row, n in enumerate(lengths):
            mask[row, longest - n:] = 1
        out = loaded.model(input_ids=torch.tensor([[s.token] for s in steps]), past_key_values=padded,
                           attention_mask=mask, position_ids=torch.tensor([[n] for n in lengths]), use_cache=True)
        results = []
        for row, step in enumerate(steps):
            # the new position goes into the request's own cache (in place for kv_buffer's layers)
            for index, layer in enumerate(step.cache.layers):
                done = out.past_key_values.layers[index]
                layer.update(done.keys[row:row + 1, :, -1:], done.values[row:row + 1, :, -1:])
            results.append((out.logits[row, -1], step.cache))
    return results
