"""Judge-bias corrections and multiple-comparison statistics for the report. Pure: math + numpy.

Wilson and Newcombe intervals live in `metrics.py`; this module holds what corrects them:

- Rogan–Gladen: a rate measured by an imperfect judge, corrected with the judge's calibration
  (its TPR and TNR against human labels), with a parametric-bootstrap interval that carries the
  calibration's own sampling uncertainty as well as the cell's.
- One-sided Fisher exact test of "injection pass rate > control false-positive rate" per cell.
- Holm (family-wise) and Benjamini–Hochberg (false discovery rate) adjusted p-values.

Derivation of the two corrected rates (positive class = the judge's "pass", as in `calibrate`).
Let TPR = P(judge pass | human pass), TNR = P(judge fail | human fail), J = TPR + TNR − 1
(Youden's J). For any group whose true ("human") pass share is π, the judge's expected pass
share is p = TPR·π + (1 − TNR)·(1 − π), so π = (p + TNR − 1) / J: Rogan–Gladen.

- Injection pass rate: π is the true injection pass rate and p the observed one; the formula
  applies as is.
- Control false-positive rate: a control *fails* when the model claims a detection, so the
  FP rate is the control *fail* share φ = 1 − π, and the observed FP rate is q = 1 − p. Then
  φ = 1 − (1 − q + TNR − 1) / J = (q + TPR − 1) / J: the same formula with TPR and TNR
  swapped, because "fail" is the judge's negative class (its rate of calling a true fail a fail
  is TNR, and a true pass a fail is 1 − TPR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Below this Youden's J (TPR + TNR − 1) the correction divides by a small, noisy number: the
# corrected rate swings wildly with one more calibration label, so the cell is marked unstable.
# 0.2 means the judge separates pass from fail by less than a fifth of the scale; at J = 0 it
# separates nothing and the correction is undefined.
MIN_YOUDEN_J = 0.2
BOOTSTRAP_DRAWS = 4000
BOOTSTRAP_SEED = 20261202
# The cell is also unstable when more than this share of bootstrap draws of J fall below
# MIN_YOUDEN_J: the calibration cannot rule out a judge too weak to correct with.
MAX_SHARE_WEAK_DRAWS = 0.025
ALPHA = 0.05
# Each tail of a 95% interval: with this share of draws undefined, a bound is undefined too.
TAIL = 0.025


@dataclass(frozen=True)
class JudgeErrorRates:
    """A judge's measured error rates: counts of human-pass (pos) and human-fail (neg) labels."""

    tp: int
    fn: int
    tn: int
    fp: int

    @property
    def num_pos(self) -> int:
        return self.tp + self.fn

    @property
    def num_neg(self) -> int:
        return self.tn + self.fp

    @property
    def tpr(self) -> float:
        return self.tp / self.num_pos

    @property
    def tnr(self) -> float:
        return self.tn / self.num_neg

    @property
    def youden_j(self) -> float:
        return self.tpr + self.tnr - 1


@dataclass(frozen=True)
class Corrected:
    rate: float | None  # None with no trials, or when not estimable
    ci: tuple[float, float] | None  # 95% percentile bootstrap interval
    is_unstable: bool
    # Share of bootstrap draws whose J* = TPR* + TNR* − 1 is <= 0: they have no correction.
    failed_share: float = 0.0
    # False when the judge may be no better than chance (J <= 0, or failed_share >= TAIL).
    is_estimable: bool = True


def rogan_gladen(p: float, tpr: float, tnr: float) -> float | None:
    """True pass share from an observed judge pass share p, clipped to [0, 1]; None if J <= 0."""
    j = tpr + tnr - 1
    if j <= 0:
        return None
    return min(1.0, max(0.0, (p + tnr - 1) / j))


def corrected_pass_rate(
    k: int,
    n: int,
    judge: JudgeErrorRates,
    *,
    is_fail_share: bool = False,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> Corrected:
    """The Rogan–Gladen correction of k "positives" in n, with a parametric-bootstrap interval.

    `is_fail_share`: k counts judge *fails* (the control false-positive rate); TPR and TNR swap
    (see the module docstring). Parametric bootstrap: each draw resamples the cell's rate and the
    calibration's TPR and TNR, corrects and clips; the interval is the 2.5th–97.5th percentile
    of all draws. A draw with J* <= 0 has no correction (the judge it drew is no better than
    chance): it counts as 0 for the lower bound and 1 for the upper, so the interval holds
    whatever it stood for. When TAIL or more of the draws are such, the interval would be
    [0, 1] and the point a division by noise: the rate is not estimable (rate and ci None,
    `failed_share` says how many draws failed), never an interval from the draws that happened
    to work. A fixed seed makes the report reproducible.

    Each proportion k/n is drawn from Beta(k + ½, n − k + ½) (Jeffreys), not Bin(n, k/n)/n: the
    binomial draw is degenerate at k = 0 or k = n, so a judge with TPR 30/30 (the seed's judge
    had TPR 1.000) would carry no calibration uncertainty at all, and a 0/2 cell would get the
    interval [0, 0]. The Jeffreys draw's own 95% interval is the Jeffreys interval, which has
    coverage close to Wilson's.
    """
    if n <= 0:
        return Corrected(None, None, False)
    tpr, tnr = judge.tpr, judge.tnr
    if is_fail_share:
        tpr, tnr = tnr, tpr
    rate = rogan_gladen(k / n, tpr, tnr)
    rng = np.random.default_rng(seed)
    p_star = rng.beta(k + 0.5, n - k + 0.5, draws)
    tpr_star = rng.beta(judge.tp + 0.5, judge.fn + 0.5, draws)
    tnr_star = rng.beta(judge.tn + 0.5, judge.fp + 0.5, draws)
    if is_fail_share:
        tpr_star, tnr_star = tnr_star, tpr_star
    j_star = tpr_star + tnr_star - 1
    failed = j_star <= 0
    failed_share = float(failed.mean())
    is_unstable = (
        judge.youden_j < MIN_YOUDEN_J
        or float(np.mean(j_star < MIN_YOUDEN_J)) > MAX_SHARE_WEAK_DRAWS
    )
    if rate is None or failed_share >= TAIL:
        return Corrected(None, None, True, failed_share, is_estimable=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.clip((p_star + tnr_star - 1) / j_star, 0.0, 1.0)
    # A draw without a correction could be any rate: the worst case for each bound.
    lo = np.percentile(np.where(failed, 0.0, values), 100 * TAIL)
    hi = np.percentile(np.where(failed, 1.0, values), 100 * (1 - TAIL))
    return Corrected(rate, (float(lo), float(hi)), is_unstable, failed_share)


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """One-sided Fisher exact p-value of "rate 1 > rate 2" (k1/n1 against k2/n2).

    Conditional on the k1 + k2 positives, k1 is hypergeometric under equal rates; the p-value is
    P(X >= k1). Exact, so it holds for the small cells a sweep has. None if a sample is empty.
    """
    if n1 <= 0 or n2 <= 0:
        return None
    total = k1 + k2
    denom = math.comb(n1 + n2, total)
    tail = sum(math.comb(n1, x) * math.comb(n2, total - x) for x in range(k1, min(n1, total) + 1))
    return min(1.0, tail / denom)


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def bh_adjust(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (false discovery rate), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i], reverse=True)
    adjusted = [0.0] * m
    running = 1.0
    for position, i in enumerate(order):
        rank = m - position
        running = min(running, pvalues[i] * m / rank)
        adjusted[i] = min(1.0, running)
    return adjusted
