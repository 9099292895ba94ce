"""The control arms' and the logit measure's part of the report (docs/protocols.md,
"Controls and the logit measure").

- Random arm (generated and judged): its *claim rate* (the judge says the answer claims a
  detection) and *concept specificity* = injection pass rate − random-arm pass rate (a pass
  on an injected-looking trial means the answer named the concept), with Wilson and Newcombe
  intervals.
- Logit measure: *yes-shift* = mean p_yes(injection) − mean p_yes(control), for the detection
  question and for the factual questions, and the *introspection score* = detection yes-shift −
  factual yes-shift (`yes_shift.py`: the numbers, and what their intervals resample).

Records of the random arm and logit read-outs are kept out of the main tables (`is_main`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from introspectd.protocol.results import Record
from introspectd.report.metrics import group_by, newcombe_interval, proportion, wilson_interval
from introspectd.report.yes_shift import SHIFT_KEYS, yes_shift_metrics


def finite_number(value: Any) -> float | None:
    """A JSON number (not a bool) as a finite float, else None. JSON integers may have any
    number of digits: one too large for a float is None too, not an OverflowError."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def record_fields(obj: Mapping[str, Any]) -> Record:
    """The control keys of a JSON record, for `writer.parse_record` to keep."""
    factual = obj.get("factual")
    return {
        "arm": obj.get("arm") if isinstance(obj.get("arm"), str) else None,
        "p_yes": finite_number(obj.get("p_yes")),
        "is_factual": isinstance(factual, Mapping),
        # Which question: a unit the yes-shift intervals resample (yes_shift.py).
        "factual_index": _question_key(factual) if isinstance(factual, Mapping) else None,
        # The specificity designs (report/specificity.py): a multiple-choice read-out, and the
        # concept a mismatch question asks about.
        "choice": obj.get("choice") if isinstance(obj.get("choice"), Mapping) else None,
        "about": _about(obj.get("mismatch")),
    }


def _about(mismatch: object) -> str | None:
    about = mismatch.get("about") if isinstance(mismatch, Mapping) else None
    return about if isinstance(about, str) else None


def is_read_out(record: Mapping[str, Any]) -> bool:
    """Read from logits (P(yes) or a multiple-choice read-out), not generated."""
    return record.get("p_yes") is not None or record.get("choice") is not None


def _question_key(factual: Mapping[str, Any]) -> str | None:
    index, text = factual.get("index"), factual.get("text")
    if isinstance(index, int) and not isinstance(index, bool):
        return f"#{index}"
    return text if isinstance(text, str) else None


def is_main(record: Mapping[str, Any]) -> bool:
    """A record of the classic injection/control comparison (what the main tables count)."""
    return record.get("arm") in (None, "injection", "control") and not is_read_out(record)


def _arm(record: Mapping[str, Any]) -> str:
    return str(record.get("arm") or ("injection" if record.get("was_injected") else "control"))


# --- random arm ------------------------------------------------------------------------------


def _judged(records: Iterable[Record], arm: str) -> list[Mapping[str, Any]]:
    return [
        r["judge"]
        for r in records
        if _arm(r) == arm and not is_read_out(r) and isinstance(r.get("judge"), Mapping)
    ]


def _passed(judge: Mapping[str, Any]) -> bool:
    return str(judge.get("answer", "")).strip().lower() == "pass"


def _claims(judge: Mapping[str, Any]) -> bool:
    """The answer claims a detection: the judge's own flag, else a named concept."""
    flag = judge.get("claims_detection")
    return flag if isinstance(flag, bool) else judge.get("detected_concept") is not None


def random_arm_metrics(records: Sequence[Record]) -> dict[str, Any]:
    injected, random = _judged(records, "injection"), _judged(records, "random")
    k_inj, n_inj = sum(map(_passed, injected)), len(injected)
    k_rnd, n_rnd = sum(map(_passed, random)), len(random)
    k_claim = sum(map(_claims, random))
    p_inj, p_rnd = proportion(k_inj, n_inj), proportion(k_rnd, n_rnd)
    specificity = None if p_inj is None or p_rnd is None else p_inj - p_rnd
    claim_ci = wilson_interval(k_claim, n_rnd)
    specificity_ci = newcombe_interval(k_inj, n_inj, k_rnd, n_rnd)
    return {
        "n_random": n_rnd,
        "random_claim_rate": proportion(k_claim, n_rnd),
        "random_claim_rate_ci": list(claim_ci) if claim_ci else None,
        "random_pass_rate": p_rnd,
        "concept_specificity": specificity,
        "concept_specificity_ci": list(specificity_ci) if specificity_ci else None,
        "counts": {
            "random_claim": [k_claim, n_rnd],
            "injection_pass": [k_inj, n_inj],
            "random_pass": [k_rnd, n_rnd],
        },
    }


# --- summary, markdown, figures --------------------------------------------------------------


def _cells(records: list[Record], metric: Any) -> list[dict[str, Any]]:
    groups = group_by(records, lambda r: (r["model"], r["layer"], r["strength"]))
    return [
        {"model": m, "layer": layer, "strength": s, **metric(rs)}
        for (m, layer, s), rs in sorted(groups.items(), key=lambda kv: kv[0])
    ]


def controls_summary(records: list[Record]) -> dict[str, Any] | None:
    """The summary's "controls" section; None when no record has a control arm or read-out."""
    out: dict[str, Any] = {}
    if any(_arm(r) == "random" and not is_read_out(r) for r in records):
        generated = [r for r in records if not is_read_out(r)]
        out["random_arm"] = {
            "overall": random_arm_metrics(generated),
            "by_cell": _cells(generated, random_arm_metrics),
        }
    # The mismatch design's questions have their own section (report/specificity.py).
    read_out = [r for r in records if r.get("p_yes") is not None and r.get("about") is None]
    if read_out:
        arms = ["injection"] + (["random"] if any(_arm(r) == "random" for r in read_out) else [])
        out["logit"] = {
            arm: {
                "overall": yes_shift_metrics(read_out, arm),
                "by_cell": _cells(read_out, lambda rs, a=arm: yes_shift_metrics(rs, a)),
            }
            for arm in arms
        }
    return out or None


def _pp(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "—"
    interval = f" [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else " (no interval)"
    return f"{value * 100:+.1f}{interval}"


def controls_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = ["", "## Controls", ""]
    random = section.get("random_arm")
    if random:
        lines += [
            "Random arm: a random direction with the concept vector's norm, same strength. "
            "Claim rate = random-arm answers claiming a detection; concept specificity = "
            "injection pass − random-arm pass (naming the concept), in points, 95% intervals.",
            "",
            "| model | layer | strength | random claim rate | concept specificity |",
            "|---|---|---|---|---|",
        ]
        for c in [
            {"model": "all", "layer": "", "strength": "", **random["overall"]},
            *random["by_cell"],
        ]:
            lines.append(
                f"| {c['model']} | {c['layer']} | {c['strength']} | "
                f"{_pp(c['random_claim_rate'], c['random_claim_rate_ci'])} | "
                f"{_pp(c['concept_specificity'], c['concept_specificity_ci'])} |"
            )
        lines.append("")
    for arm, logit in (section.get("logit") or {}).items():
        lines += [
            f"Logit measure, {arm} arm against control: yes-shift = mean p_yes({arm}) − mean "
            "p_yes(control), in points; introspection score = detection − factual yes-shift. "
            "95% bootstrap intervals resample the distinct inputs, never trials (a read-out is "
            "not sampled: its trials are copies): concepts, each with all its read-outs, "
            "crossed with the factual questions, each arm paired with control; the "
            "introspection score's also carries how far one question's shift strays from the "
            "factual mean, the detection question being one question. With few concepts they "
            "are rough; with fewer than 2 there is no interval.",
            "",
            "| model | layer | strength | detection yes-shift | factual yes-shift | "
            "introspection score | resampled |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in [
            {"model": "all", "layer": "", "strength": "", **logit["overall"]},
            *logit["by_cell"],
        ]:
            cols = " | ".join(_pp(c[k], c[k + "_ci"]) for k in SHIFT_KEYS)
            units = c["resampled"]
            lines.append(
                f"| {c['model']} | {c['layer']} | {c['strength']} | {cols} | "
                f"{units['concepts']} concepts × {units['questions']} questions |"
            )
        lines.append("")
    return lines


def render_control_figures(
    model: str, section: dict[str, Any] | None, out_dir: Path, slug: str | None = None
) -> list[Path]:
    """Heatmaps over layer × strength of the yes-shifts and the introspection score, named by
    `slug` (figures.figure_slugs; the model's own when not given)."""
    from introspectd.report.figures import DPI, figure_slugs

    slug = slug or figure_slugs([model])[model]
    paths: list[Path] = []
    for arm, logit in ((section or {}).get("logit") or {}).items():
        cells = [c for c in logit["by_cell"] if c["model"] == model]
        if not cells:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{slug}_yes_shift_{arm}.png"
        _shift_figure(f"{model}: {arm} vs control (logit measure)", cells).savefig(path, dpi=DPI)
        paths.append(path)
    return paths


def _shift_figure(title: str, cells: list[dict[str, Any]]) -> Any:
    """In percentage points, on the one diverging scale (scale.py) the explorer uses too."""
    from matplotlib.figure import Figure

    from introspectd.report.scale import UNIT, colormap, fmt_points, ink

    layers = sorted({c["layer"] for c in cells})
    strengths = sorted({c["strength"] for c in cells})
    by_key = {(c["layer"], c["strength"]): c for c in cells}
    fig = Figure(figsize=(3.6 * len(SHIFT_KEYS) + 1, 0.5 * len(layers) + 2.4), layout="constrained")
    axes = fig.subplots(1, len(SHIFT_KEYS), squeeze=False).ravel()
    cmap, norm = colormap()
    image = None
    for ax, key in zip(axes, SHIFT_KEYS, strict=True):
        grid = [[_number(by_key.get((layer, s)), key) for s in strengths] for layer in layers]
        image = ax.imshow(grid, cmap=cmap, norm=norm, origin="lower", aspect="auto")
        ax.set_xticks(range(len(strengths)), [f"{s:g}" for s in strengths])
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
        ax.set_xlabel("strength")
        ax.set_ylabel("layer")
        ax.set_title(key.replace("_", " "), fontsize=10)
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    colour = ink(cmap(norm(value))[:3])
                    ax.text(
                        j,
                        i,
                        fmt_points(value),
                        ha="center",
                        va="center",
                        fontsize=7.5,
                        color=colour,
                    )
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.85).set_label(UNIT)
    fig.suptitle(title, fontsize=12, parse_math=False)
    return fig


def _number(cell: dict[str, Any] | None, key: str) -> float:
    """The cell's value in percentage points (NaN: none)."""
    value = None if cell is None else cell.get(key)
    return float("nan") if value is None else 100.0 * float(value)
