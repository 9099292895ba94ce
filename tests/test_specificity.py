"""The specificity designs' pure parts: multiple-choice options, their plan keys, the letter
read-out, the two-stage bootstrap and the mismatch permutation test (protocol/specificity.py,
generate/choice.py, report/specificity.py)."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import TINY_PLAN, write_plan

from introspectd.errors import BadInput
from introspectd.generate.choice import option_probs
from introspectd.protocol.controls import sweep_trials
from introspectd.protocol.plan import load_plan
from introspectd.protocol.specificity import NOTHING, choice_options, choice_user_text
from introspectd.protocol.sweep import SweepConfig
from introspectd.report.specificity import (
    NUM_PERMUTATIONS,
    choice_metrics,
    mismatch_metrics,
    permutation_p_value,
)

CONCEPTS = ("ocean", "fear", "celebration", "silence", "music", "bread")
CHOICE = 'measure = "choice"\nprompt_version = "choice"\n'
ALL = 'inject_style = "all"\n'


def _sweep(**overrides: Any) -> SweepConfig:
    return SweepConfig(concepts=CONCEPTS, measure="choice", prompt_version="choice", **overrides)


def test_options_are_deterministic_and_hold_the_concept_nothing_and_distractors() -> None:
    sweep = _sweep(choice_distractors=3)
    for trial in range(20):
        options = choice_options(7, "ocean", trial, sweep)
        assert options == choice_options(7, "ocean", trial, sweep)
        assert len(options) == 5 and len(set(options)) == 5
        assert "ocean" in options and NOTHING in options
        assert set(options) - {"ocean", NOTHING} <= set(CONCEPTS) - {"ocean"}
    # Another run seed draws other questions (same seed, same questions: above).
    draws = {choice_options(s, "ocean", 0, sweep)[1:] for s in range(10)}
    assert len(draws) > 1


def test_the_concepts_letter_is_balanced_over_positions() -> None:
    sweep = _sweep(choice_distractors=3)
    for concept in CONCEPTS:
        positions = Counter(choice_options(0, concept, t, sweep).index(concept) for t in range(25))
        assert positions == {0: 5, 1: 5, 2: 5, 3: 5, 4: 5}
        others = Counter(choice_options(0, concept, t, sweep).index(NOTHING) for t in range(200))
        assert set(others) == set(range(5)) - set() and min(others.values()) > 20


def test_a_distractors_list_replaces_the_sweeps_concepts() -> None:
    sweep = _sweep(choice_distractors=2, distractors=("table", "river", "ocean"))
    seen = set()
    for trial in range(30):
        seen.update(choice_options(1, "ocean", trial, sweep))
    assert seen == {"ocean", NOTHING, "table", "river"}  # never the concept as its own distractor


def test_options_are_lettered_in_their_order() -> None:
    text = choice_user_text("Which?\n{options}\nLetter:", ("fear", NOTHING, "ocean"))
    assert text == "Which?\nA. fear\nB. nothing unusual\nC. ocean\nLetter:"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('measure = "choice"\n' + ALL, 'measure = "choice" asks a multiple-choice question'),
        (
            CHOICE + ALL + "choice_distractors = 2\n",
            "2 distractors for 'ocean', but [sweep] concepts",
        ),
        (CHOICE, 'measure = "choice" generates none'),
        (
            CHOICE + ALL + 'prompt_user = "Trial 1: which?"\n',
            "needs {options} where the options go",
        ),
        ('distractors = ["table"]\n', 'distractors: needs measure = "choice"'),
        ("mismatch = true\n", 'mismatch: needs measure = "logit"'),
        ('prompt_version = "choice"\n', '"choice" is the question of measure = "choice"'),
        (CHOICE + ALL + 'distractors = ["table", "table"]\n', "duplicate distractor 'table'"),
        (CHOICE + ALL + 'distractors = ["Table"]\n', "distractors"),
    ],
)
def test_bad_specificity_keys_are_one_line(tmp_path: Path, lines: str, message: str) -> None:
    body = TINY_PLAN.replace("batch_size = 8\n", "batch_size = 8\n" + lines)
    with pytest.raises(BadInput) as caught:
        load_plan(write_plan(tmp_path, body))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_mismatch_asks_about_every_concept_under_each_injection(tmp_path: Path) -> None:
    body = TINY_PLAN.replace(
        "batch_size = 8\n",
        'batch_size = 8\nmeasure = "logit"\nprompt_version = "yesno"\n'
        'inject_style = "all"\nmismatch = true\n',
    )
    plan = load_plan(write_plan(tmp_path, body))
    specs = sweep_trials(plan.sweep, [1, 3])
    about = [s for s in specs if s.about is not None]
    # 2 concepts x 2 layers x 2 strengths cells, each asking about both concepts in both arms.
    assert len(about) == 8 * 2 * 2
    assert {(s.concept, s.about) for s in about} == set(
        itertools.product(("ocean", "fear"), repeat=2)
    )
    ids = {s.trial_id("S") for s in about}
    assert "S_ocean_injection_aboutfear_L1_S2.0_t0" in ids and len(ids) == len(about)


def test_option_probabilities_sum_to_one_over_the_options() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    letter_ids = [[1, 11], [2], [3, 13], [4]]
    options = [("a", "b", "c"), ("a", "b", "c", "d"), ("x", "y")]
    readouts = option_probs(logits, letter_ids, options)
    probs = logits.softmax(-1)
    for row, readout in enumerate(readouts):
        mass = [float(probs[row, ids].sum()) for ids in letter_ids[: len(readout.options)]]
        assert readout.letter_mass == pytest.approx(sum(mass), rel=1e-6)
        assert readout.probs == pytest.approx([m / sum(mass) for m in mass], rel=1e-5)
        assert sum(readout.probs) == pytest.approx(1.0, abs=1e-6)
        assert readout.chosen == readout.options[int(np.argmax(mass))]


def _choice_record(concept: str, arm: str, options: tuple[str, ...], p: float) -> dict[str, Any]:
    rest = (1 - p) / (len(options) - 1)
    probs = {o: (p if o == concept else rest) for o in options}
    return {
        "model": "m",
        "concept": concept,
        "arm": arm,
        "was_injected": arm != "control",
        "choice": {"options": list(options), "probs": probs,
                   "chosen": max(probs, key=probs.__getitem__), "letter_mass": 0.9},
    }  # fmt: skip


def _choice_records() -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    out = []
    for concept in ("ocean", "fear", "music"):
        for q in range(4):
            options = (concept, NOTHING, f"d{q}")
            out.append(_choice_record(concept, "injection", options, float(rng.uniform(0.3, 0.9))))
            out.append(_choice_record(concept, "control", options, float(rng.uniform(0.1, 0.5))))
    return out


def test_choice_intervals_do_not_shrink_when_only_copies_are_added() -> None:
    records = _choice_records()
    once, thrice = choice_metrics(records), choice_metrics(records * 3)
    assert once["injection"]["n"] * 3 == thrice["injection"]["n"]
    for arm in ("injection", "control"):
        for stat in ("p_concept", "accuracy", "p_identified"):
            assert once[arm][stat] == pytest.approx(thrice[arm][stat])
            assert once[arm][stat + "_ci"] == pytest.approx(thrice[arm][stat + "_ci"])
    assert once["p_concept_difference_ci"] == pytest.approx(thrice["p_concept_difference_ci"])
    assert once["resampled"] == {"concepts": 3, "questions": 12}
    assert once["chance"] == pytest.approx(1 / 3) and once["chance_identified"] == 0.5


def test_choice_difference_is_paired_by_question_and_its_interval_covers_it() -> None:
    figures = choice_metrics(_choice_records())
    inj, ctl = figures["injection"]["p_concept"], figures["control"]["p_concept"]
    assert figures["p_concept_difference"] == pytest.approx(inj - ctl)
    lo, hi = figures["p_concept_difference_ci"]
    assert lo < inj - ctl < hi and lo > 0  # every question's injection beats its control


def test_one_question_has_no_interval() -> None:
    records = [_choice_record("ocean", "injection", ("ocean", NOTHING), 0.7)] * 5
    assert choice_metrics(records)["injection"]["p_concept_ci"] is None


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_permutation_p_value_is_exact_for_a_clean_diagonal(n: int) -> None:
    matrix = np.full((n, n), 0.2) + np.eye(n) * 0.6
    # Only the identity relabelling puts every high value on the diagonal.
    assert permutation_p_value(matrix) == pytest.approx(1 / np.prod(range(1, n + 1)))


def test_a_question_bias_is_not_a_gap() -> None:
    # Concept 0's question gets yes whatever is injected: columns differ, the diagonal does not.
    matrix = np.tile(np.array([0.9, 0.2, 0.2, 0.2]), (4, 1))
    assert permutation_p_value(matrix) == 1.0


def test_permutation_p_value_samples_beyond_eight_concepts() -> None:
    matrix = np.full((9, 9), 0.2) + np.eye(9) * 0.6
    assert permutation_p_value(matrix) <= 2 / (NUM_PERMUTATIONS + 1)


def test_mismatch_metrics_on_a_known_matrix_and_its_copies() -> None:
    p = {("ocean", "ocean"): 0.8, ("ocean", "fear"): 0.3, ("fear", "ocean"): 0.2,
         ("fear", "fear"): 0.6}  # fmt: skip
    records = [
        {"model": "m", "concept": y, "about": x, "arm": "injection", "p_yes": v}
        for (y, x), v in p.items()
    ]
    figures = mismatch_metrics(records)
    assert figures is not None
    assert figures["match_p_yes"] == pytest.approx(0.7)
    assert figures["mismatch_p_yes"] == pytest.approx(0.25)
    assert figures["gap_p_yes"] == pytest.approx(0.45)
    logit = np.log(np.array([0.8, 0.6, 0.3, 0.2]) / (1 - np.array([0.8, 0.6, 0.3, 0.2])))
    assert figures["gap_logit"] == pytest.approx(logit[:2].mean() - logit[2:].mean())
    assert figures["p_value"] == 0.5  # 2 relabellings, the identity's gap is the larger
    assert mismatch_metrics(records * 4) == figures
