"""Prompt batteries: `[sweep] prompts` makes the prompt a sweep dimension, `[prompts.NAME]`
tables define a plan's own, `[sweep] prefill` starts every answer (docs/protocols.md,
"Prompts"). A result that holds on one prompt only is not a result.

    [sweep]
    prompts = ["v2", "paper", "mine"]
    [prompts.mine]
    system = "..."
    before = ["explainer user turn", "assistant reply"]   # user/assistant pairs
    user = "Trial {trial}: ..."
    prefill = "..."

With one prompt (the default: `prompt_version`, or `prompt_user`) trial ids are unchanged; with
several each id gains `_p{name}` after its strength part.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from introspectd.protocol import plan_checks as rules
from introspectd.protocol.plan_table import Table
from introspectd.protocol.prompts import (
    PROMPT_VERSIONS,
    READ_OUT_VERSIONS,
    PromptVersion,
    numbers_trials,
    trial_text,
)

if TYPE_CHECKING:
    from introspectd.protocol.sweep import SweepConfig

MAX_PROMPTS = 64
MAX_TURNS = 32
_TABLE_KEYS = ("system", "before", "user", "prefill")


def read_prompt_tables(t: Table) -> tuple[tuple[str, PromptVersion], ...]:
    """The plan's `[prompts.NAME]` tables, in the plan's order."""
    out = []
    for name in list(t.data):
        problem = rules.name_problem(name, rules.CONCEPT_RE, "a prompt name (a lowercase word)")
        if problem is not None:
            t.fail("", f"{name!r}: {problem}")
        if name in PROMPT_VERSIONS:
            t.fail(name, "is a built-in prompt's name; give yours another")
        table = Table(t.file, f"prompts.{name}", t.take(name, {}, (dict,), "a table"))
        out.append((name, _read_prompt(table)))
    if len(out) > MAX_PROMPTS:
        t.fail("", f"defines {len(out)} prompts, more than {MAX_PROMPTS}")
    return tuple(out)


def _read_prompt(t: Table) -> PromptVersion:
    system = t.text("system", "", multiline=True)
    user = t.text("user", "", multiline=True)
    if not user.strip():
        t.fail("user", "must give the question's user turn")
    before: list[Any] = t.take("before", [], (list,), "a list of turns")
    if len(before) % 2 or len(before) > MAX_TURNS:
        t.fail("before", f"must list user/assistant pairs (at most {MAX_TURNS} turns)")
    if not all(isinstance(turn, str) and turn.strip() for turn in before):
        t.fail("before", "each turn must be a non-empty string")
    roles = ("user", "assistant") * (len(before) // 2)
    prefill = t.text("prefill", "", multiline=True)
    t.finish()
    return PromptVersion(system, user, tuple(zip(roles, before, strict=True)), prefill)


def read_prompt_names(t: Table, tables: tuple[tuple[str, PromptVersion], ...]) -> tuple[str, ...]:
    """`[sweep] prompts`: built-in or `[prompts.NAME]` names, no duplicates."""
    names = t.array("prompts", [])
    known = [*PROMPT_VERSIONS, *(n for n, _ in tables)]
    for name in names:
        if name not in known:
            t.fail("prompts", f"unknown prompt {name!r}; the prompts are {', '.join(known)}")
    t.refuse_duplicates("prompts", names, "prompt")
    if len(names) > MAX_PROMPTS:
        t.fail("prompts", f"must list at most {MAX_PROMPTS} prompts")
    return tuple(names)


def check_battery(t: Table, sweep: SweepConfig, given: set[str]) -> None:
    """What a battery cannot combine with, one line each (`given`: the keys the plan set)."""
    defined = {n for n, _ in sweep.custom_prompts}
    unused = sorted(defined - set(sweep.prompts))
    if unused:
        t.fail("prompts", f"[prompts.{unused[0]}] is defined but not listed in prompts")
    if sweep.prefill and sweep.measure != "generate":
        t.fail("prefill", f'starts a generated answer: needs measure = "generate", got '
               f"{sweep.measure!r}")  # fmt: skip
    if not sweep.prompts:
        return
    for key in ("prompt_version", "prompt_system", "prompt_user"):
        if key in given:
            t.fail(key, "prompts lists the run's prompts; leave prompt_version, prompt_system "
                   "and prompt_user out")  # fmt: skip
    if sweep.measure != "generate":
        t.fail("prompts", f'a battery needs measure = "generate", got {sweep.measure!r}')
    read_out = sorted(set(sweep.prompts) & set(READ_OUT_VERSIONS))
    if read_out:
        t.fail("prompts", f"{read_out[0]!r} is the question of a read-out measure")


def run_prompts(sweep: SweepConfig) -> list[tuple[str, PromptVersion]]:
    """The run's prompts by name: the battery's, else the one of `prompt_version` (with the
    plan's `prompt_system` / `prompt_user` when it gives its own). `[sweep] prefill` starts the
    answers of every prompt that has no prefill of its own."""
    custom = dict(sweep.custom_prompts)
    if sweep.prompts:
        chosen = [(n, custom.get(n) or PROMPT_VERSIONS[n]) for n in sweep.prompts]
    else:
        version = PROMPT_VERSIONS.get(sweep.prompt_version, PROMPT_VERSIONS["v2"])
        if sweep.prompt_user:
            version = PromptVersion(sweep.prompt_system, sweep.prompt_user, prefill=version.prefill)
        chosen = [(sweep.prompt_version, version)]
    return [(n, _with_prefill(v, sweep.prefill)) for n, v in chosen]


@functools.lru_cache(maxsize=8)
def _prefills(sweep: SweepConfig) -> dict[str | None, str]:
    prompts = run_prompts(sweep)
    return {None: prompts[0][1].prefill} | {n: v.prefill for n, v in prompts}


def prompt_prefill(sweep: SweepConfig, name: str | None) -> str:
    """The prefill of a trial's prompt (`name`: its battery name; None with one prompt). Every
    record asks: the prompts are resolved once per sweep."""
    return _prefills(sweep)[name]


def _with_prefill(version: PromptVersion, prefill: str) -> PromptVersion:
    if version.prefill or not prefill:
        return version
    return dataclasses.replace(version, prefill=prefill)


def battery_names(sweep: SweepConfig) -> tuple[str, ...]:
    """The prompt names trial ids carry: none with one prompt (ids unchanged)."""
    return sweep.prompts if len(sweep.prompts) > 1 else ()


def default_inject_style(sweep_prompts: list[tuple[str, PromptVersion]], plan_default: str) -> str:
    """The versions' own default (the paper's: from its "Trial N" marker) when they agree."""
    styles = {v.inject_style for _, v in sweep_prompts}
    return styles.pop() if len(styles) == 1 and "" not in styles else plan_default


def trial_marker(marker: str, version: PromptVersion, trial: int) -> str:
    """Where `from_marker` starts for this trial. The default marker "Trial 1" follows the
    trial number in a prompt that numbers its trials ("Trial {trial}")."""
    if marker == "Trial 1" and numbers_trials(version):
        marker = "Trial {trial}"
    return trial_text(marker, trial)


def check_markers(t: Table, sweep: SweepConfig) -> None:
    """`from_marker` needs its marker in each prompt's question (the trial's number filled in)."""
    if sweep.inject_style != "from_marker":
        return
    for name, version in run_prompts(sweep):
        marker = trial_marker(sweep.marker, version, 0)
        if not marker or marker not in trial_text(version.user, 0):
            t.fail(
                "marker",
                f"{marker!r} does not occur in the user prompt ({name}); "
                'inject_style = "from_marker" starts there',
            )
