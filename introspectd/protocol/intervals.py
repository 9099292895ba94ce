"""Confidence intervals for proportions. Pure Python: the report's tables and the adaptive
scheduler's stopping rules use the same math (report/metrics.py, run/round_decisions.py)."""

from __future__ import annotations

import math

# Two-sided 95%: the normal quantile at 0.975.
Z95 = 1.959963984540054

Interval = tuple[float, float]


def wilson_interval(k: int, n: int, z: float = Z95) -> Interval | None:
    """Wilson score interval for k successes in n trials (95% by default); None when n == 0.

    Chosen over the normal ("Wald") interval because sweep cells are small (tens of trials) and
    rates sit near 0 or 1, where Wald collapses to zero width or leaves [0, 1].
    """
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # The exact bounds at k == 0 and k == n are 0 and 1; pin them so rounding never excludes p.
    lo = 0.0 if k == 0 else max(0.0, min(p, centre - half))
    hi = 1.0 if k == n else min(1.0, max(p, centre + half))
    return lo, hi


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> Interval | None:
    """Interval for p1 − p2 of two independent proportions: Newcombe's hybrid score method.

    Newcombe (1998), "Interval estimation for the difference between independent proportions",
    method 10: combine each proportion's Wilson interval (l_i, u_i) as
    [d − sqrt((p1 − l1)² + (u2 − p2)²), d + sqrt((u1 − p1)² + (p2 − l2)²)] with d = p1 − p2.
    It keeps to [−1, 1] and behaves at 0 and 1, unlike the Wald difference interval.
    None when either sample is empty.
    """
    ci1, ci2 = wilson_interval(k1, n1, z), wilson_interval(k2, n2, z)
    if ci1 is None or ci2 is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = ci1, ci2
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, lo), min(1.0, hi)
