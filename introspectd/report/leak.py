"""Claim before mention, leak-aware (docs/grading.md, "Claim before mention (leak-aware)").

The paper's rule asks the judge whether an injected answer's claim of noticing comes before the
answer first mentions the concept (`detection_before_mention`). This module checks that verdict
against the lexicon (protocol/lexicon.py), which marks where an answer first mentions its
concept without any judge:

- **lexicon rule**: an injected answer passes when it passes the seed rule (the judge says it
  claims a detection, names the injected concept, and it is coherent) and either the lexicon
  finds no mention of the concept, or the claim is found in the text before the first mention.
  It differs from the paper rule only in who places the claim against the mention, so the two
  rates side by side show how far the judge's ordering can be trusted.
- **locating the claim**: v2 judges say whether the answer claims a detection, not where. The
  claim is the first of `CLAIM_PHRASES` in the answer (whole words, any case) that is not
  negated. With a mention and no claim phrase found, the claim cannot be placed: the answer
  fails the lexicon rule (the stricter reading) and is counted in `n_claim_not_located`.

Per model × layer × strength (concepts pooled) and per model: both injection pass rates over
the same answers (injected, graded by a v2 judge), each with a Wilson interval (generated
answers are independent samples), and the two rules' agreement over the answers where they can
differ (those passing the seed rule): the share that agree (Wilson) and Cohen's kappa, with a
bootstrap interval that redraws those answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from introspectd.protocol.lexicon import Lexicon
from introspectd.protocol.results import Record
from introspectd.report.mentions import Answer, generated_answers
from introspectd.report.metrics import group_by, proportion, wilson_interval
from introspectd.report.rules import PAPER_FIELD, passes_paper_rule, passes_seed_rule
from introspectd.report.scale import fmt_rate
from introspectd.run.agreement import Confusion

# Where an answer says it notices something. Short on purpose, and words of noticing rather
# than of content, so the list finds the claim without finding the concept.
CLAIM_PHRASES: tuple[str, ...] = (
    "I notice",
    "I'm noticing",
    "I am noticing",
    "I noticed",
    "I detect",
    "I'm detecting",
    "I am detecting",
    "I can detect",
    "I sense",
    "I'm sensing",
    "I am sensing",
    "I can sense",
    "injected",
    "out of place",
    "unusual",
    "unexpected",
    "intrusive",
)
# A claim phrase is negated ("nothing unusual", "I don't sense anything out of place") when
# one of the NEGATION_WINDOW words before it is a negation: one of these, or a word ending in
# "n't". "I notice nothing" / "I detect no ..." are negated by the word right after.
NEGATIONS = frozenset({"no", "not", "nothing", "never", "none", "nor", "neither", "without"})
NEGATION_WINDOW = 3
_AFTER = frozenset({"nothing", "no"})
_WORD = re.compile(r"\w+(?:['’]\w+)*")


def _phrase_regex(phrase: str) -> str:
    words = (re.escape(w).replace("'", "['’]") for w in phrase.split())
    return r"\s+".join(words)


_CLAIMS = re.compile(
    r"(?<!\w)(?:" + "|".join(_phrase_regex(p) for p in CLAIM_PHRASES) + r")(?!\w)",
    re.IGNORECASE,
)
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 20260125


def _negates(word: str) -> bool:
    word = word.lower().replace("’", "'")
    return word in NEGATIONS or word.endswith("n't")


def first_claim(answer: str) -> int | None:
    """The code-point offset of the answer's first claim of noticing, or None."""
    for match in _CLAIMS.finditer(answer):
        before = _WORD.findall(answer[: match.start()])[-NEGATION_WINDOW:]
        after = _WORD.findall(answer[match.end() : match.end() + 20])[:1]
        if any(_negates(w) for w in before) or any(w.lower() in _AFTER for w in after):
            continue
        return match.start()
    return None


def claim_before_mention(answer: str, first_mention: int | None) -> bool | None:
    """The lexicon's order verdict: True with no mention or a claim found before it, False
    with a claim found at or after it, None when there is a mention but no claim found."""
    if first_mention is None:
        return True
    claim = first_claim(answer)
    return None if claim is None else claim < first_mention


# --- the summary -----------------------------------------------------------------------------


def leak_summary(records: Sequence[Record], lexicon: Lexicon) -> dict[str, Any] | None:
    """The summary's "leak" section; None when no injected answer was graded by a v2 judge."""
    graded = [
        a
        for a in generated_answers(records, lexicon)
        if a[0]["was_injected"] and isinstance(a[0].get("judge"), Mapping)
        if PAPER_FIELD in a[0]["judge"]
    ]
    if not graded:
        return None
    by_cell = group_by(graded, lambda a: (a[0]["model"], a[0]["layer"], a[0]["strength"]))
    by_model = group_by(graded, lambda a: a[0]["model"])
    return {
        "by_model": {m: leak_metrics(group) for m, group in sorted(by_model.items())},
        "by_cell": [
            {"model": m, "layer": layer, "strength": s, **leak_metrics(group)}
            for (m, layer, s), group in sorted(by_cell.items(), key=lambda kv: kv[0])
        ],
    }


def leak_metrics(answers: Sequence[Answer]) -> dict[str, Any]:
    """Paper-rule and lexicon-rule injection pass rates, and the rules' agreement, of injected
    answers graded by a v2 judge."""
    paper, lexical, pairs = 0, 0, []
    not_located = 0
    for record, mention in answers:
        judge = record["judge"]
        by_paper = passes_paper_rule(judge, True) is True
        paper += by_paper
        if not passes_seed_rule(judge):
            continue
        order = claim_before_mention(record["response"], mention.first_char)
        not_located += order is None
        lexical += order is True
        pairs.append((by_paper, order is True))
    confusion = Confusion.of(pairs)
    counts = {
        "paper_rule_rate": (paper, len(answers)),
        "lexicon_rule_rate": (lexical, len(answers)),
        "agreement": (confusion.tp + confusion.tn, confusion.n),
    }
    out: dict[str, Any] = {}
    for name, (k, n) in counts.items():
        ci = wilson_interval(k, n)
        out[name] = proportion(k, n)
        out[name + "_ci"] = list(ci) if ci is not None else None
    out["kappa"] = confusion.kappa
    out["kappa_ci"] = kappa_interval(confusion)
    out["n_claim_not_located"] = not_located
    out["counts"] = {name: list(kn) for name, kn in counts.items()}
    return out


def kappa_interval(c: Confusion) -> list[float] | None:
    """95% percentile interval of Cohen's kappa, redrawing the answers (multinomial over the
    2×2 table, fixed seed). Draws where kappa is undefined (both rules gave one verdict only)
    are left out; None when the kappa itself is undefined."""
    if c.kappa is None:
        return None
    table = np.array([c.tp, c.fp, c.fn, c.tn], dtype=float)
    draws = np.random.default_rng(BOOTSTRAP_SEED).multinomial(c.n, table / c.n, BOOTSTRAP_DRAWS)
    tp, fp, fn, tn = (draws[:, i] / c.n for i in range(4))
    observed = tp + tn
    a, b = tp + fp, tp + fn  # each rule's pass share
    chance = a * b + (1 - a) * (1 - b)
    defined = chance < 1.0
    kappas = (observed[defined] - chance[defined]) / (1 - chance[defined])
    if kappas.size == 0:
        return None
    lo, hi = np.percentile(kappas, [2.5, 97.5])
    return [float(lo), float(hi)]


# --- report.md -------------------------------------------------------------------------------


def leak_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = [
        "## Claim before mention (leak-aware)",
        "",
        "Does the model say it noticed something *before* its answer drifts into the concept?"
        " Injected answers graded by a v2 judge, all concepts pooled. *Paper rule*: the seed"
        " rule and the judge's `detection_before_mention`. *Lexicon rule*: the seed rule and,"
        " from the text alone, no mention of the concept (its word list, as in the mentions"
        " section) or a claim of noticing (a phrase such as “I notice”, “unusual”, “out of"
        " place”, not negated) before the first mention. *Agreement*: over the answers passing"
        " the seed rule (where the two can differ), the share graded alike and Cohen's kappa"
        " with a bootstrap 95% interval. *Not located*: answers with a mention where no claim"
        " phrase was found (they fail the lexicon rule). Rates: 95% Wilson interval, (k/n).",
        "",
        "| model | layer | strength | paper rule | lexicon rule | agreement | kappa"
        " | not located |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, overall in section["by_model"].items():
        lines.append(_row(model, "all", "all", overall))
        for c in (c for c in section["by_cell"] if c["model"] == model):
            lines.append(_row(model, str(c["layer"]), f"{c['strength']:g}", c))
    return lines


def _row(model: str, layer: str, strength: str, m: dict[str, Any]) -> str:
    return (
        f"| `{model}` | {layer} | {strength} | {fmt_rate(m, 'paper_rule_rate')} | "
        f"{fmt_rate(m, 'lexicon_rule_rate')} | {fmt_rate(m, 'agreement')} | {_fmt_kappa(m)} | "
        f"{m['n_claim_not_located']} |"
    )


def _fmt_kappa(m: dict[str, Any]) -> str:
    """`0.62 [0.31, 0.88]`, or `—` where undefined (both rules gave one verdict only)."""
    if m["kappa"] is None:
        return "—"
    lo, hi = m["kappa_ci"]
    return f"{m['kappa']:.2f} [{lo:.2f}, {hi:.2f}]"
