"""Which attention kinds the shared-prefix engine reproduces, and the extra masks it applies.

Soft-capped scores (Gemma 2: `cap · tanh(score / cap)`) and sliding windows (Mistral, Gemma 2/3,
gpt-oss: a query at position q sees keys at positions k with q − window < k ≤ q) are handled in
`cascade.cascade_attention`; chunked attention (Llama 4: keys only within the query's chunk) is
not, and hands the run to the fallback (`fallback.CacheBatcher`) before any trial.
"""

from __future__ import annotations

from typing import Any

import torch


def fast_path_refusal(model: torch.nn.Module) -> str | None:
    """Why the shared-prefix engine must not run `model` at all, or None."""
    config: Any = model.config
    text = config.get_text_config()
    layer_types = list(getattr(text, "layer_types", None) or [])
    if "chunked_attention" in layer_types:
        chunk = getattr(text, "attention_chunk_size", None)
        return f"its chunked attention ({chunk}-token chunks, Llama 4) is not in the fast path"
    unknown = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
    if unknown:
        return f"its attention kinds {unknown} are not in the fast path"
    return None


def soft_cap(scores: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Gemma 2's attention soft-capping, in place on float32 scores."""
    if cap:
        scores.div_(cap).tanh_().mul_(cap)
    return scores


def window_mask(
    query_positions: torch.Tensor, key_positions: torch.Tensor, window: int
) -> torch.Tensor:
    """Additive float32 mask, -inf where a key is `window` or more positions behind the query.

    `query_positions` `[..., q]`, `key_positions` `[k]`; returns `[..., q, k]`."""
    too_old = key_positions <= query_positions[..., None] - window
    mask = torch.zeros(too_old.shape, dtype=torch.float32, device=too_old.device)
    return mask.masked_fill_(too_old, float("-inf"))


def sink_logits(sinks: torch.Tensor | None, kv_heads: int, q_len: int) -> torch.Tensor | None:
    """gpt-oss's per-head attention sinks as `[kv_heads, groups·q_len]` float32 logits, in the
    order `cascade_attention` lays a KV head's query rows out (its heads side by side)."""
    if sinks is None:
        return None
    per_head = sinks.float().view(kv_heads, -1, 1)
    return per_head.expand(-1, -1, q_len).reshape(kv_heads, -1)


def plain_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float,
    softcap: float | None,
    window: int | None,
    sinks: torch.Tensor | None,
) -> torch.Tensor:
    """Causal attention of a pass that starts at position 0 (the shared prompt's prefill),
    with soft-capping, a sliding window and sinks where the model has them. `[B, T, heads, d]`."""
    batch, heads, q_len, _ = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    keys = key.repeat_interleave(groups, dim=1)
    values = value.repeat_interleave(groups, dim=1)
    scores = soft_cap(torch.matmul(query.float() * scaling, keys.float().transpose(2, 3)), softcap)
    positions = torch.arange(q_len, device=query.device)
    future = positions[None, :] > positions[:, None]
    scores.masked_fill_(future, float("-inf"))
    if window:
        scores += window_mask(positions, positions, window)
    if sinks is not None:
        sink = sinks.float().view(1, heads, 1, 1).expand(batch, -1, q_len, 1)
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    else:
        probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, values.float()).to(value.dtype)
    return out.transpose(1, 2)
