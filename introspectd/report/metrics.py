"""The report's metric math (PROTOCOL.md, "Metrics"). Pure Python: no torch, no matplotlib.

Vocabulary. A record is one seed-format trial (`was_injected`, `judge`). A *judged* record has a
`judge` object; records whose `judge` is null are left out of every rate and counted in
`n_unjudged`. On an injection trial "pass" means the model noticed and named the concept; on a
control trial "pass" means it correctly reported nothing, so the control false-positive rate is
`1 − control pass rate` and net detection is `injection pass rate − control FP rate`.

Every rate comes with its counts (`counts[name] = [k, n]`) and a 95% interval (`name_ci`); a rate
with no data is None, and so is its interval.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from introspectd.protocol.intervals import (  # noqa: F401  (re-exported for report users)
    Z95,
    Interval,
    newcombe_interval,
    wilson_interval,
)
from introspectd.report.rules import passes_paper_rule, passes_seed_rule

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

# The rates a metrics dict holds, in the order they appear in it.
RATE_NAMES = (
    "injection_pass_rate",
    "control_fp_rate",
    "net_detection",
    "refusal_rate",
    "coherence_rate",
    "injection_pass_rate_excl_refusals",
    "control_fp_rate_excl_refusals",
    "net_detection_excl_refusals",
    # The paper's stricter rule (rules.py), over records whose judge graded it (v2); else None.
    "injection_pass_rate_paper",
    "control_fp_rate_paper",
    "net_detection_paper",
)


def proportion(k: int, n: int) -> float | None:
    """k/n, or None when there is nothing to divide by."""
    return k / n if n > 0 else None


@dataclass
class Tally:
    """Counts of one group of records; every metric is a function of these."""

    inj_pass: int = 0
    inj_n: int = 0
    ctl_fp: int = 0
    ctl_n: int = 0
    unjudged: int = 0
    refused: int = 0
    refusal_known: int = 0  # judged records that say whether they refused (older ones don't)
    coherent: int = 0
    coherence_known: int = 0
    inj_pass_nr: int = 0  # "_nr": refusals excluded
    inj_n_nr: int = 0
    ctl_fp_nr: int = 0
    ctl_n_nr: int = 0
    inj_pass_paper: int = 0  # "_paper": the paper rule, over records that carry it
    inj_n_paper: int = 0
    ctl_fp_paper: int = 0
    ctl_n_paper: int = 0

    def add(self, record: Mapping[str, Any]) -> None:
        judge = record.get("judge")
        if not isinstance(judge, Mapping):
            self.unjudged += 1
            return
        passed = passes_seed_rule(judge)
        self._add_paper(judge, bool(record.get("was_injected")))
        refused = _flag(judge.get("refused"))
        coherent = _flag(judge.get("coherent"))
        if refused is not None:
            self.refusal_known += 1
            self.refused += refused
        if coherent is not None:
            self.coherence_known += 1
            self.coherent += coherent
        # A record that doesn't say whether it refused is kept in the "excluding refusals" rates:
        # older judges only flagged refusals implicitly, by failing them.
        keep_nr = refused is not True
        if bool(record.get("was_injected")):
            self.inj_n += 1
            self.inj_pass += passed
            self.inj_n_nr += keep_nr
            self.inj_pass_nr += passed and keep_nr
        else:
            self.ctl_n += 1
            self.ctl_fp += not passed
            self.ctl_n_nr += keep_nr
            self.ctl_fp_nr += (not passed) and keep_nr

    def _add_paper(self, judge: Mapping[str, Any], is_injected: bool) -> None:
        passed = passes_paper_rule(judge, is_injected)
        if passed is None:
            return
        if is_injected:
            self.inj_n_paper += 1
            self.inj_pass_paper += passed
        else:
            self.ctl_n_paper += 1
            self.ctl_fp_paper += not passed


def _flag(value: Any) -> bool | None:
    """A judge's boolean field; None when absent or not a boolean (unknown, not False)."""
    return value if isinstance(value, bool) else None


def tally(records: Iterable[Mapping[str, Any]]) -> Tally:
    t = Tally()
    for record in records:
        t.add(record)
    return t


def compute_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics of one group of seed-format records, as a JSON-ready dict.

    Keys: `n_injection`, `n_control` (judged records of each kind: the denominators of the
    headline rates), `n_unjudged` (records with `judge` null, excluded from every rate), then for
    each name in RATE_NAMES the rate and `<name>_ci`, and `counts` mapping each rate but the two
    net detections to `[k, n]`.

    - `control_fp_rate` = control trials that did not pass / control trials.
    - `net_detection` = `injection_pass_rate − control_fp_rate`; its `_ci` is Newcombe's hybrid
      score interval for a difference of independent proportions (see `newcombe_interval`), the
      other intervals are Wilson score intervals.
    - `refusal_rate` and `coherence_rate` are over judged records of both kinds that carry the
      flag (older judges lack `refused`).
    - `*_excl_refusals` recompute the three headline rates without records flagged refused.
    - `*_paper` recompute them by the paper's rule (rules.py) over the records whose judge graded
      `detection_before_mention`; None (shown "n/a") where no record did (v1 judges).
    """
    return metrics_from_tally(tally(records))


def metrics_from_tally(t: Tally) -> dict[str, Any]:
    counts: dict[str, tuple[int, int]] = {
        "injection_pass_rate": (t.inj_pass, t.inj_n),
        "control_fp_rate": (t.ctl_fp, t.ctl_n),
        "refusal_rate": (t.refused, t.refusal_known),
        "coherence_rate": (t.coherent, t.coherence_known),
        "injection_pass_rate_excl_refusals": (t.inj_pass_nr, t.inj_n_nr),
        "control_fp_rate_excl_refusals": (t.ctl_fp_nr, t.ctl_n_nr),
        "injection_pass_rate_paper": (t.inj_pass_paper, t.inj_n_paper),
        "control_fp_rate_paper": (t.ctl_fp_paper, t.ctl_n_paper),
    }
    out: dict[str, Any] = {"n_injection": t.inj_n, "n_control": t.ctl_n, "n_unjudged": t.unjudged}
    for name in RATE_NAMES:
        if name.startswith("net_detection"):
            suffix = name.removeprefix("net_detection")
            inj = counts["injection_pass_rate" + suffix]
            ctl = counts["control_fp_rate" + suffix]
            rate = _difference(inj, ctl)
            ci = newcombe_interval(*inj, *ctl)
        else:
            rate = proportion(*counts[name])
            ci = wilson_interval(*counts[name])
        out[name] = rate
        out[name + "_ci"] = list(ci) if ci is not None else None
    out["counts"] = {name: list(kn) for name, kn in counts.items()}
    return out


def _difference(a: tuple[int, int], b: tuple[int, int]) -> float | None:
    pa, pb = proportion(*a), proportion(*b)
    return None if pa is None or pb is None else pa - pb


def group_by(items: Iterable[R], key: Callable[[R], K]) -> dict[K, list[R]]:
    """Items bucketed by key, buckets in first-seen order."""
    groups: dict[K, list[R]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups
