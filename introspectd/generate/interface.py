"""The generation boundary: what the generator is told, where it gets work, what it reports.

Torch-free, so the run loop can name these types without loading a model. The generator sees
a run only through `GeneratorSpec` (settings) and a `WorkSource` (trials in, answers out);
it never reaches into the run's database, scheduler or plan file. The run loop sees the
generator only as a `TrialEngine`: generation (`generator.Generator`) or the logit measure
(`logit.LogitEngine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from introspectd.protocol.models import ModelRef
from introspectd.protocol.plan import Plan, SweepConfig
from introspectd.protocol.results import Generation
from introspectd.protocol.trials import Trial


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything the generator needs to know about a run."""

    model: ModelRef
    dtype: str
    device: str
    sweep: SweepConfig  # prompt, injection style and marker, vector prompt, tokens, batch size
    layers: tuple[int, ...]
    seed: int
    stamp: str  # trial ids start with it; seeds leave it out (trials.trial_seed)
    baseline: tuple[str, ...]  # words whose mean activation a concept vector subtracts
    shares_cpu_with_judge: bool  # a judge grades alongside: a CPU run may leave it a core
    plan_file: str  # named in error messages
    # Layers across devices (accelerate): strategy ("" = one device), per-device caps, offload.
    device_map: str = ""
    max_memory: tuple[tuple[str, str], ...] = ()
    offload_folder: str = ""
    chat_template: str = ""  # [model] chat_template: "" = the model's own (chat_templates.py)

    @classmethod
    def of(
        cls, plan: Plan, ref: ModelRef, layers: list[int], stamp: str, baseline: list[str]
    ) -> GeneratorSpec:
        judge = plan.judge
        return cls(
            model=ref,
            dtype=plan.model.dtype,
            device=plan.model.device,
            sweep=plan.sweep,
            layers=tuple(layers),
            seed=plan.run.seed,
            stamp=stamp,
            baseline=tuple(baseline),
            shares_cpu_with_judge=judge.is_enabled(judge.api_key()),
            plan_file=str(plan.path),
            device_map=plan.model.device_map,
            max_memory=plan.model.max_memory,
            offload_folder=plan.model.offload_folder,
            chat_template=plan.model.chat_template,
        )


class WorkSource(Protocol):
    """The run loop's side of generation. Every method is called from the generator's thread."""

    def take(self, n: int) -> list[Trial]:
        """Up to `n` trials to start now; none when the run has no more."""
        ...

    def done(self, generations: list[Generation]) -> None:
        """Trials finished generating; returns once they are recorded."""
        ...

    def requeue(self) -> int:
        """Take back every trial handed out and not done (their rows were dropped); how many."""
        ...

    def should_stop(self) -> bool:
        """True once the run is stopping: rows in flight are abandoned, not finished."""
        ...
