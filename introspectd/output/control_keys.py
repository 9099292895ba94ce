"""The record keys of the control arms and the logit measure (added to DESIGN.md's record)."""

from __future__ import annotations

from typing import Any

from introspectd.protocol.factual import FACTUAL_QUESTIONS
from introspectd.protocol.results import ChoiceReadout, SeedRecord, TrialRow
from introspectd.protocol.trials import Arm


def control_keys(row: TrialRow) -> SeedRecord:
    """`arm` always; `direction` for the random arm (also set in `config`, see `record`);
    `p_yes`, `prob_yes`, `prob_no` for a logit-mode read-out; `choice` for a multiple-choice
    read-out; `mismatch` for the mismatch design's question (which concept it asks about);
    `factual` for a factual control question (its index, text and correct answer)."""
    spec = row.spec
    out: SeedRecord = {"arm": spec.arm.value}
    if row.readout is not None:
        out["p_yes"] = row.readout.p_yes
        out["prob_yes"] = row.readout.prob_yes
        out["prob_no"] = row.readout.prob_no
    if row.choice is not None:
        out["choice"] = choice_record(row.choice, spec.concept)
    if spec.about is not None:
        out["mismatch"] = {"about": spec.about, "is_match": spec.about == spec.concept}
    if spec.question is not None:
        question = FACTUAL_QUESTIONS[spec.question]
        out["factual"] = {"index": spec.question, "text": question.text, "answer": question.answer}
    return out


def choice_record(choice: ChoiceReadout, concept: str) -> dict[str, Any]:
    """`choice`: the options in letter order, P of each (summing to 1), the chosen one, whether
    it is the trial's concept, and the letters' share of all probability before renormalising."""
    return {
        "options": list(choice.options),
        "probs": dict(zip(choice.options, choice.probs, strict=True)),
        "chosen": choice.chosen,
        "correct": choice.chosen == concept,
        "letter_mass": choice.letter_mass,
    }


def direction(row: TrialRow) -> str | None:
    """How the added vector's direction was chosen: None when nothing was added."""
    return {Arm.INJECTION: "concept", Arm.RANDOM: "random"}.get(row.spec.arm)
