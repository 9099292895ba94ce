"""The plan keys of the control arms and the forced-choice measure (`[sweep] arms`, `measure`,
`factual_controls`): how they are read and what they refuse, each with one line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from introspectd.protocol import plan_keys
from introspectd.protocol.factual import FACTUAL_QUESTIONS
from introspectd.protocol.plan_table import Table
from introspectd.protocol.prompt_battery import battery_names
from introspectd.protocol.trials import DEFAULT_ARM_NAMES, Arm, TrialSpec, expand_trials

if TYPE_CHECKING:
    from introspectd.protocol.sweep import SweepConfig

MEASURES = plan_keys.key("sweep", "measure").choices
ARM_NAMES = tuple(k.value for k in Arm)
# What a run spec leaves out while it holds its default, so runs created before these keys
# existed keep their hash (and resume).
CONTROL_DEFAULTS: dict[str, Any] = {
    "arms": list(DEFAULT_ARM_NAMES),
    "measure": plan_keys.default("sweep", "measure"),
    "factual_controls": plan_keys.default("sweep", "factual_controls"),
    "mismatch": plan_keys.default("sweep", "mismatch"),
    "choice_distractors": plan_keys.default("sweep", "choice_distractors"),
    "distractors": list(plan_keys.default("sweep", "distractors")),
    "prompts": list(plan_keys.default("sweep", "prompts")),
    "prefill": plan_keys.default("sweep", "prefill"),
    "custom_prompts": [],
}


def read_arms(t: Table) -> tuple[str, ...]:
    arms = t.array("arms", list(DEFAULT_ARM_NAMES))
    if not arms:
        t.fail("arms", f"must list at least one arm ({', '.join(ARM_NAMES)})")
    for arm in arms:
        if arm not in ARM_NAMES:
            t.fail("arms", f"unknown arm {arm!r}; the arms are {', '.join(ARM_NAMES)}")
    t.refuse_duplicates("arms", arms, "arm")
    return tuple(arms)


def read_measure(t: Table) -> str:
    str_value: str = t.read("measure")
    return str_value


def read_factual_controls(t: Table) -> bool:
    return bool(t.read("factual_controls"))


def num_factual(sweep: SweepConfig) -> int:
    """Factual control questions per (concept, layer, strength, arm)."""
    return len(FACTUAL_QUESTIONS) if sweep.factual_controls else 0


def about_concepts(sweep: SweepConfig) -> tuple[str, ...]:
    """The concepts the mismatch design asks about under each injection (every one)."""
    return sweep.concepts if sweep.mismatch else ()


def num_questions(sweep: SweepConfig) -> int:
    """Questions beyond the trials per (concept, layer, strength, arm)."""
    return num_factual(sweep) + len(about_concepts(sweep))


def sweep_trials(sweep: SweepConfig, layers: list[int]) -> list[TrialSpec]:
    """Every trial the plan's sweep asks for, at these (resolved) layers."""
    return expand_trials(
        sweep.concepts,
        layers,
        sweep.strengths,
        sweep.trials,
        sweep.arms,
        num_factual(sweep),
        about_concepts(sweep),
        battery_names(sweep),
    )


def check_controls(t: Table, sweep: SweepConfig, prompt_names: tuple[str, ...]) -> None:
    """Refuse combinations the logit measure cannot honour."""
    if sweep.factual_controls and sweep.measure != "logit":
        t.fail(
            "factual_controls",
            'needs measure = "logit" (factual questions are read as P(yes), not generated)',
        )
    if sweep.measure != "logit":
        return
    if sweep.inject_style == "generation":
        t.fail(
            "inject_style",
            '"generation" steers only generated tokens, and measure = "logit" generates none: '
            'use "all" or "from_marker"',
        )
    if not sweep.prompt_user and sweep.prompt_version != "yesno":
        t.fail(
            "prompt_version",
            f'measure = "logit" reads P(yes) and needs a yes/no question: use "yesno" or give '
            f"prompt_user (the known versions: {', '.join(prompt_names)}); "
            f"got {sweep.prompt_version!r}",
        )


def strip_default_controls(sweep: dict[str, Any]) -> None:
    """Drop the control keys from a run spec while they hold their defaults (see above)."""
    for key, default in CONTROL_DEFAULTS.items():
        value = sweep.get(key)
        if (list(value) if isinstance(value, tuple | list) else value) == default:
            sweep.pop(key, None)
