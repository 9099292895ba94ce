"""Trial identity: the plan's trials, their deterministic ids and per-trial seeds. Pure Python."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    INJECTION = "injection"
    CONTROL = "control"


class Status(StrEnum):
    PENDING = "pending"
    GENERATED = "generated"
    JUDGED = "judged"
    JUDGE_FAILED = "judge_failed"


@dataclass(frozen=True)
class TrialSpec:
    concept: str
    kind: Kind
    layer: int
    strength: float
    trial: int
    # Confirmation trials (`…_c0`) re-run a chosen cell on fresh trials: their own ids, hence
    # their own seeds, so the rates they give were not used to choose the cell.
    is_confirmation: bool = False

    @property
    def is_injected(self) -> bool:
        return self.kind is Kind.INJECTION

    @property
    def cell(self) -> tuple[str, int, float]:
        """(concept, layer, strength): what an adaptive sweep decides on."""
        return self.concept, self.layer, self.strength

    def trial_id(self, stamp: str) -> str:
        marker = "c" if self.is_confirmation else "t"
        return (
            f"{stamp}_{self.concept}_{self.kind.value}_L{self.layer}"
            f"_S{self.strength!r}_{marker}{self.trial}"
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
) -> list[TrialSpec]:
    """Every trial of a plan, in the seed's order: concept, layer, strength, trial, kind."""
    return [
        TrialSpec(concept, kind, layer, float(strength), t)
        for concept in concepts
        for layer in layers
        for strength in strengths
        for t in range(num_trials)
        for kind in (Kind.INJECTION, Kind.CONTROL)
    ]


def cell_trials(
    cell: tuple[str, int, float], indices: range, is_confirmation: bool = False
) -> list[TrialSpec]:
    """Trial indices `indices` of one cell, injection and control each (an adaptive round)."""
    concept, layer, strength = cell
    return [
        TrialSpec(concept, kind, layer, strength, t, is_confirmation)
        for t in indices
        for kind in (Kind.INJECTION, Kind.CONTROL)
    ]


def trial_seed(run_seed: int, trial_id_without_stamp: str) -> int:
    """A 63-bit seed from the run seed and the trial's identity, independent of batch layout.

    The stamp is left out so two runs with the same seed and plan sample the same tokens.
    """
    digest = hashlib.sha256(f"{run_seed}:{trial_id_without_stamp}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
