"""What the summary's raw rates support: judge-bias corrections and multiple comparisons.

Both add keys to the summary built by `writer.build_summary`, beside the raw figures, never in
their place. The statistics themselves are in `corrections.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from introspectd.report.corrections import (
    ALPHA,
    BOOTSTRAP_DRAWS,
    MIN_YOUDEN_J,
    TAIL,
    Corrected,
    JudgeErrorRates,
    corrected_pass_rate,
    fisher_greater,
    holm_adjust,
)

CORRECTION_METHOD = (
    f"Rogan–Gladen, clipped to [0, 1]; 95% percentile interval from a parametric bootstrap"
    f" ({BOOTSTRAP_DRAWS} draws, fixed seed) that draws the cell's rate and the calibration's"
    f" TPR and TNR each from its Jeffreys Beta(k + ½, n − k + ½), so the calibration's own"
    f" uncertainty is carried (a binomial resample would freeze a 30/30 TPR at 1); a draw"
    f" with TPR + TNR − 1 <= 0 has no correction and counts as 0 for the lower bound and 1 for"
    f" the upper; with {100 * TAIL:g}% or more such draws (or TPR + TNR − 1 <= 0 itself) the"
    f" rate is not estimable; unstable when TPR + TNR − 1 < {MIN_YOUDEN_J} or more than 2.5%"
    f" of bootstrap draws fall below it"
)
SIGNIFICANCE_METHOD = (
    "one-sided Fisher exact test of injection pass rate > control false-positive rate per"
    f" cell, Holm-adjusted (family-wise error) across all ranked cells, alpha = {ALPHA}"
)


def _metric_dicts(summary: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield summary["overall"]
    yield from summary["by_model"].values()
    yield from summary["by_concept"].values()
    yield from summary["groups"]
    yield from summary["by_model_layer_strength"]


def add_corrections(
    summary: dict[str, Any], judge: JudgeErrorRates, calibration_info: dict[str, Any]
) -> None:
    """Every metrics dict of `summary` gains `corrected`: the corrected injection pass and
    control false-positive rates with intervals and the unstable mark; the summary gains
    `calibration` (where the judge's error rates came from, and the method)."""
    summary["calibration"] = {
        **calibration_info,
        "tp": judge.tp,
        "fn": judge.fn,
        "tn": judge.tn,
        "fp": judge.fp,
        "tpr": judge.tpr,
        "tnr": judge.tnr,
        "youden_j": judge.youden_j,
        "method": CORRECTION_METHOD,
    }
    for m in _metric_dicts(summary):
        (k_inj, n_inj), (k_fp, n_ctl) = (
            m["counts"]["injection_pass_rate"],
            m["counts"]["control_fp_rate"],
        )
        inj = corrected_pass_rate(k_inj, n_inj, judge)
        ctl = corrected_pass_rate(k_fp, n_ctl, judge, is_fail_share=True)
        m["corrected"] = {
            **_corrected_fields("injection_pass_rate", inj),
            **_corrected_fields("control_fp_rate", ctl),
            "is_unstable": inj.is_unstable or ctl.is_unstable,
        }


def _corrected_fields(name: str, c: Corrected) -> dict[str, Any]:
    """The rate and its interval (None when not estimable), whether it is, and the share of
    bootstrap draws without a correction (J* <= 0), so the reader sees why."""
    return {
        name: c.rate,
        name + "_ci": list(c.ci) if c.ci else None,
        name + "_estimable": c.is_estimable,
        name + "_failed_share": c.failed_share,
    }


def add_significance(groups: list[dict[str, Any]]) -> None:
    """Each cell with both kinds of trial gains `p_value` (one-sided Fisher), `p_holm` and
    `is_significant` (p_holm < ALPHA); the family is every such cell, not just the shown top."""
    tested = []
    for g in groups:
        (k1, n1), (k2, n2) = g["counts"]["injection_pass_rate"], g["counts"]["control_fp_rate"]
        p = fisher_greater(k1, n1, k2, n2)
        if p is not None:
            g["p_value"] = p
            tested.append(g)
    for g, adjusted in zip(tested, holm_adjust([g["p_value"] for g in tested]), strict=True):
        g["p_holm"] = adjusted
        g["is_significant"] = adjusted < ALPHA
