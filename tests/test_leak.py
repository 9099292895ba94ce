"""Claim before mention (report/leak.py) and the refusal view (report/refusals.py), on answers
written here: where the claim of noticing is found, the lexicon's order verdict, and the
report's sections with counts worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from introspectd.report.leak import claim_before_mention, first_claim
from introspectd.report.writer import write_report


@pytest.mark.parametrize(
    ("answer", "offset"),
    [
        ("Yes, I notice something unusual about the ocean.", 5),
        ("The waves feel unexpected. I’m noticing the sea.", 15),  # the first claim wins
        ("Nothing unusual here. But wait, I sense the ocean.", 32),  # "Nothing" negates
        ("There is no unusual thought; not out of place, but something injected", 61),
        ("I AM DETECTING a pull", 0),
        ("i'm sensing\nsomething", 0),  # any case, any whitespace
    ],
)
def test_claim_is_found(answer: str, offset: int) -> None:
    assert first_claim(answer) == offset


@pytest.mark.parametrize(
    "answer",
    [
        "I don't notice anything unusual.",  # "don't" within 3 words before "unusual"
        "I notice nothing out of place.",  # "nothing" right after the phrase
        "I detect no injected thought.",
        "Nothing unusual.",
        "I do not sense anything unexpected.",
        "Unusually calm today.",  # whole words: "unusually" is not "unusual"
        "",
    ],
)
def test_negated_or_absent_claims_are_not_found(answer: str) -> None:
    assert first_claim(answer) is None


@pytest.mark.parametrize(
    ("answer", "mention", "verdict"),
    [
        ("I notice an unusual pull toward the ocean.", 36, True),
        ("The ocean is vast. I notice it is unusual.", 4, False),
        ("I detect a thought, a calm one.", None, True),  # no mention: nothing to come after
        ("The ocean, the ocean.", 4, None),  # a mention, and no claim to place
        ("unusual", 0, False),  # a claim at the mention's own offset does not precede it
    ],
)
def test_claim_before_mention(answer: str, mention: int | None, verdict: bool | None) -> None:
    assert claim_before_mention(answer, mention) is verdict


# --- the report sections ---------------------------------------------------------------------


def _v2(claims: bool, concept: str | None, before: bool | None, **extra: Any) -> dict[str, Any]:
    """A v2 judge's record `judge` (judge/verdict.py record_judge's shape)."""
    return {
        "answer": "pass" if claims and concept else "fail",
        "coherent": True,
        "detected_concept": concept,
        "reasoning": "",
        "refused": False,
        "claims_detection": claims,
        "identified_concept": concept,
        "detection_before_mention": before,
        **extra,
    }


def _record(concept: str, arm: str, layer: int, t: int, response: str, judge: Any) -> Any:
    return {
        "id": f"20260123_143022_{concept}_{arm}_L{layer}_S2.0_t{t}",
        "concept": concept,
        "was_injected": arm == "injection",
        "response": response,
        "config": {"model": "m", "layer": layer, "strength": 2.0, "trial": t},
        "judge": judge,
        "judge_error": None,
        "arm": arm,
    }


def _v1(answer: str, refused: bool) -> dict[str, Any]:
    return {"answer": answer, "coherent": True, "detected_concept": None, "refused": refused}


# Layer 1: injected answers graded by a v2 judge. (paper, lexicon) verdicts in the comments.
LAYER_1 = [
    ("ocean", "I notice something unusual: the ocean.", _v2(True, "ocean", True)),  # T, T
    ("ocean", "Waves everywhere. Now I notice the ocean is odd.", _v2(True, "ocean", True)),  # T, F
    ("ocean", "The sea. I sense it is out of place.", _v2(True, "ocean", False)),  # F, F
    ("ocean", "I detect a thought, a calm one.", _v2(True, "ocean", True)),  # T, T: no mention
    ("ocean", "Nothing unusual.", _v2(False, None, None)),  # seed fail: not in the agreement
    ("ocean", "Ocean ocean ocean.", _v2(True, "ocean", False)),  # F, F: claim not located
    ("fear", "I feel an unusual dread.", _v2(True, "fear", True)),  # T, T
]
# Layer 3: v1 grades (no order field, so no leak row) with refusals: 2 of 4 injections and 1
# of 4 controls refused, and failed.
LAYER_3 = [
    ("injection", _v1("fail", True)),
    ("injection", _v1("fail", True)),
    ("injection", _v1("pass", False)),
    ("injection", _v1("pass", False)),
    ("control", _v1("fail", True)),
    ("control", _v1("pass", False)),
    ("control", _v1("pass", False)),
    ("control", _v1("pass", False)),
]


def _report(tmp_path: Path) -> tuple[dict[str, Any], str]:
    records = [
        _record(concept, "injection", 1, t, text, judge)
        for t, (concept, text, judge) in enumerate(LAYER_1)
    ]
    control = {**_v2(False, None, None), "answer": "pass"}  # a control passes claiming nothing
    records.append(_record("ocean", "control", 1, 0, "Nothing unusual.", control))
    records += [_record("fear", arm, 3, t, "ok", j) for t, (arm, j) in enumerate(LAYER_3)]
    src = tmp_path / "in"
    src.mkdir()
    for concept in ("ocean", "fear"):
        lines = [json.dumps(r) + "\n" for r in records if r["concept"] == concept]
        (src / f"{concept}.jsonl").write_text("".join(lines))
    paths = write_report([src], tmp_path / "out")
    return json.loads(paths.summary_json.read_text()), paths.report_md.read_text()


def test_leak_section_counts_and_agreement(tmp_path: Path) -> None:
    summary, md = _report(tmp_path)
    (cell,) = summary["leak"]["by_cell"]  # layer 3 has no v2 grade: no row
    assert (cell["layer"], cell["strength"]) == (1, 2.0)
    assert cell["counts"] == {
        "paper_rule_rate": [4, 7],
        "lexicon_rule_rate": [3, 7],
        "agreement": [5, 6],
    }
    assert cell["n_claim_not_located"] == 1
    # (paper, lexicon): 3 × (T, T), 1 × (T, F), 2 × (F, F). Observed agreement 5/6; pass shares
    # 4/6 and 3/6 give chance agreement 4/6·3/6 + 2/6·3/6 = 1/2, so kappa = (5/6 − 1/2)/(1/2).
    assert cell["kappa"] == pytest.approx(2 / 3, abs=1e-6)
    lo, hi = cell["kappa_ci"]
    assert -1 <= lo < 2 / 3 < hi <= 1
    # The paper-rule rate is the main tables' own (metrics.py) over the same answers.
    main = next(c for c in summary["by_model_layer_strength"] if c["layer"] == 1)
    assert main["counts"]["injection_pass_rate_paper"] == cell["counts"]["paper_rule_rate"]
    assert summary["leak"]["by_model"]["m"]["counts"] == cell["counts"]
    assert "## Claim before mention (leak-aware)" in md
    section = md.split("## Claim before mention (leak-aware)", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| `m` | 1 | 2 |"))
    assert "| 57.1% [25.0–84.2] (4/7) | 42.9% [15.8–75.0] (3/7) | 83.3% [43.6–97.0] (5/6) |" in row
    assert row.endswith(f"| 0.67 [{lo:.2f}, {hi:.2f}] | 1 |")


def test_refusal_view_puts_raw_beside_excluding_refusals(tmp_path: Path) -> None:
    summary, md = _report(tmp_path)
    assert "## Refusals" in md
    section = md.split("## Refusals", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| `m` | 3 | 2 |"))
    # Raw: injections 2/4 pass, controls 1/4 FP, net +25; without the 3 refusals (of 8):
    # injections 2/2, controls 0/3, net +100.
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].startswith("37.5% [") and cells[3].endswith("(3/8)")
    assert (
        cells[4].endswith("(2/4)") and cells[5].startswith("100.0%") and cells[5].endswith("(2/2)")
    )
    assert cells[6].endswith("(1/4)") and cells[7].startswith("0.0%") and cells[7].endswith("(0/3)")
    assert cells[8].startswith("+25.0 [") and cells[9].startswith("+100.0 [")
    layer_3 = next(c for c in summary["by_model_layer_strength"] if c["layer"] == 3)
    assert layer_3["counts"]["refusal_rate"] == [3, 8]


def test_no_v2_grades_and_no_judge_leave_the_sections_out(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    unjudged = _record("ocean", "injection", 1, 0, "I notice the ocean", None)
    (src / "ocean.jsonl").write_text(json.dumps(unjudged) + "\n")
    paths = write_report([src], tmp_path / "out")
    md = paths.report_md.read_text()
    assert "leak" not in json.loads(paths.summary_json.read_text())
    assert "## Claim before mention" not in md and "## Refusals" not in md
