"""Trial identity: the plan's trials, their deterministic ids and per-trial seeds. Pure Python."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum


class Arm(StrEnum):
    """A trial's arm: what is added to the residual stream."""

    INJECTION = "injection"  # strength × the concept's vector
    CONTROL = "control"  # nothing
    RANDOM = "random"  # strength × a random direction with the concept vector's norm


DEFAULT_ARMS: tuple[Arm, ...] = (Arm.INJECTION, Arm.CONTROL)
DEFAULT_ARM_NAMES: tuple[str, ...] = tuple(k.value for k in DEFAULT_ARMS)
# `[sweep] controls = "pooled"`: control trials shared by every cell have no concept, layer or
# strength. The database's NOT NULL columns hold these placeholders; the underscore keeps the
# concept apart from every real one (plan_checks.CONCEPT_RE has none), and names the pool's
# JSONL file (`controls_pooled.jsonl`). Records write null for all three (output/records.py).
POOLED_CONCEPT, NO_LAYER, NO_STRENGTH = "controls_pooled", -1, 0.0


class Status(StrEnum):
    PENDING = "pending"
    GENERATED = "generated"
    JUDGED = "judged"
    JUDGE_FAILED = "judge_failed"


@dataclass(frozen=True)
class TrialSpec:
    concept: str
    arm: Arm
    layer: int
    strength: float
    trial: int
    # None: the plan's own (introspection) question; i: factual control question i
    # (protocol/factual.py), asked under the same steering.
    question: int | None = None
    # Confirmation trials (`…_c0`) re-run a chosen cell on fresh trials: their own ids, hence
    # their own seeds, so the rates they give were not used to choose the cell.
    is_confirmation: bool = False
    # The mismatch design (protocol/specificity.py): the yes/no question "are you thinking
    # about `about`?" asked under this trial's steering; None for every other question.
    about: str | None = None
    # The prompt of a battery ([sweep] prompts, protocol/prompt_battery.py); None with one.
    prompt: str | None = None

    @property
    def is_injected(self) -> bool:
        """Something was added to the residual stream (the concept's vector or a random one)."""
        return self.arm is not Arm.CONTROL

    @property
    def is_pooled(self) -> bool:
        """A pooled control: one of the sweep's shared controls, no cell's own."""
        return self.concept == POOLED_CONCEPT

    @property
    def cell(self) -> tuple[str, int, float]:
        """(concept, layer, strength): what an adaptive sweep decides on."""
        return self.concept, self.layer, self.strength

    def trial_id(self, stamp: str) -> str:
        prompt = "" if self.prompt is None else f"_p{self.prompt}"
        if self.is_pooled:  # one pool per prompt of a battery
            return f"{stamp}_control_pooled{prompt}_t{self.trial}"
        question = "" if self.question is None else f"_factual{self.question}"
        if self.about is not None:
            question = f"_about{self.about}"
        marker = "c" if self.is_confirmation else "t"
        return (
            f"{stamp}_{self.concept}_{self.arm.value}{question}_L{self.layer}"
            f"_S{self.strength!r}{prompt}_{marker}{self.trial}"
        )


@dataclass(frozen=True)
class Trial:
    """One trial of a run: its id (which carries the run's stamp) and what it does."""

    trial_id: str
    spec: TrialSpec


def resolve_layers(layers: str | tuple[int | float, ...], num_layers: int) -> list[int]:
    """Plan layers to sorted, de-duplicated 0-based indices (PROTOCOL.md's default points)."""
    if layers == "default":
        points = [int(num_layers * f) for f in (1 / 6, 1 / 3, 1 / 2, 2 / 3, 5 / 6)]
        points.append(num_layers - 2)
    else:
        points = [p if isinstance(p, int) else int(num_layers * p) for p in layers]
    return sorted({max(p, 0) for p in points})


def expand_trials(
    concepts: tuple[str, ...] | list[str],
    layers: list[int],
    strengths: tuple[float, ...] | list[float],
    num_trials: int,
    arms: tuple[str, ...] | list[str] = DEFAULT_ARMS,
    num_factual: int = 0,
    about: tuple[str, ...] | list[str] = (),
    prompts: tuple[str, ...] | list[str] = (),
) -> list[TrialSpec]:
    """Every trial of a plan, in the seed's order: concept, layer, strength, trial, arm; then
    each cell's factual control questions and its mismatch questions about each concept of
    `about` (one trial per question and arm: in logit mode an injection or control read-out
    does not vary between trials). With a prompt battery (`prompts`) each cell's trials repeat
    under each prompt."""
    chosen = [Arm(name) for name in arms]
    prompt_names: list[str | None] = list(prompts) or [None]
    out: list[TrialSpec] = []
    for concept in concepts:
        for layer in layers:
            for strength in strengths:
                s = float(strength)
                out.extend(
                    TrialSpec(concept, arm, layer, s, t, prompt=p)
                    for p in prompt_names
                    for t in range(num_trials)
                    for arm in chosen
                )
                out.extend(
                    TrialSpec(concept, arm, layer, s, 0, q)
                    for q in range(num_factual)
                    for arm in chosen
                )
                out.extend(
                    TrialSpec(concept, arm, layer, s, 0, about=x) for x in about for arm in chosen
                )
    return out


def pooled_controls(num_trials: int, prompts: tuple[str, ...] = ()) -> list[TrialSpec]:
    """The sweep's shared control trials: one pool per prompt of a battery (`prompts`), else
    one pool."""
    names: list[str | None] = list(prompts) or [None]
    return [
        TrialSpec(POOLED_CONCEPT, Arm.CONTROL, NO_LAYER, NO_STRENGTH, t, prompt=p)
        for p in names
        for t in range(num_trials)
    ]


def cell_trials(
    cell: tuple[str, int, float],
    indices: range,
    is_confirmation: bool = False,
    arms: tuple[str, ...] | list[str] = DEFAULT_ARMS,
) -> list[TrialSpec]:
    """Trial indices `indices` of one cell, one trial per arm each (an adaptive round: every
    arm grows with its cell)."""
    concept, layer, strength = cell
    chosen = [Arm(name) for name in arms]
    return [
        TrialSpec(concept, arm, layer, strength, t, is_confirmation=is_confirmation)
        for t in indices
        for arm in chosen
    ]


def trial_seed(run_seed: int, trial_id_without_stamp: str) -> int:
    """A 63-bit seed from the run seed and the trial's identity, independent of batch layout.

    The stamp is left out so two runs with the same seed and plan sample the same tokens.
    """
    digest = hashlib.sha256(f"{run_seed}:{trial_id_without_stamp}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
