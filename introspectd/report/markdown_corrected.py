"""report.md's sections on judge bias: which judge, and the corrected rates. Pure Python."""

from __future__ import annotations

from typing import Any

from introspectd.report.corrections import MIN_YOUDEN_J


def judge_lines(summary: dict[str, Any]) -> list[str]:
    """Which judge's grades were counted, when the results sat beside their run database."""
    sel = summary.get("judge_selection")
    if sel is None:
        return []
    others = [fp for fp in sel["known"] if fp != sel["fingerprint"]]
    line = f"Grades counted: judge `{sel['fingerprint']}`"
    if others:
        line += f" (other judges in the run database: {', '.join(f'`{o}`' for o in others)};"
        line += " pick one with `--judge FINGERPRINT`)"
    line += f"; {sel['n_regraded']} record(s) took this judge's grade from the run database"
    line += f", {sel['n_ungraded']} it never graded are counted as unjudged."
    return [line, ""]


def corrected_section(summary: dict[str, Any]) -> list[str]:
    cal = summary.get("calibration")
    if cal is None:
        return []
    judge = cal.get("judge") or {}
    labels = cal.get("labels") or {}
    who = (
        ", ".join(
            f"{k} `{judge[k]}`" for k in ("model", "prompt_version", "fingerprint") if judge.get(k)
        )
        or "judge not named in the calibration"
    )
    num_labels = labels.get("n", cal["tp"] + cal["fn"] + cal["tn"] + cal["fp"])
    out = [
        "## Corrected for judge bias",
        "",
        f"Calibration: {cal['source']} ({who}; {num_labels}"
        f" human labels{', split ' + str(labels['split']) if labels.get('split') else ''}):"
        f" TPR {100 * cal['tpr']:.1f}% ({cal['tp']}/{cal['tp'] + cal['fn']}),"
        f" TNR {100 * cal['tnr']:.1f}% ({cal['tn']}/{cal['tn'] + cal['fp']}),"
        f" TPR + TNR − 1 = {cal['youden_j']:.3f}. Positive class = pass.",
        "",
        f"Method: {cal['method']}. The injection pass rate is corrected as"
        " (p + TNR − 1) / (TPR + TNR − 1); the control false-positive rate counts the judge's"
        " *fail* class, so TPR and TNR swap: (q + TPR − 1) / (TPR + TNR − 1). Raw rates stay"
        " in every other table; the seed rule is corrected (the calibration measures it)."
        f" ⚠ marks an unstable correction (TPR + TNR − 1 < {MIN_YOUDEN_J}, or the bootstrap"
        " cannot rule that out). *Not estimable*: the judge may be no better than chance"
        " (TPR + TNR − 1 <= 0 in the share of bootstrap draws given, or in the calibration"
        " itself), so no rate or interval is given: an interval from the draws that happened"
        " to work would look precise and mean nothing.",
        "",
        *_mismatch(judge.get("fingerprint"), summary.get("judge_selection")),
        _row(
            [
                "group",
                "injection pass (raw)",
                "injection pass (corrected)",
                "control FP (raw)",
                "control FP (corrected)",
            ]
        ),
        _row(["---"] * 5),
    ]
    rows = {
        "all records": summary["overall"],
        **{f"model `{k}`": v for k, v in summary["by_model"].items()},
        **{f"concept `{k}`": v for k, v in summary["by_concept"].items()},
    }
    for name, m in rows.items():
        out.append(
            _row(
                [
                    name,
                    _raw(m, "injection_pass_rate"),
                    fmt_corrected(m, "injection_pass_rate"),
                    _raw(m, "control_fp_rate"),
                    fmt_corrected(m, "control_fp_rate"),
                ]
            )
        )
    return [*out, ""]


def _mismatch(calibrated: Any, selection: dict[str, Any] | None) -> list[str]:
    """A warning when the calibration measured another judge than the one counted."""
    if not calibrated or selection is None or calibrated == selection["fingerprint"]:
        return []
    return [
        f"⚠ The calibration measured judge `{calibrated}`, but the records counted were graded"
        f" by judge `{selection['fingerprint']}`: the correction assumes the same judge.",
        "",
    ]


def fmt_corrected(m: dict[str, Any], name: str) -> str:
    """`38.2% [21.0–55.9]`, ⚠ when unstable; `not estimable (47.3% of draws failed)` when the
    judge may be no better than chance; — with no data."""
    c = m.get("corrected")
    if c is not None and c.get(name + "_estimable") is False:
        return f"not estimable ({100 * c[name + '_failed_share']:.1f}% of draws failed)"
    if c is None or c[name] is None:
        return "—"
    ci = c[name + "_ci"]
    text = f"{100 * c[name]:.1f}%"
    if ci is not None:
        text += f" [{100 * ci[0]:.1f}–{100 * ci[1]:.1f}]"
    return text + (" ⚠" if c["is_unstable"] else "")


def _raw(m: dict[str, Any], name: str) -> str:
    return "—" if m[name] is None else f"{100 * m[name]:.1f}%"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
