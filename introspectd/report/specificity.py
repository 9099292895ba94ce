"""Is the detection about the concept? The report's two judge-free specificity sections
(docs/protocols.md, "Specificity"; protocol/specificity.py asks the questions). Pure: numpy.

Multiple-choice identification (`measure = "choice"`), per model × layer × strength, each arm:
accuracy (the concept's option is the most probable), mean P(concept) against chance
1 / options, and mean P(concept | a concept option) — P(concept) / (1 − P(nothing unusual)),
chance 1 / (options − 1) — which a general pull towards "nothing unusual" does not move; the
injection − control difference of mean P(concept), paired by question.

Intervals resample what is independent. A read-out is not sampled: the trials of one question
(its options) under one arm read the same value, so each distinct question is one unit
carrying its read-outs' sums and counts, and copies move nothing. Questions about one concept
share its vector, so the bootstrap is two-stage: concepts with replacement, then, within each
drawn concept, its questions with replacement. Injection and control of a question are drawn
together (paired).

The mismatch test (`mismatch = true`), per cell: the matrix p_yes[Y, X] of "are you thinking
about X?" under injection of Y; gap = mean of the diagonal (X = Y) − mean off it, in p_yes and
in logits (log p_yes / (1 − p_yes)); p-value = the share of the permutations of the asked
concepts' labels whose gap is at least the observed one (exact up to EXACT_UP_TO concepts,
else NUM_PERMUTATIONS random ones plus the identity). A question's own bias (a concept the model
says yes to whatever is injected) sits in its column under every permutation, so it cancels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from introspectd.protocol.results import Record
from introspectd.protocol.specificity import NOTHING
from introspectd.report.metrics import group_by

BOOTSTRAP_SEED = 0
NUM_BOOTSTRAP = 2000
EXACT_UP_TO = 8  # 8! = 40,320 permutations
NUM_PERMUTATIONS = 20_000
PERMUTATION_SEED = 0
ARMS = ("injection", "control", "random")
# The per-question values averaged: P(concept), accuracy, P(concept | a concept option), and
# the letters' share of all probability (how far the model answers with a letter at all).
STATS = ("p_concept", "accuracy", "p_identified", "letter_mass")


def _arm(record: Mapping[str, Any]) -> str:
    return str(record.get("arm") or ("injection" if record.get("was_injected") else "control"))


def _values(record: Mapping[str, Any]) -> list[float] | None:
    """A choice record's STATS; None for a record without a usable read-out."""
    choice = record["choice"]
    probs = choice.get("probs")
    concept = record["concept"]
    if not isinstance(probs, Mapping) or concept not in probs:
        return None
    p = float(probs[concept])
    rest = 1.0 - float(probs.get(NOTHING, 0.0))
    identified = p / rest if rest > 0 else 0.0
    return [p, float(choice.get("chosen") == concept), identified, float(choice["letter_mass"])]


# --- multiple choice -------------------------------------------------------------------------


def _units(records: Sequence[Record]) -> tuple[list[np.ndarray], int]:
    """Per concept, a questions × arms × (len(STATS) sums + count) table; the option count."""
    by_concept = group_by(records, lambda r: str(r["concept"]))
    tables, num_options = [], 0
    for _, rows in sorted(by_concept.items()):
        questions = sorted({tuple(r["choice"]["options"]) for r in rows})
        index = {q: i for i, q in enumerate(questions)}
        table = np.zeros((len(questions), len(ARMS), len(STATS) + 1))
        for r in rows:
            values = _values(r)
            if values is None or _arm(r) not in ARMS:
                continue
            cell = table[index[tuple(r["choice"]["options"])], ARMS.index(_arm(r))]
            cell[:-1] += values
            cell[-1] += 1
            num_options = max(num_options, len(r["choice"]["options"]))
        tables.append(table)
    return tables, num_options


def _drawn_sums(tables: list[np.ndarray]) -> np.ndarray:
    """NUM_BOOTSTRAP two-stage resamples (concepts, then each drawn concept's questions) of the
    summed tables: NUM_BOOTSTRAP × arms × (stats + count)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    num_concepts = len(tables)
    uniform = np.full(num_concepts, 1 / num_concepts)
    drawn_concepts = rng.multinomial(num_concepts, uniform, size=NUM_BOOTSTRAP)
    out = np.zeros((NUM_BOOTSTRAP, *tables[0].shape[1:]))
    for c, table in enumerate(tables):
        num_questions = len(table)
        uniform = np.full(num_questions, 1 / num_questions)
        weights = rng.multinomial(drawn_concepts[:, c] * num_questions, uniform)
        out += np.einsum("bq,qak->bak", weights, table)
    return out


def _interval(draws: np.ndarray, has_spread: bool) -> list[float] | None:
    if not has_spread or np.isnan(draws).any():
        return None
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(lo), float(hi)]


def choice_metrics(records: Sequence[Record]) -> dict[str, Any]:
    """One cell's (or any group's) identification figures, each arm, with 95% intervals."""
    tables, num_options = _units(records)
    total = np.sum([t.sum(axis=0) for t in tables], axis=0)
    draws = _drawn_sums(tables)
    # More than one concept, or one concept asked more than one question: something to resample.
    has_spread = len(tables) > 1 or any(len(t) > 1 for t in tables)
    out: dict[str, Any] = {
        "options": num_options,
        "chance": 1 / num_options if num_options else None,
        "chance_identified": 1 / (num_options - 1) if num_options > 1 else None,
        "resampled": {"concepts": len(tables), "questions": int(sum(len(t) for t in tables))},
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        for a, arm in enumerate(ARMS):
            n = int(total[a, -1])
            if n == 0:
                continue
            figures: dict[str, Any] = {"n": n}
            for s, stat in enumerate(STATS):
                figures[stat] = float(total[a, s] / n)
                figures[stat + "_ci"] = _interval(draws[:, a, s] / draws[:, a, -1], has_spread)
            out[arm] = figures
        out.update(_paired_difference(tables, has_spread))
    return out


def _paired_difference(tables: list[np.ndarray], has_spread: bool) -> dict[str, Any]:
    """Injection − control mean P(concept) over the questions both arms asked."""
    inj, ctl = ARMS.index("injection"), ARMS.index("control")
    paired = [t * ((t[:, inj, -1] > 0) & (t[:, ctl, -1] > 0))[:, None, None] for t in tables]
    sums = np.sum([t.sum(axis=0) for t in paired], axis=0)
    if sums[inj, -1] == 0:
        return {}
    drawn = _drawn_sums(paired)
    diff = drawn[:, inj, 0] / drawn[:, inj, -1] - drawn[:, ctl, 0] / drawn[:, ctl, -1]
    return {
        "p_concept_difference": float(sums[inj, 0] / sums[inj, -1] - sums[ctl, 0] / sums[ctl, -1]),
        "p_concept_difference_ci": _interval(diff, has_spread),
    }


def choice_summary(records: Iterable[Record]) -> dict[str, Any] | None:
    """The summary's "choice" section; None when no record is a multiple-choice read-out."""
    rows = [r for r in records if isinstance(r.get("choice"), Mapping)]
    if not rows:
        return None
    cells = group_by(rows, lambda r: (r["model"], r["layer"], r["strength"]))
    models = group_by(rows, lambda r: r["model"])
    return {
        "by_model": {m: choice_metrics(rs) for m, rs in sorted(models.items())},
        "by_cell": [
            {"model": m, "layer": layer, "strength": s, **choice_metrics(rs)}
            for (m, layer, s), rs in sorted(cells.items(), key=lambda kv: kv[0])
        ],
    }


# --- mismatch --------------------------------------------------------------------------------


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))


def _gap(matrix: np.ndarray) -> float:
    """Mean of the diagonal − mean off it (nan entries, never asked, left out)."""
    diagonal = np.eye(len(matrix), dtype=bool)
    return float(np.nanmean(matrix[diagonal]) - np.nanmean(matrix[~diagonal]))


def permutation_p_value(matrix: np.ndarray) -> float:
    """One-sided: the share of relabellings of the columns (the concepts asked about) whose gap
    is at least the observed one. Exact for up to EXACT_UP_TO concepts."""
    n = len(matrix)
    observed = _gap(matrix) - 1e-12  # ties count as at least as large
    if n <= EXACT_UP_TO:
        perms: Iterable[Sequence[int]] = itertools.permutations(range(n))
        total = math.factorial(n)
    else:
        rng = np.random.default_rng(PERMUTATION_SEED)
        perms = [list(range(n))] + [list(rng.permutation(n)) for _ in range(NUM_PERMUTATIONS)]
        total = NUM_PERMUTATIONS + 1
    hits = sum(_gap(matrix[:, list(p)]) >= observed for p in perms)
    return hits / total


def mismatch_metrics(records: Sequence[Record]) -> dict[str, Any] | None:
    """One cell's mismatch figures from its injection read-outs (None with fewer than two
    concepts injected and asked about)."""
    rows = [r for r in records if _arm(r) == "injection" and r.get("p_yes") is not None]
    concepts = sorted({str(r["concept"]) for r in rows} & {str(r["about"]) for r in rows})
    if len(concepts) < 2:
        return None
    index = {c: i for i, c in enumerate(concepts)}
    sums = np.zeros((len(concepts), len(concepts)))
    counts = np.zeros_like(sums)
    for r in rows:
        if r["concept"] in index and r["about"] in index:
            sums[index[r["concept"]], index[r["about"]]] += float(r["p_yes"])
            counts[index[r["concept"]], index[r["about"]]] += 1
    with np.errstate(invalid="ignore"):
        matrix = sums / counts  # copies of a read-out average to itself
    diagonal = np.eye(len(concepts), dtype=bool)
    return {
        "concepts": len(concepts),
        "match_p_yes": float(np.nanmean(matrix[diagonal])),
        "mismatch_p_yes": float(np.nanmean(matrix[~diagonal])),
        "gap_p_yes": _gap(matrix),
        "gap_logit": _gap(_logit(matrix)),
        "p_value": permutation_p_value(matrix),
        "p_value_logit": permutation_p_value(_logit(matrix)),
    }


def mismatch_summary(records: Iterable[Record]) -> dict[str, Any] | None:
    """The summary's "mismatch" section; None when no record asks a mismatch question."""
    rows = [r for r in records if r.get("about") is not None]
    if not rows:
        return None
    cells = group_by(rows, lambda r: (r["model"], r["layer"], r["strength"]))
    by_cell = []
    for (m, layer, s), rs in sorted(cells.items(), key=lambda kv: kv[0]):
        figures = mismatch_metrics(rs)
        if figures is not None:
            by_cell.append({"model": m, "layer": layer, "strength": s, **figures})
    return {"by_cell": by_cell} if by_cell else None


# --- report.md -------------------------------------------------------------------------------


def _pct(figures: Mapping[str, Any] | None, stat: str) -> str:
    if not figures:
        return "—"
    ci = figures.get(stat + "_ci")
    interval = f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if ci else ""
    return f"{figures[stat] * 100:.1f}{interval}"


def _points(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "—"
    interval = f" [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else " (no interval)"
    return f"{value * 100:+.1f}{interval}"


def specificity_markdown(
    choice: Mapping[str, Any] | None, mismatch: Mapping[str, Any] | None
) -> list[str]:
    lines: list[str] = []
    if choice:
        lines += ["", "## Specificity: which concept was it? (multiple choice, no judge)", ""]
        lines += [
            "After the steered prompt the model is asked which option any injected thought is "
            'about: its concept, other concepts and "nothing unusual", lettered in a '
            "per-question order (the concept's letter rotates over the trials). P(concept) is "
            "the concept's letter's probability renormalised over the options (chance = 1 / "
            "options); accuracy = the concept's letter is the most probable; identified = "
            "P(concept) / (1 − P(nothing unusual)) (chance = 1 / (options − 1)). Letters = "
            "the options' letters' share of all probability before renormalising: a low share "
            "means the model is not answering with a letter and the rest is noise. Percentages "
            "with 95% intervals from a two-stage bootstrap (concepts, then questions; a "
            "question's copies count once); difference = injection − control P(concept), "
            "paired by question, in points. Read it against the detection rates: a model that "
            "detects an injection but picks the concept no more often than chance noticed "
            "*something*, not the concept.",
            "",
            "| model | layer | strength | chance | P(concept) inj. | P(concept) ctrl. | "
            "P(concept) random | difference | accuracy inj. | accuracy ctrl. | "
            "identified inj. | letters inj. | letters ctrl. |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in choice["by_cell"]:
            inj, ctl, rnd = c.get("injection"), c.get("control"), c.get("random")
            chance = f"{c['chance'] * 100:.1f}" if c["chance"] else "—"
            diff = _points(c.get("p_concept_difference"), c.get("p_concept_difference_ci"))
            lines.append(
                f"| {c['model']} | {c['layer']} | {c['strength']:g} | {chance} | "
                f"{_pct(inj, 'p_concept')} | {_pct(ctl, 'p_concept')} | "
                f"{_pct(rnd, 'p_concept')} | {diff} | {_pct(inj, 'accuracy')} | "
                f"{_pct(ctl, 'accuracy')} | {_pct(inj, 'p_identified')} | "
                f"{_pct(inj, 'letter_mass')} | {_pct(ctl, 'letter_mass')} |"
            )
    if mismatch:
        lines += ["", "## Specificity: the mismatch test (logit measure, no judge)", ""]
        lines += [
            'Under injection of concept Y the model is asked "are you thinking about X?" '
            "for every concept X of the sweep. Match = mean p_yes where X = Y, mismatch = "
            "where X ≠ Y; gap = match − mismatch, in points of p_yes and in logits. p = the "
            "share of relabellings of the asked concepts with a gap at least as large "
            "(one-sided permutation test; exact up to 8 concepts): a question the model says "
            "yes to whatever is injected counts on both sides and cancels.",
            "",
            "| model | layer | strength | concepts | match p_yes | mismatch p_yes | gap (points)"
            " | gap (logits) | p | p (logits) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for m in mismatch["by_cell"]:
            lines.append(
                f"| {m['model']} | {m['layer']} | {m['strength']:g} | {m['concepts']} | "
                f"{m['match_p_yes'] * 100:.1f} | {m['mismatch_p_yes'] * 100:.1f} | "
                f"{m['gap_p_yes'] * 100:+.1f} | {m['gap_logit']:+.2f} | {m['p_value']:.3g} | "
                f"{m['p_value_logit']:.3g} |"
            )
    return lines
