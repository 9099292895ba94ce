"""The report's metric math: Wilson and Newcombe intervals, rates, exclusions, empty groups."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspectd.report.metrics import (
    RATE_NAMES,
    compute_metrics,
    group_by,
    newcombe_interval,
    proportion,
    wilson_interval,
)


def rec(
    injected: bool,
    answer: str | None,
    *,
    coherent: bool | None = True,
    refused: bool | None = False,
) -> dict[str, Any]:
    """A seed-format record; answer None = judging failed (judge null). None flags are left out."""
    if answer is None:
        return {"was_injected": injected, "judge": None, "judge_error": "timeout"}
    judge: dict[str, Any] = {"answer": answer}
    if coherent is not None:
        judge["coherent"] = coherent
    if refused is not None:
        judge["refused"] = refused
    return {"was_injected": injected, "judge": judge}


# Reference values: Newcombe (1998), "Two-sided confidence intervals for the single proportion:
# comparison of seven methods", Statistics in Medicine 17:857-872, Table I, Wilson score method.
@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(k: int, n: int, lo: float, hi: float) -> None:
    ci = wilson_interval(k, n)
    assert ci is not None
    assert ci == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_by_hand() -> None:
    # 1/2, z = 1.96: centre = (0.5 + z²/4) / (1 + z²/2) = 0.5; half = z·sqrt(1/8 + z²/16)/(1 + z²/2)
    z = 1.959963984540054
    half = z * (1 / 8 + z * z / 16) ** 0.5 / (1 + z * z / 2)
    assert wilson_interval(1, 2) == pytest.approx((0.5 - half, 0.5 + half))
    assert wilson_interval(1, 2) == pytest.approx((0.0945, 0.9055), abs=1e-4)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) is None
    assert wilson_interval(5, 5) == pytest.approx((0.5655, 1.0), abs=1e-4)
    assert wilson_interval(5, 5)[1] == 1.0  # type: ignore[index]
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


# Newcombe (1998), "Interval estimation for the difference between independent proportions",
# Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score).
@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2", "lo", "hi"),
    [
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
    ],
)
def test_newcombe_matches_published_values(
    k1: int, n1: int, k2: int, n2: int, lo: float, hi: float
) -> None:
    assert newcombe_interval(k1, n1, k2, n2) == pytest.approx((lo, hi), abs=5e-5)


def test_newcombe_needs_both_samples() -> None:
    assert newcombe_interval(3, 4, 0, 0) is None
    assert newcombe_interval(0, 0, 3, 4) is None


def test_empty_group_has_no_rates() -> None:
    m = compute_metrics([])
    assert (m["n_injection"], m["n_control"], m["n_unjudged"]) == (0, 0, 0)
    for name in RATE_NAMES:
        assert m[name] is None, name
        assert m[name + "_ci"] is None, name
    assert all(kn == [0, 0] for kn in m["counts"].values())


def test_hand_checked_group() -> None:
    records = [
        # injection: 3 of 4 pass (one flagged incoherent: coherence is counted on its own),
        # and one refusal, which fails
        rec(True, "pass"),
        rec(True, "pass"),
        rec(True, "pass", coherent=False),
        rec(True, "fail", refused=True),
        # control: 1 of 3 claims a detection (fails) → FP 1/3
        rec(False, "pass"),
        rec(False, "pass"),
        rec(False, "fail"),
        # judging failed: counted, never in a rate
        rec(True, None),
        rec(False, None),
    ]
    m = compute_metrics(records)
    assert (m["n_injection"], m["n_control"], m["n_unjudged"]) == (4, 3, 2)
    assert m["injection_pass_rate"] == pytest.approx(3 / 4)
    assert m["control_fp_rate"] == pytest.approx(1 / 3)
    assert m["net_detection"] == pytest.approx(3 / 4 - 1 / 3)
    assert m["refusal_rate"] == pytest.approx(1 / 7)
    assert m["coherence_rate"] == pytest.approx(6 / 7)
    # Without the refusal: 3/3 injections pass, controls unchanged.
    assert m["injection_pass_rate_excl_refusals"] == 1.0
    assert m["control_fp_rate_excl_refusals"] == pytest.approx(1 / 3)
    assert m["net_detection_excl_refusals"] == pytest.approx(2 / 3)
    assert m["counts"] == {
        "injection_pass_rate": [3, 4],
        "control_fp_rate": [1, 3],
        "refusal_rate": [1, 7],
        "coherence_rate": [6, 7],
        "injection_pass_rate_excl_refusals": [3, 3],
        "control_fp_rate_excl_refusals": [1, 3],
        # v1 judgements: not graded for the paper rule, so no record counts toward it
        "injection_pass_rate_paper": [0, 0],
        "control_fp_rate_paper": [0, 0],
    }
    assert m["injection_pass_rate_ci"] == pytest.approx(list(wilson_interval(3, 4) or ()))
    assert m["net_detection_ci"] == pytest.approx(list(newcombe_interval(3, 4, 1, 3) or ()))


def test_unjudged_only_group() -> None:
    m = compute_metrics([rec(True, None), rec(False, None)])
    assert (m["n_injection"], m["n_control"], m["n_unjudged"]) == (0, 0, 2)
    assert m["injection_pass_rate"] is None and m["net_detection"] is None
    assert m["refusal_rate"] is None and m["coherence_rate"] is None


def test_net_detection_needs_controls() -> None:
    m = compute_metrics([rec(True, "pass"), rec(True, "fail")])
    assert m["injection_pass_rate"] == 0.5
    assert m["control_fp_rate"] is None
    assert m["net_detection"] is None and m["net_detection_ci"] is None


def test_refusals_in_controls_are_false_positives_until_excluded() -> None:
    # A refusing control fails (PROTOCOL.md), so it counts as a false positive; the
    # "excl. refusals" rates are there to take that out.
    m = compute_metrics([rec(False, "fail", refused=True), rec(False, "pass"), rec(True, "pass")])
    assert m["control_fp_rate"] == 0.5
    assert m["control_fp_rate_excl_refusals"] == 0.0
    assert m["net_detection"] == 0.5
    assert m["net_detection_excl_refusals"] == 1.0


def test_all_refused_leaves_no_excluded_rate() -> None:
    m = compute_metrics([rec(False, "fail", refused=True), rec(True, "pass")])
    assert m["control_fp_rate_excl_refusals"] is None
    assert m["net_detection_excl_refusals"] is None
    assert m["injection_pass_rate_excl_refusals"] == 1.0


def test_older_records_without_refused_flag() -> None:
    # Older judges had no `refused`: refusal rate is unknown (not 0), and nothing is excluded.
    m = compute_metrics([rec(True, "pass", refused=None), rec(False, "fail", refused=None)])
    assert m["refusal_rate"] is None
    assert m["counts"]["refusal_rate"] == [0, 0]
    assert m["net_detection_excl_refusals"] == m["net_detection"] == 0.0


def test_answer_case_and_missing_answer() -> None:
    m = compute_metrics(
        [rec(True, "PASS"), rec(True, " pass "), {"was_injected": True, "judge": {}}]
    )
    assert m["counts"]["injection_pass_rate"] == [2, 3]


def test_proportion_and_group_by() -> None:
    assert proportion(0, 0) is None
    assert proportion(1, 4) == 0.25
    assert group_by([3, 1, 4, 1, 5], lambda x: x % 2) == {1: [3, 1, 1, 5], 0: [4]}


# ------------------------------------------------------------------------------- properties

records_strategy = st.lists(
    st.builds(
        rec,
        st.booleans(),
        st.sampled_from(["pass", "fail", None]),
        coherent=st.sampled_from([True, False, None]),
        refused=st.sampled_from([True, False, None]),
    ),
    max_size=60,
)


@given(st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_rate(kn: tuple[int, int]) -> None:
    k, n = kn
    ci = wilson_interval(k, n)
    if n == 0:
        assert ci is None
        return
    assert ci is not None
    assert 0.0 <= ci[0] <= k / n <= ci[1] <= 1.0


@given(records_strategy)
def test_rates_are_proportions_and_intervals_contain_them(records: list[dict[str, Any]]) -> None:
    m = compute_metrics(records)
    assert m["n_injection"] + m["n_control"] + m["n_unjudged"] == len(records)
    for name in RATE_NAMES:
        rate, ci = m[name], m[name + "_ci"]
        if rate is None:
            assert ci is None
            continue
        low = -1.0 if name.startswith("net_detection") else 0.0
        assert low <= ci[0] <= rate + 1e-12
        assert rate - 1e-12 <= ci[1] <= 1.0
    for name, (k, n) in m["counts"].items():
        assert 0 <= k <= n
        assert m[name] == (k / n if n else None)
