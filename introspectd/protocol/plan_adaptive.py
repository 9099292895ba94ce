"""The plan's `[adaptive]` table: its settings and their checks (the decisions themselves are
run/adaptive.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from introspectd.protocol import plan_checks as rules
from introspectd.protocol.plan_checks import Table

if TYPE_CHECKING:
    from introspectd.protocol.sweep import SweepConfig


@dataclass(frozen=True)
class AdaptiveConfig:
    """`[adaptive]`: spend trials where a cell's answer is still uncertain (run/adaptive.py).
    `[sweep] trials` is the first round; off by default."""

    enabled: bool = False
    target_halfwidth: float = 0.05  # 95% Wilson half-width on the injection pass rate: done
    max_trials_per_cell: int = 400  # cap on trial indices per cell (controls grow alike)
    round_trials: int = 20  # trials added per still-open cell per round
    min_coherent: float = 0.0  # drop a cell whose coherence interval lies below this
    confirm_top: int = 0  # K best cells re-run on fresh trials at the end; 0 = off
    confirm_trials: int = 100


def read_adaptive(t: Table, sweep: SweepConfig) -> AdaptiveConfig:
    first_round = sweep.trials
    cfg = AdaptiveConfig(
        enabled=t.take("enabled", False, (bool,), "a boolean"),
        target_halfwidth=t.number("target_halfwidth", 0.05, 0.0, 0.5, positive=True),
        max_trials_per_cell=t.integer("max_trials_per_cell", 400, 1, rules.MAX_TOTAL_TRIALS),
        round_trials=t.integer("round_trials", 20, 1, rules.MAX_TOTAL_TRIALS),
        min_coherent=t.number("min_coherent", 0.0, 0.0, 1.0),
        confirm_top=t.integer("confirm_top", 0, 0, 1000),
        confirm_trials=t.integer("confirm_trials", 100, 1, rules.MAX_TOTAL_TRIALS),
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
