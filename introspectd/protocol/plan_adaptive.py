"""The plan's `[adaptive]` table: its settings and their checks (the decisions themselves are
run/round_decisions.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from introspectd.protocol.plan_keys import default
from introspectd.protocol.plan_table import Table

if TYPE_CHECKING:
    from introspectd.protocol.sweep import SweepConfig


@dataclass(frozen=True)
class AdaptiveConfig:
    """`[adaptive]`: spend trials where a cell's answer is still uncertain (run/round_decisions.py).
    `[sweep] trials` is the first round; off by default."""

    enabled: bool = default("adaptive", "enabled")
    target_halfwidth: float = default("adaptive", "target_halfwidth")  # on the injection rate
    max_trials_per_cell: int = default("adaptive", "max_trials_per_cell")  # controls grow alike
    round_trials: int = default("adaptive", "round_trials")
    min_coherent: float = default("adaptive", "min_coherent")
    confirm_top: int = default("adaptive", "confirm_top")  # re-run at the end on fresh trials
    confirm_trials: int = default("adaptive", "confirm_trials")


def read_adaptive(t: Table, sweep: SweepConfig) -> AdaptiveConfig:
    first_round = sweep.trials
    cfg = AdaptiveConfig(
        enabled=t.read("enabled"),
        target_halfwidth=t.read("target_halfwidth"),
        max_trials_per_cell=t.read("max_trials_per_cell"),
        round_trials=t.read("round_trials"),
        min_coherent=t.read("min_coherent"),
        confirm_top=t.read("confirm_top"),
        confirm_trials=t.read("confirm_trials"),
    )
    if cfg.enabled and cfg.max_trials_per_cell < first_round:
        t.fail(
            "max_trials_per_cell",
            f"must be >= [sweep] trials ({first_round}, the first round), "
            f"got {cfg.max_trials_per_cell}",
        )
    # Rounds and confirmation are decided from judged injection/control answers: a logit
    # read-out (no judge) and the random arm are not part of those decisions yet.
    if (cfg.enabled or cfg.confirm_top) and sweep.measure != "generate":
        t.fail("enabled", f'needs [sweep] measure = "generate", got {sweep.measure!r}')
    if (cfg.enabled or cfg.confirm_top) and "random" in sweep.arms:
        t.fail("enabled", 'runs the arms "injection" and "control" only; drop "random"')
    return cfg
