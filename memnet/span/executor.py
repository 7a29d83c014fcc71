"""Running layers [start, end) of a loaded model on hidden states, with a per-session KV cache
that can be seeded from an activation cube's own tensors for those layers (docs/design §5a: two
spans seeded from a cube reproduce the full model's logits within 5e-5).

The math is the model's own decoder layers, called as transformers' LlamaModel.forward calls
them (rotary embeddings from the positions, the cache updated in place); only the mask is built
here, because the span's first layer is not layer 0 (transformers reads the cache length from
layer 0). The client keeps the embeddings and the LM head (embed / head below).
"""

from __future__ import annotations

from typing import Any

from memnet.errors import PolicyError
from memnet.model import kv
from memnet.model.loader import LoadedModel
from memnet.model.segments import Segments


class SpanExecutor:
    def __init__(self, loaded: LoadedModel, start: int, end: int):
        n = loaded.model.config.num_hidden_layers
        if not 0 <= start < end <= n:
            raise PolicyError(f"layers [{start}, {end}) are not within the model's {n}")
        self.loaded, self.start, self.end = loaded, start, end
        self.hidden_size = int(loaded.model.config.hidden_size)
        self._base = loaded.model.model
        self.layers = list(self._base.layers[start:end])

    def new_cache(self) -> Any:
        from memnet.model.runtime import transformers

        return transformers.DynamicCache(config=self.loaded.model.config)

    def length(self, cache: Any) -> int:
        layer = cache.layers[self.start]
        return 0 if getattr(layer, "keys", None) is None or not layer.is_initialized else int(layer.keys.shape[-2])

    def seed(self, cache: Any, payload: Segments, meta: dict[str, Any], n_use: int) -> None:
        """Fill this span's layers of cache with the cube's first n_use positions (the payload's
        header and this span's tensors must be present; kv checks names, dtypes and shapes)."""
        kv.fill_layers(cache, payload, meta, self.loaded, n_use, range(self.start, self.end))

    def forward(self, cache: Any, hidden: Any, position: int) -> Any:
        """Hidden states [1, T, H] at positions [position, position + T) through this span's
        layers, appending to cache (rewound to position first if it holds more)."""
        from memnet.model.runtime import torch

        tokens = hidden.shape[1]
        extra = self.length(cache) - position
        if extra > 0:  # a rewind: drop what came after position (crop takes how many to remove)
            for index in range(self.start, self.end):
                cache.layers[index].crop(-extra)
        position_ids = torch.arange(position, position + tokens).unsqueeze(0)
        mask = None
        if tokens > 1 and position > 0:  # new rows see every cached key and the causal part of their own
            mask = torch.ones((tokens, position + tokens), dtype=torch.bool).tril(diagonal=position)[None, None]
        with torch.inference_mode():
            embeddings = self._base.rotary_emb(hidden, position_ids=position_ids)
            for layer in self.layers:
                hidden = layer(hidden, attention_mask=mask, position_embeddings=embeddings,
                               position_ids=position_ids, past_key_values=cache, use_cache=True)
        return hidden


def embed(loaded: LoadedModel, ids: list[int]) -> Any:
    """The client's side before the first span: token embeddings [1, T, H]."""
    from memnet.model.runtime import torch

    with torch.inference_mode():
        return loaded.model.model.embed_tokens(torch.tensor([ids]))


def head(loaded: LoadedModel, hidden: Any) -> Any:
    """The client's side after the last span: the final norm and the LM head on the last
    position, as logits [vocab]."""
    from memnet.model.runtime import torch

    with torch.inference_mode():
        return loaded.model.lm_head(loaded.model.model.norm(hidden[:, -1:, :]))[0, -1]


def to_bytes(hidden: Any) -> bytes:
    """[1, T, H] float32 -> little-endian bytes, row-major (the span protocol's hidden)."""
    return hidden[0].contiguous().numpy().astype("<f4", copy=False).tobytes()


def from_bytes(data: bytes | memoryview, tokens: int, hidden_size: int) -> Any:
    import numpy as np

    from memnet.model.runtime import torch

    array = np.frombuffer(data, dtype="<f4").reshape(tokens, hidden_size)
    return torch.from_numpy(array.copy()).unsqueeze(0)
