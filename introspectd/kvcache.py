"""A KV cache whose appends write in place into preallocated room.

transformers' DynamicLayer concatenates on every decode step, copying the whole cache once per
token. Here each layer's keys/values are views into a buffer with room for the tokens still to
come; the batcher rebuilds the buffer only when rows leave or join (`set`), which it does anyway.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowableLayer(DynamicLayer):
    def __init__(self, headroom: int) -> None:
        super().__init__()
        self.headroom = headroom
        self._keys = torch.empty(0)
        self._values = torch.empty(0)
        self._length = 0

    def set(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the contents (after rows were selected, merged or trimmed)."""
        batch, heads, length, dim = keys.shape
        capacity = length + self.headroom
        self._keys = keys.new_empty(batch, heads, capacity, dim)
        self._values = values.new_empty(batch, heads, capacity, values.shape[-1])
        self._keys[:, :, :length] = keys
        self._values[:, :, :length] = values
        self._length = length
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._expose()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.set(key_states, value_states)
            return self._expose()
        n = key_states.shape[-2]
        if self._length + n > self._keys.shape[-2]:
            # Out of room: reallocate with fresh headroom.
            self.set(self._keys[:, :, : self._length], self._values[:, :, : self._length])
        self._keys[:, :, self._length : self._length + n] = key_states
        self._values[:, :, self._length : self._length + n] = value_states
        self._length += n
        return self._expose()

    def _expose(self) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self._keys[:, :, : self._length], self._values[:, :, : self._length]
        self.keys, self.values = keys, values
        return keys, values


def growable_cache(kv: list[tuple[torch.Tensor, torch.Tensor]], headroom: int) -> DynamicCache:
    cache = DynamicCache()
    layers = []
    for keys, values in kv:
        layer = GrowableLayer(headroom)
        layer.set(keys, values)
        layers.append(layer)
    cache.layers = layers  # type: ignore[assignment]
    return cache
