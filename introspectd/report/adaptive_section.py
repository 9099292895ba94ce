"""The report's adaptive section: trials per cell and why each stopped, and the best cells'
exploration rates beside their confirmation rates (fresh `…_c*` trials, config.confirmation).

Confirmation records are kept out of every other table (`split_confirmation`): their cells were
chosen by the exploration results, and mixing the two would hide the winner's curse this
section exists to show. Stop reasons come from the `adaptive.json` the run writes beside its
JSONL files (output/decisions_file.py); trial counts and rates from the records themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from introspectd.protocol.results import Record
from introspectd.report.metrics import compute_metrics, group_by
from introspectd.report.scale import fmt_net, fmt_rate
from introspectd.run.round_decisions import CellCounts, net_lower_bound
from introspectd.text import loads_text

BEST = 5
DECISIONS_FILE = "adaptive.json"


def split_confirmation(records: list[Record]) -> tuple[list[Record], list[Record]]:
    """(exploration records, confirmation records)."""
    explore = [r for r in records if not r.get("confirmation")]
    return explore, [r for r in records if r.get("confirmation")]


def load_decisions(inputs: Iterable[Path]) -> dict[tuple[str, int, float], str]:
    """(concept, layer, strength) → stop reason, from every adaptive.json in or beside inputs
    (a merged export's shard folders each hold their own cells)."""
    files: set[Path] = set()
    for path in inputs:
        folder = path if path.is_dir() else path.parent
        files |= {f for f in folder.rglob(DECISIONS_FILE) if f.is_file()}
    reasons: dict[tuple[str, int, float], str] = {}
    for file in sorted(files):
        try:
            cells = loads_text(file.read_text(encoding="utf-8")).get("cells", [])
            for c in cells:
                reasons[(c["concept"], int(c["layer"]), float(c["strength"]))] = str(c["stop"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a damaged decisions file costs the reasons column, not the report
    return reasons


def _score(m: dict[str, Any]) -> float:
    (k1, n1), (k2, n2) = m["counts"]["injection_pass_rate"], m["counts"]["control_fp_rate"]
    return net_lower_bound(CellCounts(n1, k1, n1, k2, n2))


def adaptive_summary(
    explore: list[Record], confirm: list[Record], reasons: dict[tuple[str, int, float], str]
) -> dict[str, Any] | None:
    """The section's numbers; None for a fixed-grid run that was never confirmed."""
    if not confirm and not reasons:
        return None
    key = lambda r: (r["model"], r["concept"], r["layer"], r["strength"])  # noqa: E731
    confirmed = group_by(confirm, key)
    cells = []
    for (model, concept, layer, strength), members in group_by(explore, key).items():
        metrics = compute_metrics(members)
        extra = confirmed.get((model, concept, layer, strength))
        cells.append(
            {
                "model": model,
                "concept": concept,
                "layer": layer,
                "strength": strength,
                "trials": sum(1 for r in members if r["was_injected"]),
                "stop": reasons.get((concept, layer, strength), "—"),
                "score": _score(metrics),
                "exploration": metrics,
                "confirmation": compute_metrics(extra) if extra else None,
            }
        )
    cells.sort(key=lambda c: -c["score"])
    return {"cells": cells}


def render_adaptive(section: dict[str, Any] | None) -> list[str]:
    if section is None:
        return []
    cells = section["cells"]
    lines = [
        "## Adaptive sweep",
        "",
        "Best cells by the lower bound of net detection's 95% interval, from exploration trials;"
        " the confirmation columns come from fresh trials (`…_c*`) alone, run after the cells"
        " were chosen, so they carry no winner's curse.",
        "",
        "| concept | layer | strength | trials | stopped | exploration injection pass"
        " | exploration net | confirmation injection pass | confirmation net |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in [c for c in cells if c["confirmation"]] or cells[:BEST]:
        e, f = c["exploration"], c["confirmation"]
        lines.append(
            f"| {c['concept']} | {c['layer']} | {c['strength']} | {c['trials']} | {c['stop']} | "
            f"{fmt_rate(e, 'injection_pass_rate')} | {fmt_net(e, 'net_detection')} | "
            f"{fmt_rate(f, 'injection_pass_rate') if f else '—'} | "
            f"{fmt_net(f, 'net_detection') if f else '—'} |"
        )
    lines += ["", *_trial_grids(cells)]
    return lines


def _trial_grids(cells: list[dict[str, Any]]) -> list[str]:
    """Per concept, a layer × strength grid of exploration trials per cell and why it stopped."""
    lines = ["### Trials per cell (and why each stopped)", ""]
    for concept, members in sorted(group_by(cells, lambda c: c["concept"]).items()):
        strengths = sorted({c["strength"] for c in members})
        by_cell = {(c["layer"], c["strength"]): c for c in members}
        lines += [f"**{concept}**", "", "| layer | " + " | ".join(map(str, strengths)) + " |"]
        lines.append("|---|" + "---|" * len(strengths))
        for layer in sorted({c["layer"] for c in members}):
            row = [
                f"{by_cell[(layer, s)]['trials']} ({by_cell[(layer, s)]['stop']})"
                if (layer, s) in by_cell
                else ""
                for s in strengths
            ]
            lines.append(f"| {layer} | " + " | ".join(row) + " |")
        lines.append("")
    return lines
