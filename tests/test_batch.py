"""Batched decode steps (memnet/model/batch.py) give what each request gets alone: requests of
different lengths, left-padded into one forward, on the tiny model and on the real SmolLM2."""

from __future__ import annotations

import pytest

from memnet import home
from memnet.model import batch, generate, loader


def run_alone(loaded, node, ids, n):
    options = generate.Options(max_new_tokens=n, use_swarm=False, use_local=False)
    return generate.generate(node.store, node.gate(), node.perf, loaded, ids, options).new_ids


def run_batched(loaded, node, prompts, n):
    """Each prompt's generation driven in lockstep: every decode step of all of them in one forward."""
    options = generate.Options(max_new_tokens=n, use_swarm=False, use_local=False)
    works = []
    for ids in prompts:
        prepared = generate.prepare(node.store, node.gate(), node.perf, loaded, ids, options)
        works.append(generate.steps(node.store, node.perf, loaded, ids, options, prepared))
    results, pending, logits_seen = [None] * len(works), [None] * len(works), []
    replies = [None] * len(works)
    while any(r is None for r in results):
        for i, work in enumerate(works):
            while results[i] is None and pending[i] is None:
                try:
                    value = work.send(replies[i])
                except StopIteration as done:
                    results[i] = done.value
                    break
                replies[i] = None
                if isinstance(value, batch.Decode):
                    pending[i] = value
        ready = [i for i in range(len(works)) if pending[i] is not None]
        if ready:
            out = batch.forward_many(loaded, [pending[i] for i in ready])
            for i, reply in zip(ready, out):
                replies[i], pending[i] = reply, None
                logits_seen.append((i, reply[0]))
    return [r.new_ids for r in results], logits_seen


def check(loaded, node, texts, n):
    from memnet.model.runtime import torch

    prompts = [loaded.encode(t) for t in texts]
    assert len({len(p) for p in prompts}) > 1                         # different lengths: padding is exercised
    alone = [run_alone(loaded, node, ids, n) for ids in prompts]
    together, logits = run_batched(loaded, node, prompts, n)
    assert together == alone
    # the batched logits against the same request's own forward at that step
    ids = prompts[0] + alone[0]
    with torch.inference_mode():
        full = loaded.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    first = [lg for i, lg in logits if i == 0]
    for step, lg in enumerate(first):
        assert float((lg - full[len(prompts[0]) + step]).abs().max()) < 1e-4


def test_batched_steps_equal_single_steps_on_the_tiny_model(tiny, node):
    check(tiny, node, ["a", "hello there, how are you", "one two three four five six seven", "x y"], 12)


def test_a_batch_over_the_size_cap_steps_one_by_one(tiny, node, monkeypatch):
    monkeypatch.setattr(batch, "MAX_BATCH_TOKENS", 8)
    check(tiny, node, ["a", "hello there, how are you"], 6)


@pytest.mark.slow
def test_batched_steps_on_smollm2(tmp_path, monkeypatch, smollm2_models_dir):
    monkeypatch.setenv("MEMNET_MODELS", str(smollm2_models_dir))
    node = home.init(tmp_path / "smol")
    loaded = loader.load(node.models.pin("smollm2")[0])
    check(loaded, node, ["The capital of France is", "Write a haiku about the sea.", "1, 2, 3,"], 10)
