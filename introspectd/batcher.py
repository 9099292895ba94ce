"""Continuous-batching steered generation over one shared prompt.

Every trial of a run answers the same prompt, so with `inject_style = "generation"` the prompt's
KV cache is computed once and copied into each new row. Rows sit at different decode steps: a
row admitted later is left-padded (masked) to the batch's cache length and carries its own
position ids. Finished rows are dropped and free slots refilled at the next check, so no decode
step is spent on a finished trial for long, and leading cache columns no row uses are trimmed.

The loop runs in a worker thread; it talks to the engine only through `source` and `sink`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from introspectd.kvcache import growable_cache
from introspectd.sampling import DeviceSampler
from introspectd.steering import SteeringState, steering


@dataclass(frozen=True)
class WorkItem:
    trial_id: str
    seed: int
    layer: int
    delta: torch.Tensor | None  # strength × concept vector, [d]; None for a control trial


@dataclass(frozen=True)
class Finished:
    trial_id: str
    token_ids: list[int]


@dataclass(frozen=True)
class BatcherConfig:
    batch_size: int
    max_new_tokens: int
    temperature: float
    # First prompt position the injection covers: None = generated positions only
    # ("generation"), 0 = the whole prompt ("all"), the token before the marker ("from_marker").
    prompt_steer_from: int | None = None
    share_prefix: bool = True  # reuse one prompt prefill ("generation" style only)
    compact: bool = True  # drop finished rows instead of decoding them to the end
    refill: bool = True  # admit new trials into a running batch
    check_every: int = 1  # decode steps between host-side stop checks
    ignore_eos: bool = False  # benchmarks: every trial decodes max_new_tokens


# transformers 5.23 announces the rename of `past_key_values` for 5.40; pyproject pins below it.
warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's per-layer K/V holders (`.keys`, `.values`: `[B, heads, T, head_dim]`)."""
    return list(cache.layers)


class _Batch:
    """Device state of the rows in flight, kept index-aligned across all tensors."""

    def __init__(self) -> None:
        self.items: list[WorkItem] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.empty(0)
        self.seeds = torch.empty(0)
        self.num_generated = torch.empty(0)
        self.tokens = torch.empty(0)
        self.is_done = torch.empty(0)
        self.deltas = torch.empty(0)
        # Per-layer `[B, d]` deltas for the hooks, rebuilt only when rows join or leave.
        self.layer_deltas: dict[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def keep(self, index: torch.Tensor) -> None:
        self.layer_deltas = None
        idx_list = index.tolist()
        self.items = [self.items[i] for i in idx_list]
        for name in ("mask", "seeds", "num_generated", "tokens", "is_done", "deltas"):
            setattr(self, name, getattr(self, name)[index])
        # Drop leading cache columns that every remaining row masks out, in the same copy.
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        self.mask = self.mask[:, first:]
        assert self.cache is not None
        for layer in _layers(self.cache):
            layer.set(layer.keys[index, :, first:], layer.values[index, :, first:])


class Batcher:
    def __init__(
        self,
        model: torch.nn.Module,
        prompt_ids: list[int],
        eos_ids: list[int],
        config: BatcherConfig,
    ) -> None:
        self.model = model
        self.config = config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.prompt = torch.tensor([prompt_ids], device=self.device)
        self.eos = torch.tensor(sorted(set(eos_ids)) or [-1], device=self.device)
        model_config: Any = model.config
        self.hidden_size = int(model_config.get_text_config().hidden_size)
        self.state = SteeringState()
        self.sample = DeviceSampler(self.device)
        self._shared_prefill: (
            tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor] | None
        ) = None
        self.num_decode_steps = 0
        self.num_row_steps = 0

    def run(
        self,
        source: Callable[[int], list[WorkItem]],
        sink: Callable[[list[Finished]], None],
        should_stop: Callable[[], bool],
        layers: list[int],
    ) -> bool:
        """Generate until `source` is empty; returns False if stopped early (rows abandoned)."""
        cfg = self.config
        batch = _Batch()
        with torch.inference_mode(), steering(self.model, self.state, layers):
            while True:
                if should_stop():
                    return False
                if cfg.refill or not len(batch):
                    self._admit(batch, source(cfg.batch_size - len(batch)))
                if not len(batch):
                    return True
                for _ in range(cfg.check_every):
                    self._decode_step(batch)
                self._retire(batch, sink)

    # --- admission -------------------------------------------------------------------------

    def _admit(self, batch: _Batch, items: list[WorkItem]) -> None:
        if not items:
            return
        k = len(items)
        kv, logits = self._prefill(items)
        deltas = torch.zeros(k, self.hidden_size, device=self.device, dtype=self.dtype)
        for i, item in enumerate(items):
            if item.delta is not None:
                deltas[i] = item.delta.to(self.device, self.dtype)
        seeds = torch.tensor([it.seed for it in items], device=self.device, dtype=torch.int64)
        first = self.sample(logits, seeds, torch.zeros_like(seeds), self.config.temperature)
        tokens = torch.zeros(
            k, self.config.max_new_tokens + 1, device=self.device, dtype=torch.int64
        )
        tokens[:, 0] = first
        prompt_len = self.prompt.shape[1]
        new_mask = torch.ones(k, prompt_len, device=self.device, dtype=torch.int64)
        is_done = self._stops(first) | (self.config.max_new_tokens <= 1)
        fresh = dict(
            mask=new_mask,
            seeds=seeds,
            tokens=tokens,
            is_done=is_done,
            deltas=deltas,
            num_generated=torch.ones(k, device=self.device, dtype=torch.int64),
        )
        self._merge(batch, items, kv, fresh)

    def _merge(
        self,
        batch: _Batch,
        items: list[WorkItem],
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        fresh: dict[str, torch.Tensor],
    ) -> None:
        batch.layer_deltas = None
        if not len(batch):
            batch.cache = growable_cache(kv, self.config.max_new_tokens + self.config.check_every)
            batch.items = list(items)
            for name, value in fresh.items():
                setattr(batch, name, value)
            return
        assert batch.cache is not None
        pad = batch.mask.shape[1] - fresh["mask"].shape[1]
        if pad < 0:  # cannot happen after a prefill of the same prompt, but stay correct
            raise RuntimeError("batch cache is shorter than the prompt")
        k_new = len(items)
        for layer, (k, v) in zip(_layers(batch.cache), kv, strict=True):
            zeros = torch.zeros(k_new, k.shape[1], pad, k.shape[3], device=k.device, dtype=k.dtype)
            layer.set(
                torch.cat([layer.keys, torch.cat([zeros, k], dim=2)], dim=0),
                torch.cat([layer.values, torch.cat([zeros, v], dim=2)], dim=0),
            )
        fresh["mask"] = torch.cat(
            [torch.zeros(k_new, pad, device=self.device, dtype=torch.int64), fresh["mask"]], dim=1
        )
        batch.items.extend(items)
        for name, value in fresh.items():
            setattr(batch, name, torch.cat([getattr(batch, name), value], dim=0))

    def _prefill(
        self, items: list[WorkItem]
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Prompt KV `[k, h, P, hd]` per layer and last-position logits `[k, V]` for new rows."""
        k = len(items)
        steer_from = self.config.prompt_steer_from
        if steer_from is None and self.config.share_prefix:
            if self._shared_prefill is None:
                self._shared_prefill = self._forward_prompt(1, None)
            kv1, logits1 = self._shared_prefill
            return (
                [(key.expand(k, -1, -1, -1), val.expand(k, -1, -1, -1)) for key, val in kv1],
                logits1.expand(k, -1),
            )
        deltas = None
        if steer_from is not None:
            deltas = {
                layer: torch.zeros(k, self.hidden_size, device=self.device, dtype=self.dtype)
                for layer in {it.layer for it in items}
            }
            for i, item in enumerate(items):
                if item.delta is not None:
                    deltas[item.layer][i] = item.delta.to(self.device, self.dtype)
        return self._forward_prompt(k, deltas)

    def _forward_prompt(
        self, k: int, deltas: dict[int, torch.Tensor] | None
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        cache = DynamicCache()
        ids = self.prompt.expand(k, -1)
        self.state.deltas = deltas or {}
        self.state.position_mask = None
        if deltas:
            self.state.position_mask = torch.ones(ids.shape, device=self.device)
            self.state.position_mask[:, : self.config.prompt_steer_from] = 0
        try:
            out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        finally:
            self.state.deltas, self.state.position_mask = {}, None
        kv = [(layer.keys, layer.values) for layer in _layers(cache)]
        return kv, out.logits[:, -1, :]

    # --- decoding --------------------------------------------------------------------------

    def _stops(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.config.ignore_eos:
            return torch.zeros_like(tokens, dtype=torch.bool)
        return torch.isin(tokens, self.eos)

    def _layer_deltas(self, batch: _Batch) -> dict[int, torch.Tensor]:
        rows_by_layer: dict[int, list[int]] = {}
        for i, item in enumerate(batch.items):
            if item.delta is not None:
                rows_by_layer.setdefault(item.layer, []).append(i)
        out = {}
        for layer, rows in rows_by_layer.items():
            select = torch.zeros(len(batch), 1, device=self.device, dtype=self.dtype)
            select[rows] = 1
            out[layer] = batch.deltas * select
        return out

    def _decode_step(self, batch: _Batch) -> None:
        prompt_len = self.prompt.shape[1]
        last = batch.tokens.gather(1, (batch.num_generated - 1)[:, None])
        positions = (prompt_len + batch.num_generated - 1)[:, None]
        mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
        if batch.layer_deltas is None:
            batch.layer_deltas = self._layer_deltas(batch)
        self.state.deltas = batch.layer_deltas
        try:
            out = self.model(
                input_ids=last,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=batch.cache,
                use_cache=True,
            )
        finally:
            self.state.deltas = {}
        batch.mask = mask
        step = batch.num_generated
        nxt = self.sample(out.logits[:, -1, :], batch.seeds, step, self.config.temperature)
        live = ~batch.is_done
        write_at = step.clamp(max=self.config.max_new_tokens)[:, None]
        current = batch.tokens.gather(1, write_at)
        batch.tokens.scatter_(1, write_at, torch.where(live[:, None], nxt[:, None], current))
        batch.num_generated = step + live.to(step.dtype)
        batch.is_done = batch.is_done | (
            live & (self._stops(nxt) | (batch.num_generated >= self.config.max_new_tokens))
        )
        self.num_decode_steps += 1
        self.num_row_steps += len(batch)

    def _retire(self, batch: _Batch, sink: Callable[[list[Finished]], None]) -> None:
        done = batch.is_done.cpu()
        if not bool(done.any()) or (not self.config.compact and not bool(done.all())):
            return
        counts = batch.num_generated.cpu().tolist()
        rows = done.nonzero().flatten().tolist()
        token_rows = batch.tokens[rows].cpu().tolist()
        finished = []
        for row, tokens in zip(rows, token_rows, strict=True):
            ids = tokens[: counts[row]]
            if ids and not self.config.ignore_eos and ids[-1] in self.eos.tolist():
                ids = ids[:-1]
            finished.append(Finished(batch.items[row].trial_id, ids))
        sink(finished)
        keep = (~done).nonzero().flatten().to(self.device)
        if len(keep):
            batch.keep(keep)
        else:
            batch.items, batch.cache = [], None
