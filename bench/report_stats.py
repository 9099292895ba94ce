"""Coverage of the report's corrected-rate interval, and of the raw Wilson interval, by simulation.

Each repetition draws a calibration (human-pass and human-fail labels graded by a judge with
true TPR/TNR) and a cell of n trials whose true pass share is π, graded by the same judge; it
then asks whether the corrected interval (`corrected_pass_rate`: Rogan–Gladen, Jeffreys-draw
bootstrap) and the raw Wilson interval of the judge's pass share contain π. Coverage of the
corrected interval is over the repetitions where it is estimable; how often it is not (the
calibration cannot rule out a chance-level judge) is its own column. Also times one corrected
rate (two per metrics row in a report).

    .venv/bin/python bench/report_stats.py [--reps 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from introspectd.report.corrections import JudgeErrorRates, corrected_pass_rate
from introspectd.report.metrics import wilson_interval

# (name, true TPR, true TNR, human-pass labels, human-fail labels, cell trials, true π)
SCENARIOS = [
    ("seed judge, 51 labels, n=20, π=0.30", 0.97, 0.762, 30, 21, 20, 0.30),
    ("seed judge, 51 labels, n=80, π=0.30", 0.97, 0.762, 30, 21, 80, 0.30),
    ("seed judge, 51 labels, n=20, π=0.05", 0.97, 0.762, 30, 21, 20, 0.05),
    ("good judge, 200 labels, n=40, π=0.50", 0.90, 0.90, 100, 100, 40, 0.50),
    ("weak judge (J=0.3), 40 labels, n=40, π=0.40", 0.70, 0.60, 20, 20, 40, 0.40),
]


def coverage(
    tpr: float,
    tnr: float,
    n_pos: int,
    n_neg: int,
    n: int,
    pi: float,
    reps: int,
    rng: np.random.Generator,
) -> tuple[float, float, float, float, float]:
    """(corrected coverage where estimable, raw Wilson coverage, mean corrected width, unstable
    share, not-estimable share)."""
    p_obs = tpr * pi + (1 - tnr) * (1 - pi)
    hits = raw_hits = unstable = not_estimable = 0
    widths = []
    for _ in range(reps):
        tp = int(rng.binomial(n_pos, tpr))
        tn = int(rng.binomial(n_neg, tnr))
        k = int(rng.binomial(n, p_obs))
        c = corrected_pass_rate(k, n, JudgeErrorRates(tp, n_pos - tp, tn, n_neg - tn))
        unstable += c.is_unstable
        not_estimable += not c.is_estimable
        if c.ci is not None:
            hits += c.ci[0] <= pi <= c.ci[1]
            widths.append(c.ci[1] - c.ci[0])
        lo, hi = wilson_interval(k, n) or (0.0, 1.0)
        raw_hits += lo <= pi <= hi
    estimable = max(reps - not_estimable, 1)
    width = float(np.mean(widths)) if widths else float("nan")
    return hits / estimable, raw_hits / reps, width, unstable / reps, not_estimable / reps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    print(
        f"| scenario | corrected 95% CI covers π (where estimable) | raw Wilson covers π"
        f" | mean corrected width | unstable | not estimable | ({args.reps} reps)"
    )
    print("|---|---|---|---|---|---|")
    for name, tpr, tnr, n_pos, n_neg, n, pi in SCENARIOS:
        cov, raw, width, unstable, absent = coverage(tpr, tnr, n_pos, n_neg, n, pi, args.reps, rng)
        print(
            f"| {name} | {100 * cov:.1f}% | {100 * raw:.1f}% | {width:.3f} |"
            f" {100 * unstable:.0f}% | {100 * absent:.0f}% |"
        )
    judge = JudgeErrorRates(30, 0, 16, 5)
    start = time.perf_counter()
    for _ in range(200):
        corrected_pass_rate(52, 83, judge)
    print(f"\none corrected rate (4000 draws): {1000 * (time.perf_counter() - start) / 200:.2f} ms")


if __name__ == "__main__":
    main()
