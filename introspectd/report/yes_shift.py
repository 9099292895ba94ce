"""The logit measure's yes-shifts and introspection score, with intervals that resample what is
independent (docs/protocols.md, "Controls and the logit measure"; PROTOCOL.md,
"Independence"). Pure: numpy.

A logit read-out is not sampled: every trial of an injection or control cell reads the same
p_yes, so a bootstrap over records treats copies as independent draws and narrows with `trials`
on identical data. What varies is the input, and inputs are not all independent either: the
cells (layers × strengths) of one concept share its vector, and every cell asks the same
factual questions. So the units resampled are

- concepts, each carrying all its read-outs (every layer, strength, trial and model), and
- factual questions, each carrying its read-outs under every concept,

crossed: each draw resamples concepts and questions independently, with replacement (the
"pigeonhole" bootstrap for crossed designs, Owen 2007, which errs wide rather than narrow).
Arms are paired: a draw takes a concept's (for factual read-outs, a concept × question's)
injection and control read-outs together, and the detection and factual shifts of one draw use
the same concepts, so the introspection score is paired by concept as well.

Each unit carries the sum and count of each arm's p_yes; a draw's mean is its drawn sums over
its drawn counts. With every unit drawn once that is the mean over records (docs/protocols.md's
yes-shift), and copies of a read-out scale its unit's sum and count alike, so they move neither
the estimate nor the interval. The random arm's trials are distinct inputs (each has its own
direction): they enter their concept's unit, whose mean they make more precise.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from introspectd.protocol.results import Record

BOOTSTRAP_SEED = 0
NUM_BOOTSTRAP = 2000
SHIFT_KEYS = ("detection_yes_shift", "factual_yes_shift", "introspection_score")
# Last axis of the unit tables: p_yes sum and count of the arm, then of control.
_ARM_SUM, _ARM_N, _CTL_SUM, _CTL_N = range(4)


def _arm(record: Mapping[str, Any]) -> str:
    return str(record.get("arm") or ("injection" if record.get("was_injected") else "control"))


def _question(record: Mapping[str, Any]) -> Hashable:
    return record.get("factual_index")


def _tables(records: Iterable[Record], arm: str) -> tuple[np.ndarray, np.ndarray]:
    """(detection units: concepts × 4, factual units: concepts × questions × 4), unpaired
    units (one arm missing) zeroed so that every draw compares the same inputs."""
    rows = [r for r in records if r.get("p_yes") is not None and _arm(r) in (arm, "control")]
    concepts = sorted({str(r["concept"]) for r in rows})
    questions = sorted({_question(r) for r in rows if r.get("is_factual")}, key=repr)
    c_index = {c: i for i, c in enumerate(concepts)}
    q_index = {q: i for i, q in enumerate(questions)}
    det = np.zeros((len(concepts), 4))
    fac = np.zeros((len(concepts), len(questions), 4))
    for r in rows:
        col = _ARM_SUM if _arm(r) == arm else _CTL_SUM
        c = c_index[str(r["concept"])]
        cell = fac[c, q_index[_question(r)]] if r.get("is_factual") else det[c]
        cell[col] += float(r["p_yes"])
        cell[col + 1] += 1
    for table in (det, fac):
        table[(table[..., _ARM_N] == 0) | (table[..., _CTL_N] == 0)] = 0.0
    # Only inputs with a pair are units: an empty one drawn would shrink its resample.
    paired = fac[..., _ARM_N] > 0
    keep_c = (det[:, _ARM_N] > 0) | paired.any(axis=1)
    return det[keep_c], fac[keep_c][:, paired.any(axis=0)]


def _shift(sums: np.ndarray) -> np.ndarray:
    """Arm mean − control mean along the last axis; nan where a count is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[..., _ARM_SUM] / sums[..., _ARM_N] - sums[..., _CTL_SUM] / sums[..., _CTL_N]


def _draw_counts(rng: np.random.Generator, size: int) -> np.ndarray:
    """NUM_BOOTSTRAP × size: how often each unit is drawn in each resample of `size` units."""
    if size == 0:
        return np.zeros((NUM_BOOTSTRAP, 0))
    return rng.multinomial(size, np.full(size, 1.0 / size), size=NUM_BOOTSTRAP).astype(float)


def _interval(draws: np.ndarray, num_units: Sequence[int]) -> list[float] | None:
    """The 95% percentile interval; None with fewer than 2 of any resampled unit (nothing
    varies between resamples) or when some draw held no pair (its shift is undefined)."""
    if min(num_units, default=0) < 2 or np.isnan(draws).any():
        return None
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(lo), float(hi)]


def _value(point: np.ndarray) -> float | None:
    value = float(point)
    return None if np.isnan(value) else value


def yes_shift_metrics(records: Sequence[Record], arm: str = "injection") -> dict[str, Any]:
    """Yes-shifts of `arm` against control and the introspection score, each with a 95%
    percentile interval from the paired, crossed bootstrap of concepts and questions."""
    det, fac = _tables(records, arm)
    detection, factual = _value(_shift(det.sum(axis=0))), _value(_shift(fac.sum(axis=(0, 1))))
    num_concepts = int((det[:, _ARM_N] > 0).sum())
    num_questions = int((fac[..., _ARM_N] > 0).any(axis=0).sum())
    num_factual_concepts = int((fac[..., _ARM_N] > 0).any(axis=1).sum())
    draws = _bootstrap(det, fac)
    units = {
        "detection_yes_shift": [num_concepts],
        "factual_yes_shift": [num_factual_concepts, num_questions],
        "introspection_score": [num_concepts, num_factual_concepts, num_questions],
    }
    out: dict[str, Any] = {
        "arm": arm,
        "n": {
            "detection": [int(det[:, _ARM_N].sum()), int(det[:, _CTL_N].sum())],
            "factual": [int(fac[..., _ARM_N].sum()), int(fac[..., _CTL_N].sum())],
        },
        "resampled": {"concepts": num_concepts, "questions": num_questions},
        "detection_yes_shift": detection,
        "factual_yes_shift": factual,
        "introspection_score": (
            None if detection is None or factual is None else detection - factual
        ),
    }
    for key in SHIFT_KEYS:
        out[key + "_ci"] = None if out[key] is None else _interval(draws[key], units[key])
    return out


def _bootstrap(det: np.ndarray, fac: np.ndarray) -> dict[str, np.ndarray]:
    """NUM_BOOTSTRAP draws of each statistic (nan where a draw held no pair). The draws depend
    on the numbers of concepts and questions only, so copies change nothing."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    concepts = _draw_counts(rng, len(det))
    questions = _draw_counts(rng, fac.shape[1])
    detection = _shift(concepts @ det)
    per_question = np.einsum("bc,cqk->bqk", concepts, fac)  # each question, drawn concepts
    factual = _shift(np.einsum("bqk,bq->bk", per_question, questions))
    # The detection question is one input, not a sample of questions: read as introspection,
    # its shift must stand out from what any one yes/no question's shift strays by. So each
    # draw also takes one factual question at random and adds how far its shift strays from
    # the mean of all of them (the same concepts drawn): without it, random weights whose
    # detection shift sits mid-pack among the factual questions' "show introspection".
    one = rng.integers(0, max(fac.shape[1], 1), NUM_BOOTSTRAP)
    if fac.shape[1]:
        single = _shift(per_question[np.arange(NUM_BOOTSTRAP), one])
        stray = single - _shift(per_question.sum(axis=1))
    else:
        stray = np.full(NUM_BOOTSTRAP, np.nan)
    return {
        "detection_yes_shift": detection,
        "factual_yes_shift": factual,
        "introspection_score": detection - factual - stray,
    }
