"""Prompt batteries, their plan keys and ids (protocol/prompt_battery.py, protocol/prompts.py):
pure, no model."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_PLAN, write_plan

from introspectd.errors import BadInput
from introspectd.protocol.controls import sweep_trials
from introspectd.protocol.plan import Plan, load_plan
from introspectd.protocol.prompt_battery import run_prompts, trial_marker
from introspectd.protocol.prompts import PROMPT_VERSIONS, conversation


def _plan(tmp_path: Path, lines: str, tables: str = "") -> Plan:
    body = TINY_PLAN.replace("batch_size = 8\n", "batch_size = 8\n" + lines) + tables
    return load_plan(write_plan(tmp_path, body))


def test_the_paper_prompt_is_a_conversation_numbered_by_trial() -> None:
    messages = conversation(PROMPT_VERSIONS["paper"], trial=2)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "Ok."
    assert messages[2]["content"].startswith("Trial 3: Do you detect an injected thought?")
    assert "{trial}" not in " ".join(m["content"] for m in messages)
    assert trial_marker("Trial 1", PROMPT_VERSIONS["paper"], 2) == "Trial 3"
    assert trial_marker("Trial 1", PROMPT_VERSIONS["v2"], 2) == "Trial 1"  # a fixed marker


def test_the_paper_prompt_steers_from_its_marker_unless_the_plan_says_otherwise(
    tmp_path: Path,
) -> None:
    assert _plan(tmp_path, 'prompt_version = "paper"\n').sweep.inject_style == "from_marker"
    given = _plan(tmp_path, 'prompt_version = "paper"\ninject_style = "all"\n')
    assert given.sweep.inject_style == "all"
    assert _plan(tmp_path, "").sweep.inject_style == "generation"  # v2 keeps the plan default


def test_one_prompt_keeps_the_ids_a_battery_adds_the_prompt(tmp_path: Path) -> None:
    one = sweep_trials(_plan(tmp_path, 'prompts = ["paper"]\n').sweep, [1])
    assert {s.trial_id("S") for s in one} == {
        s.trial_id("S") for s in sweep_trials(_plan(tmp_path, "").sweep, [1])
    }
    two = sweep_trials(_plan(tmp_path, 'prompts = ["v2", "paper"]\n').sweep, [1])
    assert len(two) == 2 * len(one)
    ids = {s.trial_id("S") for s in two}
    assert "S_ocean_injection_L1_S2.0_pv2_t0" in ids and "S_fear_control_L1_S4.0_ppaper_t1" in ids


def test_a_plans_own_prompt_table(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        'prompts = ["v2", "mine"]\n',
        '\n[prompts.mine]\nsystem = "Be brief."\nbefore = ["Hello.", "Hi."]\n'
        'user = "Trial {trial}: anything odd?"\nprefill = "Well,"\n',
    )
    prompts = dict(run_prompts(plan.sweep))
    mine = conversation(prompts["mine"], trial=0)
    assert mine == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Trial 1: anything odd?"},
    ]
    assert prompts["mine"].prefill == "Well," and prompts["v2"].prefill == ""
    # The tables decide trials: they are in the plan hash (and a stored plan keeps them).
    other = _plan(
        tmp_path,
        'prompts = ["v2", "mine"]\n',
        '\n[prompts.mine]\nuser = "Trial {trial}: anything else?"\n',
    )
    assert plan.generation_spec() != other.generation_spec()
    assert "anything odd" in plan.to_json()


def test_sweep_prefill_starts_every_prompt_without_its_own(tmp_path: Path) -> None:
    plan = _plan(tmp_path, 'prompts = ["v2", "noticing"]\nprefill = "Hmm."\n')
    prompts = dict(run_prompts(plan.sweep))
    assert prompts["v2"].prefill == "Hmm."
    assert prompts["noticing"].prefill.startswith("Yes, I detect an injected thought")


def test_defaults_leave_the_plan_hash_as_it_was(tmp_path: Path) -> None:
    spec = _plan(tmp_path, "").generation_spec()["sweep"]
    assert not {"prompts", "prefill", "custom_prompts"} & set(spec)


@pytest.mark.parametrize(
    ("lines", "tables", "message"),
    [
        ('prompts = ["v9"]\n', "", "[sweep] prompts: unknown prompt 'v9'"),
        ('prompts = ["v2", "v2"]\n', "", "duplicate prompt 'v2'"),
        ('prompts = ["v2"]\nprompt_version = "v1"\n', "", "leave prompt_version"),
        ('prompts = ["v2", "yesno"]\n', "", "'yesno' is the question of a read-out measure"),
        (
            'prompts = ["v2", "paper"]\nmeasure = "logit"\ninject_style = "all"\n',
            "",
            'a battery needs measure = "generate"',
        ),
        ('prompts = ["x"]\n', "\n[prompts.x]\nsystem = 'hi'\n", "[prompts.x] user: must give"),
        ('prompts = ["x"]\n', "\n[prompts.x]\nuser = 'q'\nbefore = ['a']\n", "user/assistant"),
        ('prompts = ["v2"]\n', "\n[prompts.v1]\nuser = 'q'\n", "built-in prompt's name"),
        ("", "\n[prompts.x]\nuser = 'q'\n", "[prompts.x] is defined but not listed"),
        ('prompts = ["x"]\n', "\n[prompts.x]\nuser = 'q'\ncolour = 1\n", "colour"),
        (
            'prefill = "Yes"\nmeasure = "logit"\nprompt_version = "yesno"\ninject_style = "all"\n',
            "",
            'prefill: starts a generated answer: needs measure = "generate"',
        ),
        (
            'prompts = ["v2", "paper"]\ninject_style = "from_marker"\n',
            "",
            "'Trial 1' does not occur in the user prompt (v2)",
        ),
    ],
)
def test_bad_batteries_are_one_line(tmp_path: Path, lines: str, tables: str, message: str) -> None:
    with pytest.raises(BadInput) as caught:
        _plan(tmp_path, lines, tables)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_battery_pools_its_controls_per_prompt(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        'prompts = ["v2", "paper"]\ninject_style = "all"\ncontrols = "pooled"\n'
        "control_trials = 3\n",
    )
    pool = [s for s in sweep_trials(plan.sweep, [1]) if s.is_pooled]
    assert sorted(s.trial_id("S") for s in pool) == sorted(
        f"S_control_pooled_p{p}_t{t}" for p in ("v2", "paper") for t in range(3)
    )
