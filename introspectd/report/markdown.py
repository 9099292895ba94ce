"""report.md: the summary's numbers as the tables a researcher reads first. Pure Python."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from introspectd.report.inference import SIGNIFICANCE_METHOD
from introspectd.report.markdown_corrected import corrected_section, fmt_corrected, judge_lines
from introspectd.report.scale import fmt_net, fmt_points, fmt_rate, points

BEST_CELLS = 15

_METRIC_COLUMNS = (
    "injection pass",
    "injection pass (paper rule)",
    "control FP",
    "net detection",
    "net excl. refusals",
    "coherent",
    "refused",
    "unjudged",
)


def render_markdown(summary: dict[str, Any], figures: Sequence[Path]) -> str:
    inputs = summary["inputs"]
    overall = summary["overall"]
    lines = [
        "# Introspection report",
        "",
        f"{inputs['n_records']} records from {len(inputs['files'])} file(s)"
        f" ({inputs['n_duplicates_dropped']} duplicate(s) dropped);"
        f" {overall['n_unjudged']} unjudged record(s) are left out of every rate.",
        "",
        "Rates are percentages with a 95% Wilson interval in brackets and the counts (k/n)."
        " Control FP = control trials that claimed a detection (1 − control pass rate)."
        " Net detection = injection pass − control FP, in percentage points, with Newcombe's"
        " hybrid score interval for a difference of proportions. *excl. refusals* recomputes"
        " it without trials the judge flagged as refusals."
        " *Paper rule*: an injection also needs the model's claim of noticing to come before it"
        " first mentions the concept (`detection_before_mention`, graded by v2 judges only; n/a"
        " where no record carries it); the other rates use the seed rule (the judge's answer).",
        "",
        *judge_lines(summary),
        "## Overall",
        "",
        *_metric_table("", {"all records": overall}),
        "",
        "## By model",
        "",
        *_metric_table("model", summary["by_model"]),
        "",
        "## By concept",
        "",
        *_metric_table("concept", summary["by_concept"]),
        "",
        *corrected_section(summary),
        *_best_cells(summary["groups"]),
        "",
        *_layer_strength_tables(summary["by_model_layer_strength"]),
    ]
    # Imported here: they use this module's formats.
    from introspectd.report.adaptive_section import render_adaptive
    from introspectd.report.leak import leak_markdown
    from introspectd.report.mentions import mentions_markdown
    from introspectd.report.refusals import refusals_markdown

    lines += ["", *refusals_markdown(summary["by_model_layer_strength"])]
    for section in (
        mentions_markdown(summary.get("mentions")),
        leak_markdown(summary.get("leak")),
    ):
        lines += ["", *section] if section else []
    lines += ["", *render_adaptive(summary.get("adaptive"))]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{f.stem}]({f.as_posix()})" for f in figures]
    return "\n".join(lines) + "\n"


def _metric_table(label: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    out = [_row([label, *_METRIC_COLUMNS]), _row(["---"] * (len(_METRIC_COLUMNS) + 1))]
    for name, m in rows.items():
        out.append(
            _row(
                [
                    f"`{name}`" if label else name,
                    fmt_rate(m, "injection_pass_rate"),
                    fmt_paper(m),
                    fmt_rate(m, "control_fp_rate"),
                    fmt_net(m, "net_detection"),
                    fmt_net(m, "net_detection_excl_refusals"),
                    fmt_rate(m, "coherence_rate"),
                    fmt_rate(m, "refusal_rate"),
                    str(m["n_unjudged"]),
                ]
            )
        )
    return out


def _best_cells(groups: list[dict[str, Any]]) -> list[str]:
    """Top cells by net detection; ties go to the tighter evidence (higher interval floor)."""
    scored = [g for g in groups if g["net_detection"] is not None]
    is_corrected = any("corrected" in g for g in groups)
    scored.sort(key=lambda g: (-g["net_detection"], -g["net_detection_ci"][0]))
    out = [
        f"## Best cells by net detection (top {min(BEST_CELLS, len(scored))} of {len(groups)})",
        "",
        "One cell = model × concept × layer × strength; cells without both injection and control"
        " trials have no net detection and are not ranked. Small cells are noisy: read the"
        " interval.",
        "",
        *significance_note(len(scored)),
        "",
        _row(BEST_COLUMNS + (CORRECTED_COLUMNS if is_corrected else [])),
        _row(["---"] * (len(BEST_COLUMNS) + (2 if is_corrected else 0))),
    ]
    for g in scored[:BEST_CELLS]:
        out.append(
            _row(
                [
                    f"`{g['model']}`",
                    g["concept"],
                    str(g["layer"]),
                    f"{g['strength']:g}",
                    fmt_net(g, "net_detection"),
                    fmt_rate(g, "injection_pass_rate"),
                    fmt_paper(g),
                    fmt_rate(g, "control_fp_rate"),
                    fmt_net(g, "net_detection_excl_refusals"),
                    fmt_holm(g),
                ]
                + (
                    [fmt_corrected(g, "injection_pass_rate"), fmt_corrected(g, "control_fp_rate")]
                    if is_corrected
                    else []
                )
            )
        )
    return out


BEST_COLUMNS = [
    "model",
    "concept",
    "layer",
    "strength",
    "net detection",
    "injection pass",
    "injection pass (paper rule)",
    "control FP",
    "net excl. refusals",
    "p (Holm)",
]
CORRECTED_COLUMNS = ["injection pass (corrected)", "control FP (corrected)"]


def significance_note(num_ranked: int) -> list[str]:
    return [
        f"*p (Holm)*: {SIGNIFICANCE_METHOD}; the family is all {num_ranked} ranked cells, so"
        " the bar rises with the size of the sweep. ✓ = still significant after the"
        " correction. The top cell's raw rate is optimistic (winner's curse): it was picked"
        " for being the highest of many noisy estimates, so a rerun of that cell will most"
        " likely come out lower; read its interval's floor, not its point.",
    ]


def _layer_strength_tables(cells: list[dict[str, Any]]) -> list[str]:
    """Per model, net detection over layer (rows) × strength (columns), all concepts pooled."""
    out = [
        "## Net detection by layer × strength (all concepts)",
        "",
        "Cell: net detection (injection trials / control trials); — where there are none.",
    ]
    models: dict[str, dict[tuple[int, float], dict[str, Any]]] = {}
    for c in cells:
        models.setdefault(c["model"], {})[(c["layer"], c["strength"])] = c
    for model, grid in models.items():
        layers = sorted({k[0] for k in grid})
        strengths = sorted({k[1] for k in grid})
        out += [
            "",
            f"### `{model}`",
            "",
            _row(["layer \\ strength", *(f"{s:g}" for s in strengths)]),
            _row(["---"] * (len(strengths) + 1)),
        ]
        for layer in layers:
            row = [str(layer)]
            for s in strengths:
                cell = grid.get((layer, s))
                row.append(
                    "—"
                    if cell is None
                    else f"{fmt_points(points(cell['net_detection']))}"
                    f" ({cell['n_injection']}/{cell['n_control']})"
                )
            out.append(_row(row))
    return out


# ------------------------------------------------------------------------------- formatting


def fmt_paper(m: dict[str, Any]) -> str:
    """The paper-rule injection pass rate, or `n/a` where no record was graded for it."""
    return (
        "n/a"
        if m["counts"]["injection_pass_rate_paper"][1] == 0
        else fmt_rate(m, "injection_pass_rate_paper")
    )


def fmt_holm(g: dict[str, Any]) -> str:
    """`0.0031 ✓`: the Holm-adjusted one-sided p-value, ✓ when still below ALPHA."""
    if "p_holm" not in g:
        return "—"
    return f"{g['p_holm']:.2g}" + (" ✓" if g["is_significant"] else "")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
