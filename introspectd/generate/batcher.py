"""Continuous-batching steered generation over one shared prompt.

Every trial of a run answers the same prompt. Its keys and values up to the first steered
position are computed once and shared by every row (`cascade.SlotCache`); each new row only
computes its own steered prompt tail, if the injection style has one, into a slot of its own.
Rows sit at different decode steps, each with its own position ids. Finished rows leave at the
next check and the last rows move into their slots, free slots are refilled from a `RowSource`,
and no decode step is spent on a finished trial for long.

The loop runs in a worker thread; it talks to the outside only through its `RowSource`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from transformers import DynamicCache

from introspectd.generate.cascade import SlotCache, slot_attention
from introspectd.generate.decoding import BatcherBase, BatcherConfig, RowSource, WorkItem
from introspectd.generate.placement import layer_devices
from introspectd.generate.steering import steering


def shared_prompt_len(prompt_len: int, config: BatcherConfig) -> int:
    """Prompt positions every row computes alike, kept once: all of them when only generated
    positions are steered, the unsteered head otherwise."""
    if not config.share_prefix:
        return 0
    steer_from = config.prompt_steer_from
    return prompt_len if steer_from is None else min(steer_from, prompt_len)


def tokens_per_row(prompt_len: int, config: BatcherConfig) -> int:
    """KV positions each row holds of its own: its steered prompt tail and generated tokens."""
    tail = prompt_len - shared_prompt_len(prompt_len, config)
    return tail + config.max_new_tokens + config.check_every


# transformers 5.23 announces the rename of `past_key_values` for 5.40; pyproject pins below it.
warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)


class _Rows:
    """Per-slot state of the rows in flight; rows occupy slots [0, len) in `items` order."""

    def __init__(self, num_slots: int, max_new_tokens: int, hidden: int, like: torch.Tensor):
        device = like.device
        self.items: list[WorkItem] = []
        self.seeds = torch.zeros(num_slots, dtype=torch.int64, device=device)
        self.num_generated = torch.zeros(num_slots, dtype=torch.int64, device=device)
        self.tokens = torch.zeros(num_slots, max_new_tokens + 1, dtype=torch.int64, device=device)
        self.is_done = torch.zeros(num_slots, dtype=torch.bool, device=device)
        self.deltas = torch.zeros(num_slots, hidden, dtype=like.dtype, device=device)
        # Per-layer `[n, d]` deltas for the hooks, rebuilt only when rows join or leave.
        self.layer_deltas: dict[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def move(self, sources: list[int], targets: list[int]) -> None:
        if not sources:
            return
        src = torch.tensor(sources, device=self.seeds.device)
        dst = torch.tensor(targets, device=self.seeds.device)
        for t in (self.seeds, self.num_generated, self.tokens, self.is_done, self.deltas):
            t[dst] = t[src]
        for s, d in zip(sources, targets, strict=True):
            self.items[d] = self.items[s]

    def deltas_by_layer(self, start: int, stop: int) -> dict[int, torch.Tensor]:
        """`{layer: [stop-start, d]}`: each row's delta at its own layer, zeros elsewhere."""
        rows_by_layer: dict[int, list[int]] = {}
        for i, item in enumerate(self.items[start:stop]):
            if item.delta is not None:
                rows_by_layer.setdefault(item.layer, []).append(i)
        out = {}
        block = self.deltas[start:stop]
        for layer, rows in rows_by_layer.items():
            select = torch.zeros(stop - start, 1, device=block.device, dtype=block.dtype)
            select[rows] = 1
            out[layer] = block * select
        return out


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's per-layer K/V holders (`.keys`, `.values`: `[B, heads, T, head_dim]`)."""
    return list(cache.layers)


def attention_shape(model: torch.nn.Module) -> tuple[int, int, int, int]:
    """(num_layers, kv_heads, head_dim, query heads per KV head) of a decoder-only LM."""
    config: Any = model.config
    text = config.get_text_config()
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return int(text.num_hidden_layers), kv_heads, head_dim, heads // kv_heads


class Batcher(BatcherBase):
    """The shared-prefix engine (module docstring): the fast path."""

    def __init__(
        self,
        model: torch.nn.Module,
        prompt_ids: list[int],
        eos_ids: list[int],
        config: BatcherConfig,
    ) -> None:
        super().__init__(model, prompt_ids, eos_ids, config)
        self.shared_len = shared_prompt_len(self.prompt_len, config)
        self.num_layers, self.kv_heads, self.head_dim, self.groups = attention_shape(model)

    def run(self, source: RowSource, layers: list[int]) -> bool:
        """Generate until `source` runs dry; returns False if stopped early (rows abandoned)."""
        cfg = self.config
        with (
            torch.inference_mode(),
            slot_attention(self.model),
            steering(self.model, self.state, layers),
        ):
            cache, prefix_logits = self._new_cache()
            rows = _Rows(cfg.batch_size, cfg.max_new_tokens, self.hidden_size, cache.keys[0])
            while True:
                if source.should_stop():
                    return False
                # Without compaction a slot frees only when the whole batch ends.
                if (cfg.refill and cfg.compact) or not len(rows):
                    new = source.take(cfg.batch_size - len(rows))
                    self._admit(cache, rows, new, prefix_logits)
                if not len(rows):
                    return True
                for _ in range(cfg.check_every):
                    self._decode_step(cache, rows)
                self._retire(cache, rows, source)

    def _check_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Besides a wrong cache or position layout, this catches a model needing attention the
        # engine does not have (sliding windows shorter than a trial, soft-capping).
        logits, first = self.first_answer_logits([WorkItem("check", 0, 0, None)], [])
        return logits[0], first

    def _mismatch(self, difference: float, tolerance: float) -> str:
        return (
            f"the shared-prefix engine's logits differ from the model's own forward pass "
            f"by {difference:.2g} of the largest logit (tolerance {tolerance:g}); "
            "introspectd supports Llama/Qwen/Mistral-style decoders"
        )

    def first_answer_logits(
        self, items: list[WorkItem], layers: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This engine's logits for each item's first two answer tokens `[k, 2, V]`, steered as
        in a run, and the first tokens it drew `[k]`: what the start-up check and the
        real-weights tests compare with the model's own forward pass."""
        with (
            torch.inference_mode(),
            slot_attention(self.model),
            steering(self.model, self.state, layers),
        ):
            cache, prefix_logits = self._new_cache(num_slots=len(items))
            rows = _Rows(len(items), self.config.max_new_tokens, self.hidden_size, cache.keys[0])
            first_logits = self._admit(cache, rows, items, prefix_logits)
            second_logits = self._decode_step(cache, rows)
        assert first_logits is not None
        first = rows.tokens[: len(items), 0].clone()
        return torch.stack([first_logits, second_logits], dim=1), first

    # --- the shared prompt and admission ---------------------------------------------------

    def _new_cache(self, num_slots: int | None = None) -> tuple[SlotCache, torch.Tensor | None]:
        """The slot cache around the shared prompt head, and that head's last logits `[1, V]`."""
        capacity = tokens_per_row(self.prompt_len, self.config)
        num_slots = num_slots or self.config.batch_size
        if not self.shared_len:
            prefix = []
            for device in layer_devices(self.model):
                shape = (1, self.kv_heads, 0, self.head_dim)
                empty = torch.empty(shape, device=device, dtype=self.dtype)
                prefix.append((empty, empty))
            return SlotCache(prefix, num_slots, capacity), None
        kv_cache = DynamicCache()
        out = self.model(
            input_ids=self.prompt[:, : self.shared_len],
            past_key_values=kv_cache,
            use_cache=True,
            logits_to_keep=1,
        )
        kv = [(layer.keys, layer.values) for layer in _layers(kv_cache)]
        return SlotCache(kv, num_slots, capacity), out.logits[:, -1, :].to(self.device)

    def _admit(
        self,
        cache: SlotCache,
        rows: _Rows,
        items: list[WorkItem],
        prefix_logits: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """Put `items` into the next free slots; returns the logits of their first token."""
        if not items:
            return None
        start, stop = len(rows), len(rows) + len(items)
        rows.items.extend(items)
        rows.layer_deltas = None
        rows.seeds[start:stop] = torch.tensor([it.seed for it in items], dtype=torch.int64)
        rows.deltas[start:stop] = 0
        injected = [i for i, it in enumerate(items) if it.delta is not None]
        if injected:
            stacked = torch.stack([items[i].delta for i in injected])  # type: ignore[misc]
            rows.deltas[[start + i for i in injected]] = stacked.to(self.device, self.dtype)
        cache.reset(start, stop)
        if self.shared_len < self.prompt_len:
            logits = self._prefill_tail(cache, rows, start, stop)
        else:
            assert prefix_logits is not None
            logits = prefix_logits.expand(stop - start, -1)
        seeds = rows.seeds[start:stop]
        first = self.sample(logits, seeds, torch.zeros_like(seeds), self.config.temperature)
        rows.tokens[start:stop] = 0
        rows.tokens[start:stop, 0] = first
        rows.num_generated[start:stop] = 1
        rows.is_done[start:stop] = self._stops(first) | (self.config.max_new_tokens <= 1)
        return logits

    def _prefill_tail(self, cache: SlotCache, rows: _Rows, start: int, stop: int) -> torch.Tensor:
        """New rows compute the prompt after the shared head, steered from `prompt_steer_from`
        on; returns their last logits `[k, V]`."""
        k = stop - start
        positions = torch.arange(self.shared_len, self.prompt_len, device=self.device)
        steer_from = self.config.prompt_steer_from
        deltas, position_mask = {}, None
        if steer_from is not None:
            deltas = rows.deltas_by_layer(start, stop)
            position_mask = (positions >= steer_from).to(self.dtype).expand(k, -1)
        ids = self.prompt[:, self.shared_len :].expand(k, -1)
        return self._slot_forward(cache, start, ids, positions.expand(k, -1), deltas, position_mask)

    def _slot_forward(
        self,
        cache: SlotCache,
        start: int,
        ids: torch.Tensor,
        positions: torch.Tensor,
        deltas: dict[int, torch.Tensor],
        position_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One pass of `ids` `[k, q]` for the rows in slots [start, start+k), steered by
        `deltas`; returns the logits of each row's last position `[k, V]`."""
        cache.begin(start, start + ids.shape[0], ids.shape[1], self.groups)
        self.state.deltas, self.state.position_mask = deltas, position_mask
        try:
            out = self.model(
                input_ids=ids,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
                slot_cache=cache,
            )
        finally:
            self.state.deltas, self.state.position_mask = {}, None
        cache.finish()
        return out.logits[:, -1, :].to(self.device)

    # --- decoding --------------------------------------------------------------------------

    def _decode_step(self, cache: SlotCache, rows: _Rows) -> torch.Tensor:
        """One token for every row in flight; returns the logits it was sampled from."""
        n = len(rows)
        step = rows.num_generated[:n].clone()
        tokens = rows.tokens[:n]
        last = tokens.gather(1, (step - 1)[:, None])
        if rows.layer_deltas is None:
            rows.layer_deltas = rows.deltas_by_layer(0, n)
        positions = (self.prompt_len + step - 1)[:, None]
        logits = self._slot_forward(cache, 0, last, positions, rows.layer_deltas)
        nxt = self.sample(logits, rows.seeds[:n], step, self.config.temperature)
        live = ~rows.is_done[:n]
        write_at = step.clamp(max=self.config.max_new_tokens)[:, None]
        current = tokens.gather(1, write_at)
        tokens.scatter_(1, write_at, torch.where(live[:, None], nxt[:, None], current))
        num_generated = step + live.to(step.dtype)
        rows.num_generated[:n] = num_generated
        rows.is_done[:n] |= live & (
            self._stops(nxt) | (num_generated >= self.config.max_new_tokens)
        )
        self.num_decode_steps += 1
        return logits

    def _retire(self, cache: SlotCache, rows: _Rows, source: RowSource) -> None:
        n = len(rows)
        done = rows.is_done[:n].cpu()
        if not bool(done.any()) or (not self.config.compact and not bool(done.all())):
            return
        counts = rows.num_generated[:n].cpu().tolist()
        finished_at = done.nonzero().flatten().tolist()
        token_rows = rows.tokens[finished_at].cpu().tolist()
        finished = [
            self._answer(rows.items[row].trial_id, tokens[: counts[row]])
            for row, tokens in zip(finished_at, token_rows, strict=True)
        ]
        source.done(finished)
        # The last rows still running move into the slots that just freed up.
        num_kept = n - len(finished_at)
        holes = [i for i in finished_at if i < num_kept]
        movers = [i for i in range(num_kept, n) if not done[i]]
        cache.move(movers, holes)
        rows.move(movers, holes)
        del rows.items[num_kept:]
        rows.layer_deltas = None
