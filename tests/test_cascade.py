"""Shared-prefix attention equals plain attention over [prompt prefix ; the row's own tokens]."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from introspectd.generate.cascade import SlotCache, cascade_attention

KV_HEADS, GROUPS, DIM = 2, 3, 8
HEADS = KV_HEADS * GROUPS


def _module() -> SimpleNamespace:
    return SimpleNamespace(layer_idx=0, config=SimpleNamespace())


def _reference(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One row: `query [H, q, d]` against `keys/values [kv_heads, T, d]`, causal on the last q
    positions. Returns `[q, H, d]`."""
    q_len, total = query.shape[1], keys.shape[1]
    keys = keys.repeat_interleave(GROUPS, dim=0)
    values = values.repeat_interleave(GROUPS, dim=0)
    allowed = torch.arange(total)[None, :] <= torch.arange(total - q_len, total)[:, None]
    out = torch.nn.functional.scaled_dot_product_attention(
        query[None], keys[None], values[None], attn_mask=allowed
    )
    return out[0].transpose(0, 1)


def _step(cache: SlotCache, start: int, stop: int, q_len: int, gen: torch.Generator) -> tuple:  # type: ignore[type-arg]
    n = stop - start
    query = torch.randn(n, HEADS, q_len, DIM, generator=gen)
    key = torch.randn(n, KV_HEADS, q_len, DIM, generator=gen)
    value = torch.randn(n, KV_HEADS, q_len, DIM, generator=gen)
    cache.begin(start, stop, q_len, GROUPS)
    k_all, v_all = cache.update(key, value, 0)
    out, _ = cascade_attention(_module(), query, k_all, v_all, None, slot_cache=cache)
    cache.finish()
    return query, key, value, out


@pytest.mark.parametrize("prefix_len", [0, 5])
def test_rows_of_different_lengths_attend_to_prefix_and_own_tokens(prefix_len: int) -> None:
    gen = torch.Generator().manual_seed(0)
    prefix = (
        torch.randn(1, KV_HEADS, prefix_len, DIM, generator=gen),
        torch.randn(1, KV_HEADS, prefix_len, DIM, generator=gen),
    )
    cache = SlotCache([prefix], num_slots=4, capacity=10)
    own_k: list[list[torch.Tensor]] = [[] for _ in range(4)]
    own_v: list[list[torch.Tensor]] = [[] for _ in range(4)]

    def record(start: int, key: torch.Tensor, value: torch.Tensor) -> None:
        for i in range(key.shape[0]):
            own_k[start + i].append(key[i])
            own_v[start + i].append(value[i])

    # Rows 0-1 take a 3-token tail, then everyone decodes; rows 2-3 join later.
    _, key, value, _ = _step(cache, 0, 2, 3, gen)
    record(0, key, value)
    for _ in range(2):
        _, key, value, _ = _step(cache, 0, 2, 1, gen)
        record(0, key, value)
    cache.reset(2, 4)
    _, key, value, _ = _step(cache, 2, 4, 2, gen)
    record(2, key, value)
    query, key, value, out = _step(cache, 0, 4, 1, gen)
    record(0, key, value)
    for row in range(4):
        keys = torch.cat([prefix[0][0], *own_k[row]], dim=1)
        values = torch.cat([prefix[1][0], *own_v[row]], dim=1)
        expected = _reference(query[row], keys, values)
        torch.testing.assert_close(out[row], expected, rtol=1e-5, atol=1e-5)


def test_moved_rows_keep_their_tokens_and_unused_memory_is_ignored() -> None:
    gen = torch.Generator().manual_seed(1)
    prefix = (torch.randn(1, KV_HEADS, 4, DIM, generator=gen),) * 2
    cache = SlotCache([prefix], num_slots=3, capacity=6)
    cache.keys[0].fill_(1e4)  # stale values from earlier rows must not leak in
    cache.values[0].fill_(1e4)
    _, key, value, _ = _step(cache, 0, 3, 2, gen)
    cache.move([2], [0])  # row 0 left; the last row takes its slot
    query, new_key, new_value, out = _step(cache, 0, 2, 1, gen)
    for row, original in ((0, 2), (1, 1)):
        keys = torch.cat([prefix[0][0], key[original], new_key[row]], dim=1)
        values = torch.cat([prefix[1][0], value[original], new_value[row]], dim=1)
        torch.testing.assert_close(out[row], _reference(query[row], keys, values))
    assert torch.isfinite(out).all()


def test_a_pass_past_the_capacity_is_refused() -> None:
    prefix = (torch.zeros(1, KV_HEADS, 0, DIM),) * 2
    cache = SlotCache([prefix], num_slots=1, capacity=2)
    _step(cache, 0, 1, 2, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="overflow"):
        cache.begin(0, 1, 1, GROUPS)
