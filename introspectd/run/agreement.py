"""Agreement between a judge and human labels: confusion matrix, rates with Wilson intervals,
Cohen's kappa. Pure Python, shared by `calibrate` (app/calibrate.py) and the report.

The positive class is "pass": a true positive is a record both the humans and the judge passed,
so TPR is how many human passes the judge keeps and TNR how many human fails it keeps. A rate
(or kappa) whose denominator is zero is None, never a made-up 0 or 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from introspectd.protocol.intervals import wilson_interval as wilson


def wilson_interval(k: int, n: int) -> list[float] | None:
    """The 95% Wilson interval (protocol/intervals.py) as a JSON-ready [lo, hi]; None at n = 0."""
    interval = wilson(k, n)
    return None if interval is None else list(interval)


@dataclass(frozen=True)
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, pairs: Iterable[tuple[bool, bool]]) -> Confusion:
        """From (human_pass, judge_pass) pairs."""
        tp = fp = fn = tn = 0
        for human, judge in pairs:
            if human and judge:
                tp += 1
            elif judge:
                fp += 1
            elif human:
                fn += 1
            else:
                tn += 1
        return cls(tp, fp, fn, tn)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def tpr(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def tnr(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa: agreement beyond what the two raters' pass rates give by chance.
        None when chance agreement is total (both raters gave one answer only)."""
        n = self.n
        if n == 0:
            return None
        observed = (self.tp + self.tn) / n
        judge_pass, human_pass = (self.tp + self.fp) / n, (self.tp + self.fn) / n
        chance = judge_pass * human_pass + (1 - judge_pass) * (1 - human_pass)
        if chance >= 1.0:
            return None
        return (observed - chance) / (1 - chance)

    def to_dict(self) -> dict[str, Any]:
        """The calibration JSON's figures for one group."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "n": self.n,
            "tpr": self.tpr,
            "tnr": self.tnr,
            "accuracy": self.accuracy,
            "kappa": self.kappa,
            "tpr_ci": wilson_interval(self.tp, self.tp + self.fn),
            "tnr_ci": wilson_interval(self.tn, self.tn + self.fp),
            "accuracy_ci": wilson_interval(self.tp + self.tn, self.n),
        }


def _ratio(k: int, n: int) -> float | None:
    return k / n if n else None
