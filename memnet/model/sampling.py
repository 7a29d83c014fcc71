"""How the next token is chosen from the logits: greedy, or temperature and nucleus (top-p)
sampling with an optional seed (the OpenAI API's temperature, top_p and seed).

    pick = picker(Sampling(temperature=0.7, top_p=0.9, seed=1))
    next_id = pick(logits)          # logits: the last position's, a 1-D tensor

A seeded picker draws from its own generator: the same seed and prompt give the same tokens,
whatever other requests the process runs in between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memnet.errors import UsageError

MAX_TEMPERATURE = 2.0   # the OpenAI API's range


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise UsageError(f"temperature must be between 0 and {MAX_TEMPERATURE:g}")
        if not 0.0 < self.top_p <= 1.0:
            raise UsageError("top_p must be above 0 and at most 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def picker(sampling: Sampling | None) -> Callable[[Any], int]:
    """A function from logits to the next token id."""
    from memnet.model.runtime import torch

    if sampling is None or sampling.greedy:
        return lambda logits: int(logits.argmax())
    generator = torch.Generator()
    generator.manual_seed(sampling.seed if sampling.seed is not None else int(torch.seed()))

    def pick(logits: Any) -> int:
        with torch.inference_mode():
            probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
            if sampling.top_p < 1.0:
                ordered, order = probs.sort(descending=True)
                # keep the smallest set of the likeliest tokens whose mass reaches top_p (the first always)
                keep = ordered.cumsum(0) - ordered < sampling.top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
            return int(torch.multinomial(probs, 1, generator=generator))

    return pick
