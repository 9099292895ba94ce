"""The slower, general path: generation through the model's own KV cache.

The shared-prefix engine (`batcher.Batcher`) replaces a model's attention with its own; a model
whose attention it cannot reproduce (chunked attention, an attention kind transformers adds
later) still runs here, on transformers' own cache and attention. Every row of a run answers
the same prompt, so a batch needs no padding: all rows prefill the prompt together (each row
steered by its own delta through the same hooks), then decode one token per step with the
model's own cache. Tokens come from the same counter-based sampler with the same (seed, step)
keys, so a trial's answer is the one the fast path would give, up to floating-point rounding.

What it costs: each row holds the whole prompt in its cache (the fast path keeps it once),
each batch prefills the prompt again, and a batch runs until its longest row finishes (no
refill), so it is several times slower on a GPU.
"""

from __future__ import annotations

import logging

import torch

from introspectd.generate.batcher import Batcher
from introspectd.generate.decoding import (
    BatcherBase,
    BatcherConfig,
    Finished,
    RowSource,
    WorkItem,
)
from introspectd.generate.steering import steering

log = logging.getLogger("introspectd")


class EnginePath:
    FAST = "shared-prefix"
    FALLBACK = "model-cache"


def fallback_tokens_per_row(prompt_len: int, config: BatcherConfig) -> int:
    """KV positions each fallback row holds: the whole prompt and its answer."""
    return prompt_len + config.max_new_tokens


class CacheBatcher(BatcherBase):
    """Same interface as `Batcher` (run, check_against_plain_forward), on the model's cache."""

    def run(self, source: RowSource, layers: list[int]) -> bool:
        """Generate until `source` runs dry; False if stopped early (rows abandoned)."""
        with torch.inference_mode(), steering(self.model, self.state, layers):
            while True:
                if source.should_stop():
                    return False
                items = source.take(self.config.batch_size)
                if not items:
                    return True
                finished = self._generate(items, source)
                if finished is None:
                    return False
                source.done(finished)

    def _check_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        with torch.inference_mode():
            self._generate([WorkItem("check", 0, 0, None)], None, captured, max_steps=2)
        return torch.cat([captured[0], captured[1]]), captured[-1]

    def _mismatch(self, difference: float, tolerance: float) -> str:
        return (
            f"generating through its own cache gives logits {difference:.2g} of the largest "
            f"logit away from its own forward pass (tolerance {tolerance:g})"
        )

    def _deltas(self, items: list[WorkItem]) -> dict[int, torch.Tensor]:
        """`{layer: [B, d]}`: each row's delta at its own layer, zeros elsewhere."""
        out: dict[int, torch.Tensor] = {}
        for i, item in enumerate(items):
            if item.delta is None:
                continue
            block = out.setdefault(
                item.layer,
                torch.zeros(len(items), self.hidden_size, device=self.device, dtype=self.dtype),
            )
            block[i] = item.delta.to(self.device, self.dtype)
        return out

    def _generate(
        self,
        items: list[WorkItem],
        source: RowSource | None,
        captured: list[torch.Tensor] | None = None,
        max_steps: int | None = None,
    ) -> list[Finished] | None:
        """Answers for `items`, one batch; None if `source` asked to stop first."""
        self.state.deltas = self._deltas(items)
        steer_from = self.config.prompt_steer_from
        self.state.position_mask = None
        if steer_from is not None:
            positions = torch.arange(self.prompt_len, device=self.device)
            mask = (positions >= steer_from).to(self.dtype).expand(len(items), -1)
            self.state.position_mask = mask
        try:
            return self._prefill_and_decode(items, source, captured, max_steps)
        finally:
            # Whatever ends the batch (a stop, a fault, out of memory), no row's delta may
            # steer the next forward pass through these hooks.
            self.state.deltas, self.state.position_mask = {}, None

    def _prefill_and_decode(
        self,
        items: list[WorkItem],
        source: RowSource | None,
        captured: list[torch.Tensor] | None,
        max_steps: int | None,
    ) -> list[Finished] | None:
        cfg = self.config
        n, max_new = len(items), cfg.max_new_tokens
        seeds = torch.tensor([it.seed for it in items], dtype=torch.int64, device=self.device)
        out = self.model(input_ids=self.prompt.expand(n, -1), use_cache=True, logits_to_keep=1)
        # Decode passes are one token each and always steered; the prompt mask is done.
        self.state.position_mask = None
        cache, logits = out.past_key_values, out.logits[:, -1, :]
        steps = max_steps or max_new
        tokens = torch.zeros(n, max(max_new, steps), dtype=torch.int64, device=self.device)
        num_generated = torch.zeros(n, dtype=torch.int64, device=self.device)
        is_done = torch.zeros(n, dtype=torch.bool, device=self.device)
        for step in range(steps):
            if captured is not None:
                captured.append(logits.float())
            step_t = torch.full((n,), step, dtype=torch.int64, device=self.device)
            nxt = self.sample(logits.to(self.device), seeds, step_t, cfg.temperature)
            live = ~is_done
            tokens[:, step] = torch.where(live, nxt, tokens[:, step])
            num_generated += live.to(torch.int64)
            is_done |= live & (self._stops(nxt) | (num_generated >= max_new))
            # The startup check compares two steps even when the first token ends the answer.
            if step + 1 >= steps or (captured is None and bool(is_done.all())):
                break
            if source is not None and source.should_stop():
                return None
            out = self.model(
                input_ids=nxt[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1
            )
            cache, logits = out.past_key_values, out.logits[:, -1, :]
            self.num_decode_steps += 1
        if captured is not None:
            captured.append(tokens[:, 0])
        counts = num_generated.cpu().tolist()
        return [
            self._answer(item.trial_id, row[:count])
            for item, row, count in zip(items, tokens.cpu().tolist(), counts, strict=True)
        ]


def choose_path(
    model: torch.nn.Module,
    prompt_ids: list[int],
    eos_ids: list[int],
    config: BatcherConfig,
    fast_refusal: str | None,
) -> str:
    """The fast path if it reproduces the model's logits, else the fallback if that does
    (with one warning line); ValueError naming both causes if neither does."""
    reason = fast_refusal
    if reason is None:
        try:
            Batcher(model, prompt_ids, eos_ids, config).check_against_plain_forward()
            return EnginePath.FAST
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # any fault of the fast path on this model: try the fallback
            reason = one_line(exc)
    try:
        CacheBatcher(model, prompt_ids, eos_ids, config).check_against_plain_forward()
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:
        raise ValueError(
            f"the shared-prefix engine cannot run it ({reason}), and neither can generation "
            f"through its own cache ({one_line(exc)})"
        ) from None
    log.warning(
        "generating through the model's own cache: the shared-prefix engine cannot run it "
        "(%s); slower (every row holds and recomputes the whole prompt, no refill mid-batch)",
        reason,
    )
    return EnginePath.FALLBACK


def one_line(exc: BaseException) -> str:
    """An exception as one line: its first line of text, or its type's name."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, ValueError) and first:
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
