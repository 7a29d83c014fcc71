"""Distillation: a LoRA trained on (prompt, answer) pairs, the loss on the answer's tokens only.

consolidate.py builds the pairs from a memory set: each prompt is a question *without* the
notes, each answer what the model said *with* the notes in the prompt; the adapter learns to
answer as if the notes were there. Measured here on SmolLM2-135M (2 cores): four notes, 20 pairs,
60 steps of 4 pairs at lr 2e-3 take ~70 s (~140 CPU-s), and the adapter then states the notes'
facts for paraphrased questions it never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from memnet.errors import UsageError
from memnet.governance.gate import Gate
from memnet.model import lora
from memnet.model.loader import LoadedModel
from memnet.store import Store

BATCH = 4
EVAL_PAIRS = 8
TARGETS = ("q_proj", "v_proj")


@dataclass
class Trained:
    """An adapter trained but not published: what trial() measures and Publisher.publish stores."""

    payload: bytes
    meta: dict[str, Any]
    loss_before: float
    loss_after: float
    pairs: int
    steps: int
    stats: dict[str, float] = field(default_factory=dict)


def train_pairs(store: Store, gate: Gate, loaded: LoadedModel, pairs: Sequence[tuple[list[int], list[int]]], *,
                steps: int, rank: int = 8, alpha: int = 16, targets: Sequence[str] = TARGETS, lr: float = 2e-3,
                seed: int = 0, progress: Callable[[int, int, float], None] | None = None) -> Trained:
    """Train a LoRA on (prompt ids, answer ids) pairs; the loss covers the answer ids only (they
    should end with the model's end-of-turn token, so the adapter learns to stop). Deterministic
    for a seed on one machine and thread count."""
    from memnet.model.runtime import torch

    pairs = [(list(p), list(a)) for p, a in pairs if a]
    if not pairs:
        raise UsageError("no question-answer pairs to train on")
    longest = max(len(p) + len(a) for p, a in pairs)
    if longest > loaded.max_tokens:
        raise UsageError(f"a training pair is {longest} tokens, over the model's {loaded.max_tokens}")
    config = lora.lora_config_for(loaded, rank=rank, alpha=alpha, targets=targets, steps=steps, lr=lr)
    pad = loaded.tokenizer.pad_token_id
    pad = 0 if pad is None else pad

    def batch_of(rows):
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (p, a) in enumerate(rows):   # right padding: positions stay 0.. for each row
            ids[i, :len(p) + len(a)] = torch.tensor(p + a)
            mask[i, :len(p) + len(a)] = 1
            labels[i, len(p):len(p) + len(a)] = torch.tensor(a)
        return ids, mask, labels

    draw = lora.shuffled_batches(pairs, BATCH, seed)

    def next_batch():
        return batch_of(draw())

    evaluation = [batch_of([pair]) for pair in pairs[:EVAL_PAIRS]]
    state, before, after = lora.fit(store, gate, loaded, config, next_batch, evaluation, steps=steps, lr=lr,
                                    seed=seed, progress=progress)
    payload, meta = lora.adapter_payload(loaded, config, state)
    return Trained(payload, meta, before, after, len(pairs), steps)
