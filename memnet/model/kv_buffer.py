"""A KV cache filled in place: each layer's keys and values live in one buffer preallocated for
the prompt and the new tokens, and every forward writes its positions into it.

transformers' DynamicLayer concatenates the whole cache with the new positions on every forward:
a 16-token suffix on a 2048-token cube copies 94 MB across SmolLM2's 30 layers (12 ms of a
~120 ms suffix here), and every decode step copies the whole cache again. Here a layer's keys
and values are views of the first `length` positions of its buffers, so attention reads the
cache where it lies and a forward writes only its own positions. A buffer that runs out of room
grows by doubling (one copy), so a caller that guessed the length too short stays correct.
"""

from __future__ import annotations

from typing import Any

from memnet.model.runtime import torch, transformers
from transformers.cache_utils import DynamicLayer  # noqa: E402  (after runtime: offline, quiet)


class InPlaceLayer(DynamicLayer):
    """A DynamicLayer whose keys/values are views of preallocated [batch, heads, capacity, dim]
    buffers; everything that reads layer.keys / layer.values (payloads, batching) sees the
    same shapes as before."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = max(1, capacity)
        self.length = 0
        self._keys: Any = None
        self._values: Any = None

    def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._allocate(key_states, value_states, self.capacity)
        self.is_initialized = True

    def _allocate(self, key_states: Any, value_states: Any, capacity: int) -> None:
        batch, heads, _, key_dim = key_states.shape
        keys = torch.empty((batch, heads, capacity, key_dim), dtype=self.dtype, device=self.device)
        values = torch.empty((batch, heads, capacity, value_states.shape[-1]), dtype=self.dtype, device=self.device)
        if self.length:
            keys[:, :, :self.length] = self._keys[:, :, :self.length]
            values[:, :, :self.length] = self._values[:, :, :self.length]
        self._keys, self._values, self.capacity = keys, values, capacity
        self._expose()

    def _expose(self) -> None:
        self.keys = self._keys[:, :, :self.length]
        self.values = self._values[:, :, :self.length]

    def reserve(self, key_states: Any, value_states: Any, n: int) -> tuple[Any, Any]:
        """Room for n more positions: writable views of them, shaped like key_states/value_states
        but n long (a cube loader converts its tensors straight into these)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + n
        if end > self.capacity or self._keys.shape[0] != key_states.shape[0]:
            self._allocate(key_states, value_states, max(end, 2 * self.capacity))
        return self._keys[:, :, self.length:end], self._values[:, :, self.length:end]

    def commit(self, n: int) -> None:
        """The n reserved positions are written: they are now part of the cache."""
        self.length += n
        self._expose()

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        n = key_states.shape[-2]
        keys, values = self.reserve(key_states, value_states, n)
        keys.copy_(key_states)
        values.copy_(value_states)
        self.commit(n)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes how many positions to remove, as a negative number")
        self.length = max(0, self.length + tokens_to_remove)
        if self.is_initialized:
            self._expose()

    def reset(self) -> None:
        self.length = 0
        if self.is_initialized:
            self._expose()


def new_cache(loaded_model: Any, capacity: int) -> Any:
    """An empty DynamicCache for the model whose layers fill in place, sized for capacity positions."""
    cache = transformers.DynamicCache(config=loaded_model.config)
    cache.layers = [InPlaceLayer(capacity) for _ in cache.layers]
    return cache
