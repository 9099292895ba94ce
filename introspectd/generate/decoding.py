"""What both decode paths share: rows in and answers out, their settings, and the steps that
must not differ between them (stop tokens, trimming the stop token, the start-up check).

`batcher.Batcher` (the shared-prefix engine) and `fallback.CacheBatcher` (the model's own
cache) each subclass `BatcherBase`. A trial's answer must not depend on the path it took
(tests/test_model_matrix.py), so these steps live here once rather than in each path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from introspectd.generate.placement import input_device
from introspectd.generate.sampling import DeviceSampler
from introspectd.generate.steering import SteeringState


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


class RowSource(Protocol):
    """Where the batcher gets new rows and hands finished ones."""

    def take(self, n: int) -> list[WorkItem]:
        """Up to `n` rows to admit now; none when there are no more."""
        ...

    def done(self, rows: list[Finished]) -> None: ...

    def should_stop(self) -> bool:
        """True to abandon the rows in flight and return."""
        ...


@dataclass(frozen=True)
class BatcherConfig:
    batch_size: int
    max_new_tokens: int
    temperature: float
    # First prompt position the injection covers: None = generated positions only
    # ("generation"), 0 = the whole prompt ("all"), the token before the marker ("from_marker").
    prompt_steer_from: int | None = None
    share_prefix: bool = True  # keep the unsteered prompt prefix once for all rows
    compact: bool = True  # drop finished rows instead of decoding them to the end
    refill: bool = True  # admit new trials into a running batch
    check_every: int = 1  # decode steps between host-side stop checks
    ignore_eos: bool = False  # benchmarks: every trial decodes max_new_tokens


class BatcherBase(ABC):
    """What both generation paths hold (the model and where its inputs go, the prompt, the stop
    tokens, the steering state and the sampler) and the steps they take alike."""

    def __init__(
        self,
        model: torch.nn.Module,
        prompt_ids: list[int],
        eos_ids: list[int],
        config: BatcherConfig,
    ) -> None:
        self.model = model
        self.config = config
        param = next(model.parameters())
        self.device, self.dtype = input_device(model), param.dtype
        self.prompt_len = len(prompt_ids)
        self.prompt = torch.tensor([prompt_ids], device=self.device)
        self.eos_set = set(eos_ids)
        self.eos = torch.tensor(sorted(self.eos_set) or [-1], device=self.device)
        model_config: Any = model.config
        self.hidden_size = int(model_config.get_text_config().hidden_size)
        self.state = SteeringState()
        self.sample = DeviceSampler(self.device)
        self.num_decode_steps = 0

    @abstractmethod
    def run(self, source: RowSource, layers: list[int]) -> bool:
        """Generate until `source` runs dry; False if stopped early (rows abandoned)."""

    @abstractmethod
    def _check_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This path's logits `[2, V]` for an unsteered row's first two answer tokens, and the
        first token it drew `[1]`."""

    @abstractmethod
    def _mismatch(self, difference: float, tolerance: float) -> str:
        """The start-up check's error: what this path could not reproduce."""

    def check_against_plain_forward(self) -> float:
        """Largest difference, relative to the largest logit, between this path's logits and
        the model's own full forward pass, for the first two answer tokens of an unsteered
        row. ValueError if they disagree: a wrong cache or position layout would otherwise
        give plausible-looking but wrong answers."""
        ours, first = self._check_logits()
        ids = torch.cat([self.prompt, first.to(self.device)[None, :1]], dim=1)
        with torch.inference_mode():
            plain = self.model(input_ids=ids, logits_to_keep=2).logits[0].float().to(self.device)
        ours = ours.float().to(self.device)
        difference = float((ours - plain).abs().max() / plain.abs().max().clamp(min=1e-6))
        # In float32 the two agree to ~1e-6. In bfloat16 rounding alone moves the model's own
        # forward pass by up to 0.23 of the largest logit from its float32 value (random
        # 12-layer model), so only a wholesale disagreement (~1, e.g. a prompt the cache lost)
        # is caught there; the float32 test suite checks the layout itself.
        tolerance = 1e-3 if self.dtype == torch.float32 else 0.5
        if not difference <= tolerance:
            raise ValueError(self._mismatch(difference, tolerance))
        return difference

    def _stops(self, tokens: torch.Tensor) -> torch.Tensor:
        """Which of `tokens` end their answer (none when benchmarking with `ignore_eos`)."""
        if self.config.ignore_eos:
            return torch.zeros_like(tokens, dtype=torch.bool)
        return torch.isin(tokens, self.eos)

    def _answer(self, trial_id: str, token_ids: list[int]) -> Finished:
        """A row's answer: the tokens it generated, less the stop token that ended it."""
        if token_ids and not self.config.ignore_eos and token_ids[-1] in self.eos_set:
            token_ids = token_ids[:-1]
        return Finished(trial_id, token_ids)
