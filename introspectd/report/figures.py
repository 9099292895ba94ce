"""The report's PNG figures, per model: layer × strength heatmaps and rates against strength.

Rates are drawn in percent and net detection in percentage points, as report.md prints them; net
detection takes its colours from the one diverging scale the explorer uses too (scale.py). Names
(models, concepts) are drawn as written: matplotlib would read `$…$` in them as mathtext.

matplotlib is imported inside the drawing functions, and only its object-oriented API is used
(`Figure`, rendered by Agg on save): no pyplot, no global backend switch, so drawing a report never
changes the plotting state of a process that embeds introspectd, and needs no display.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from introspectd.protocol.results import Record
from introspectd.report.metrics import compute_metrics, group_by
from introspectd.report.rules import PAPER_FIELD
from introspectd.report.scale import MISSING as MISSING_COLOUR
from introspectd.report.scale import UNIT, colormap, fmt_points, ink

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

Cells = dict[tuple[int, float], dict[str, Any]]  # (layer, strength) → metrics

# (metrics key, title, file stem)
HEATMAPS = (
    ("net_detection", "net detection (injection pass − control FP)", "net_detection"),
    ("injection_pass_rate", "injection pass rate", "injection_pass"),
    ("control_fp_rate", "control false-positive rate", "control_fp"),
)
# Drawn only when some record was graded for the paper rule (a v2 judge): else every cell is n/a.
PAPER_HEATMAP = (
    "injection_pass_rate_paper",
    "injection pass rate, paper rule",
    "injection_pass_paper",
)
DPI = 130
SLUG_LIMIT = 80  # characters of a model's name kept in its figures' file names


def model_slug(model: str) -> str:
    """A file-name-safe form of a model name: "Qwen/Qwen2.5-3B" → "Qwen_Qwen2.5-3B"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"


def figure_slugs(models: Iterable[str]) -> dict[str, str]:
    """Each model's file-name stem: its readable slug, cut to SLUG_LIMIT characters. Where it
    was cut, or two of these models share it (compared ignoring case, as macOS and Windows file
    systems do), a hash of the full name follows, so no model's figures overwrite another's and
    no name is too long for the file system."""
    readable = {m: model_slug(m) for m in models}
    uses = Counter(s.lower() for s in readable.values())
    return {
        m: s
        if len(s) <= SLUG_LIMIT and uses[s.lower()] == 1
        else f"{s[:SLUG_LIMIT]}-{hashlib.sha256(m.encode()).hexdigest()[:10]}"
        for m, s in readable.items()
    }


def render_model_figures(
    model: str, records: list[Record], out_dir: Path, slug: str | None = None
) -> list[Path]:
    """One model's figures (three heatmaps, one strength plot) written into `out_dir`, named by
    `slug` (figure_slugs; the model's own when not given)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = concept_panels(records)
    slug = slug or figure_slugs([model])[model]
    paths = []
    has_paper = any(PAPER_FIELD in (r["judge"] or {}) for r in records)
    for key, _, stem in HEATMAPS + ((PAPER_HEATMAP,) if has_paper else ()):
        path = out_dir / f"{slug}_{stem}.png"
        model_heatmap(model, records, key, panels).savefig(path, dpi=DPI)
        paths.append(path)
    path = out_dir / f"{slug}_coherence_refusal.png"
    strength_figure(model, records).savefig(path, dpi=DPI)
    paths.append(path)
    return paths


def concept_panels(records: list[Record]) -> list[tuple[str, Cells]]:
    """One panel's cells per concept, then all concepts pooled."""
    panels = [
        (concept, _cells(members))
        for concept, members in sorted(group_by(records, lambda r: r["concept"]).items())
    ]
    panels.append(("all concepts", _cells(records)))
    return panels


def model_heatmap(
    model: str, records: list[Record], key: str, panels: list[tuple[str, Cells]] | None = None
) -> Figure:
    """The heatmap figure of one metric (a HEATMAPS key) for one model's records."""
    title = next(t for k, t, _ in (*HEATMAPS, PAPER_HEATMAP) if k == key)
    layers = sorted({r["layer"] for r in records})
    strengths = sorted({r["strength"] for r in records})
    return heatmap_figure(
        f"{model}: {title}", key, panels or concept_panels(records), layers, strengths
    )


def _cells(records: list[Record]) -> Cells:
    groups = group_by(records, lambda r: (r["layer"], r["strength"]))
    return {key: compute_metrics(members) for key, members in groups.items()}


def heatmap_figure(
    title: str, key: str, panels: list[tuple[str, Cells]], layers: list[int], strengths: list[float]
) -> Figure:
    """Panels side by side (three to a row) sharing one colour scale and one colour bar."""
    from matplotlib.figure import Figure

    cmap, norm = _colour_scale(key)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    panel_w = max(3.4, 0.62 * len(strengths) + 1.3)
    panel_h = max(2.9, 0.48 * len(layers) + 1.3)
    fig = Figure(figsize=(panel_w * ncols + 1.2, panel_h * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    image = None
    for ax, (name, cells) in zip(axes, panels, strict=False):
        image = _heatmap(ax, name, cells, key, layers, strengths, cmap, norm)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes[: len(panels)]), shrink=0.85)
        unit = UNIT if _is_difference(key) else "%"
        bar.set_label(f"{key.replace('_', ' ')} ({unit})")
    counts = "injection/control trials" if key == "net_detection" else "k/n trials"
    fig.suptitle(title, fontsize=12, parse_math=False)
    fig.supxlabel(f"cell: value and {counts}; grey: no data", fontsize=8, color="#555555")
    return fig


def _is_difference(key: str) -> bool:
    return key.startswith("net_detection")


def _colour_scale(key: str) -> tuple[Colormap, Normalize]:
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    if _is_difference(key):
        return colormap()  # points, centred on 0: blue = detection above the control FP rate
    return colormaps["viridis"].with_extremes(bad=MISSING_COLOUR), Normalize(0.0, 100.0)


def _heatmap(
    ax: Axes,
    name: str,
    cells: Cells,
    key: str,
    layers: list[int],
    strengths: list[float],
    cmap: Colormap,
    norm: Normalize,
) -> Any:
    nan = float("nan")
    grid = [[_value(cells.get((layer, s)), key, nan) for s in strengths] for layer in layers]
    image = ax.imshow(
        grid, cmap=cmap, norm=norm, origin="lower", aspect="auto", interpolation="nearest"
    )
    ax.set_xticks(range(len(strengths)), [f"{s:g}" for s in strengths])
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("strength")
    ax.set_ylabel("layer")
    ax.set_title(name, fontsize=10, parse_math=False)
    size = 7.5 if len(strengths) <= 7 else 6
    for i, layer in enumerate(layers):
        for j, s in enumerate(strengths):
            m = cells.get((layer, s))
            if m is None:
                continue
            value = grid[i][j]
            colour = "black" if math.isnan(value) else ink(cmap(norm(value))[:3])
            ax.text(
                j,
                i,
                _annotation(m, key, value),
                ha="center",
                va="center",
                fontsize=size,
                color=colour,
            )
    return image


def _value(m: dict[str, Any] | None, key: str, missing: float) -> float:
    """A cell's rate in percent, or its difference in percentage points."""
    return missing if m is None or m[key] is None else 100.0 * float(m[key])


def _annotation(m: dict[str, Any], key: str, value: float) -> str:
    if _is_difference(key):
        shown = fmt_points(None if math.isnan(value) else value)
        return f"{shown}\n{m['n_injection']}/{m['n_control']}"
    k, n = m["counts"][key]
    return f"{'—' if math.isnan(value) else f'{value:.1f}%'}\n{k}/{n}"


def strength_figure(model: str, records: list[Record]) -> Figure:
    """Coherence and refusal rate against strength: injection trials by layer, controls as base."""
    from matplotlib.figure import Figure

    strengths = sorted({r["strength"] for r in records})
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    injected = [r for r in records if r["was_injected"]]
    controls = [r for r in records if not r["was_injected"]]
    by_layer = sorted(group_by(injected, lambda r: r["layer"]).items())
    for ax, key, label in (
        (axes[0], "coherence_rate", "coherence rate"),
        (axes[1], "refusal_rate", "refusal rate"),
    ):
        for layer, members in by_layer:
            xs, ys, _ = _series(members, key)
            ax.plot(
                xs,
                ys,
                marker="o",
                markersize=3,
                linewidth=1,
                alpha=0.55,
                label=f"injection, layer {layer}",
            )
        _band(ax, injected, key, "injection, all layers", "black", "-")
        _band(ax, controls, key, "control (no injection)", "#888888", "--")
        ax.set_xticks(strengths, [f"{s:g}" for s in strengths])
        ax.set_ylim(-3, 103)
        ax.set_xlabel("strength")
        ax.set_ylabel(f"{label} (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(
        f"{model}: coherence and refusals against strength"
        " (bold: all layers, with 95% Wilson interval)",
        fontsize=11,
        parse_math=False,
    )
    return fig


def _series(records: list[Record], key: str) -> tuple[list[float], list[float], list[Any]]:
    """Points (strength, rate, interval) where the rate exists, in percent."""
    xs, ys, cis = [], [], []
    for s, members in sorted(group_by(records, lambda r: r["strength"]).items()):
        m = compute_metrics(members)
        if m[key] is not None:
            xs.append(s)
            ys.append(100.0 * m[key])
            cis.append([100.0 * bound for bound in m[key + "_ci"]])
    return xs, ys, cis


def _band(ax: Axes, records: list[Record], key: str, label: str, colour: str, style: str) -> None:
    xs, ys, cis = _series(records, key)
    if not xs:
        return
    ax.plot(xs, ys, color=colour, linestyle=style, linewidth=2.2, marker="o", label=label)
    ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=colour, alpha=0.12)
