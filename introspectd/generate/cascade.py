"""Shared-prefix attention over a slot KV cache.

Every trial of a run reads the same prompt, so the keys and values of the prompt up to its first
steered position are the same in every row. They are kept once per layer (`[1, kv_heads, P,
d]`); only what differs between rows — a steered prompt tail and the generated tokens — lives in
per-slot buffers allocated once for the whole run. Attention splits its softmax over the two
parts, so a decode step reads the shared prompt once instead of once per row, a row joins by
writing into a free slot, and a row leaves without copying anyone else's cache (transformers'
`DynamicCache` concatenates on every step and needs a full copy to drop a row).

The model's own attention modules call `SlotCache.update` and then `cascade_attention`, which
transformers dispatches to through its `AttentionInterface` while `slot_attention` is active.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from introspectd.generate.attention import plain_attention, sink_logits, soft_cap, window_mask

ATTENTION_NAME = "introspectd_cascade"


class SlotCache:
    """`prefix[layer]`: shared `(keys, values)`, `[1, kv_heads, P, d]` (P may be 0).
    `keys[layer]`/`values[layer]`: `[num_slots, kv_heads, capacity, d]`, one row's own tokens
    per slot. A forward pass covers the contiguous slots `begin` names."""

    def __init__(
        self,
        prefix: list[tuple[torch.Tensor, torch.Tensor]],
        num_slots: int,
        capacity: int,
    ) -> None:
        self.prefix = prefix
        self.capacity = capacity
        # Zeroed, not empty: a masked score is `x - inf`, and a NaN left in unused memory would
        # turn it, and the row's whole softmax, into NaN.
        self.keys = [k.new_zeros(num_slots, k.shape[1], capacity, k.shape[3]) for k, _ in prefix]
        self.values = [v.new_zeros(num_slots, v.shape[1], capacity, v.shape[3]) for _, v in prefix]
        device = prefix[0][0].device
        self.lengths = torch.zeros(num_slots, dtype=torch.int64, device=device)
        self._host_lengths = [0] * num_slots  # the same, for shapes, without a device sync
        self._start, self._stop, self._q_len, self._span = 0, 0, 0, 0
        self._write_at: torch.Tensor | None = None
        self.mask = torch.empty(0)
        self._query_positions = torch.empty(0)
        self._window_masks: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self._copies: dict[tuple[str, torch.device], torch.Tensor] = {}

    @property
    def prefix_len(self) -> int:
        return int(self.prefix[0][0].shape[2])

    def begin(self, start: int, stop: int, q_len: int, groups: int) -> None:
        """Prepare a pass over slots [start, stop) adding `q_len` tokens to each."""
        lengths = self._host_lengths[start:stop]
        if q_len > 1 and len(set(lengths)) > 1:
            raise ValueError("a multi-token pass needs rows of one length")
        self._span = max(lengths) + q_len
        if self._span > self.capacity:
            raise RuntimeError(f"slot cache overflow: {self._span} > {self.capacity} tokens")
        self._start, self._stop, self._q_len = start, stop, q_len
        before = self.lengths[start:stop]
        self._write_at = before if q_len == 1 else None
        # Row r's query i may see its own tokens j <= lengths[r] + i: `[n, 1, groups*q, span]`,
        # additive, built once per pass and shared by every layer.
        query = torch.arange(q_len, device=before.device).repeat(groups)
        limit = before[:, None] + query[None, :]
        column = torch.arange(self._span, device=before.device)
        dtype = self.keys[0].dtype
        allowed = column[None, None, :] <= limit[:, :, None]
        self.mask = torch.zeros(allowed.shape, dtype=dtype, device=before.device)
        self.mask.masked_fill_(~allowed, float("-inf"))
        self.mask = self.mask[:, None]
        # Absolute positions of the pass's query rows, `[n, groups*q]`, for sliding windows.
        self._query_positions = self.prefix_len + limit
        self._window_masks, self._copies = {}, {}

    def local(self, name: str, device: torch.device) -> torch.Tensor:
        """This pass's `mask` or write positions on `device`: layers placed on several devices
        read them where they compute (one copy per device and pass; none on one device)."""
        tensor = self.mask if name == "mask" else self._write_at
        assert tensor is not None
        if tensor.device == device:
            return tensor
        key = (name, device)
        if key not in self._copies:
            self._copies[key] = tensor.to(device)
        return self._copies[key]

    def window_masks(self, window: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive masks hiding keys `window` or more positions behind each query: for the
        row's own tokens `[n, 1, rows, span]` and for the shared prefix `[n*rows, P]`; built
        once per pass and window size, shared by every layer with that window."""
        if (window, device) not in self._window_masks:
            positions = self._query_positions.to(device)
            own_keys = self.prefix_len + torch.arange(self._span, device=device)
            prefix_keys = torch.arange(self.prefix_len, device=device)
            own = window_mask(positions, own_keys, window)[:, None]
            prefix = window_mask(positions, prefix_keys, window)
            self._window_masks[window, device] = (own, prefix.reshape(-1, self.prefix_len))
        return self._window_masks[window, device]

    def finish(self) -> None:
        """After a pass: the rows it covered now hold `q_len` more tokens."""
        self.lengths[self._start : self._stop] += self._q_len
        for slot in range(self._start, self._stop):
            self._host_lengths[slot] += self._q_len

    def reset(self, start: int, stop: int) -> None:
        """Slots [start, stop) hold new rows with no tokens of their own yet."""
        self.lengths[start:stop] = 0
        self._host_lengths[start:stop] = [0] * (stop - start)

    def move(self, sources: list[int], targets: list[int]) -> None:
        """Copy rows `sources` into slots `targets` (compaction after rows leave)."""
        if not sources:
            return
        src = torch.tensor(sources, device=self.lengths.device)
        dst = torch.tensor(targets, device=self.lengths.device)
        span = max(self._host_lengths[s] for s in sources)
        for buffers in (self.keys, self.values):
            for buffer in buffers:
                buffer[dst, :, :span] = buffer[src, :, :span]
        self.lengths[dst] = self.lengths[src]
        for s, t in zip(sources, targets, strict=True):
            self._host_lengths[t] = self._host_lengths[s]

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Called by the attention module: store this pass's keys/values, return the rows'."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        rows = slice(self._start, self._stop)
        if self._write_at is not None:
            slots = torch.arange(self._start, self._stop, device=keys.device)
            write_at = self.local("write_at", keys.device)
            keys[slots, :, write_at] = key_states[:, :, 0]
            values[slots, :, write_at] = value_states[:, :, 0]
        else:
            at = self._host_lengths[self._start]
            keys[rows, :, at : at + self._q_len] = key_states
            values[rows, :, at : at + self._q_len] = value_states
        return keys[rows, :, : self._span], values[rows, :, : self._span]


def cascade_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """softmax over [shared prefix ; the row's own tokens] (and gpt-oss's sink, if any), with
    Gemma 2's soft-capping and sliding windows where the layer has them. `[n, q, heads, d]`."""
    cache: SlotCache | None = kwargs.get("slot_cache")
    softcap = kwargs.get("softcap") or getattr(module.config, "attn_logit_softcapping", None)
    window, sinks = kwargs.get("sliding_window"), kwargs.get("s_aux")
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if cache is None:  # a plain pass (e.g. the shared prompt's own prefill)
        if softcap or window or sinks is not None:
            out = plain_attention(query, key, value, scale, softcap, window, sinks)
            return out, None
        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    n, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    rows = heads // kv_heads * q_len  # query rows per KV head: its heads side by side
    # Scale the few queries rather than the many scores.
    q = (query * scale).reshape(n, kv_heads, rows, dim)
    own = soft_cap(torch.matmul(q, key.transpose(2, 3)).float(), softcap)
    own += cache.local("mask", own.device)
    prefix_k, prefix_v = cache.prefix[module.layer_idx]  # type: ignore[index]
    prefix_len = prefix_k.shape[2]
    own_window, prefix_window = cache.window_masks(window, own.device) if window else (None, None)
    if own_window is not None:
        own += own_window
    top = own.amax(-1)  # [n, kv_heads, rows]
    sink = sink_logits(sinks, kv_heads, q_len)
    if sink is not None:
        top = torch.maximum(top, sink)
    shared = None
    if prefix_len:
        # Every row against one copy of the prompt, in one matmul: [kv_heads, n*rows, P]. The
        # parts' softmaxes are merged through a shared maximum (as flash-decoding does), so
        # neither scores nor probabilities are ever concatenated or transposed.
        flat = q.transpose(0, 1).reshape(kv_heads, n * rows, dim)
        shared = soft_cap(torch.matmul(flat, prefix_k[0].transpose(1, 2)).float(), softcap)
        if prefix_window is not None:
            shared += prefix_window
        top = torch.maximum(top, shared.amax(-1).view(kv_heads, n, rows).transpose(0, 1))
    own.sub_(top[..., None]).exp_()
    total = own.sum(-1)
    out = torch.matmul(own.to(value.dtype), value).float()
    if shared is not None:
        shared.sub_(top.transpose(0, 1).reshape(kv_heads, n * rows, 1)).exp_()
        total += shared.sum(-1).view(kv_heads, n, rows).transpose(0, 1)
        from_prompt = torch.matmul(shared.to(value.dtype), prefix_v[0]).float()
        out += from_prompt.view(kv_heads, n, rows, dim).transpose(0, 1)
    if sink is not None:
        total += (sink - top).exp()
    out /= total[..., None]
    return out.to(value.dtype).reshape(n, heads, q_len, dim).transpose(1, 2), None


AttentionInterface.register(ATTENTION_NAME, cascade_attention)


@contextmanager
def slot_attention(model: Any) -> Iterator[None]:
    """Route the model's attention through `cascade_attention` for the block."""
    before = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
