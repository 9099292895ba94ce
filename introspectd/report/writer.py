"""`introspectd report INPUT... --out DIR`: seed-format JSONL → summary.json, report.md, PNGs.

Reads files and folders (folders recursively, `*.jsonl`) of seed-format records, also older ones
without `refused`, `inject_style`, `model`, `trial` or `magnitude`, and labelled sets whose
judgement sits under `label` instead of `judge`. Metrics are computed per PROTOCOL.md ("Metrics")
by `introspectd.report.metrics`; tables are in `report_md`, figures in `figures` (matplotlib is only
imported when figures are drawn, so importing this module is cheap).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.jsonl import read_jsonl
from introspectd.protocol.results import Record
from introspectd.report.adaptive_section import adaptive_summary, load_decisions, split_confirmation
from introspectd.report.calibration import Calibration, load_calibration_file, parse_calibration
from introspectd.report.controls import (
    controls_markdown,
    controls_summary,
    finite_number,
    is_main,
    record_fields,
    render_control_figures,
)
from introspectd.report.figures import figure_slugs, render_model_figures
from introspectd.report.inference import add_corrections, add_significance
from introspectd.report.judges import JudgeSelection, select_judge
from introspectd.report.leak import leak_summary
from introspectd.report.markdown import render_markdown
from introspectd.report.mentions import mentions_summary, run_lexicon
from introspectd.report.metrics import compute_metrics, group_by
from introspectd.report.pooled import (
    Pools,
    into_cells,
    is_pooled_object,
    pooled_markdown,
    pooled_summary,
    split_pooled,
    with_pool,
)
from introspectd.report.prompts_section import prompts_markdown, prompts_summary
from introspectd.report.provenance_section import provenance_markdown, provenance_summary
from introspectd.report.specificity import choice_summary, mismatch_summary, specificity_markdown

_ID_LAYER_RE = re.compile(r"_L(\d+)_")
_ID_STRENGTH_RE = re.compile(r"_S(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)_")
_NATURAL_RE = re.compile(r"(\d+)")


@dataclass(frozen=True)
class ReportPaths:
    out_dir: Path
    summary_json: Path
    report_md: Path
    figures: tuple[Path, ...]


@dataclass(frozen=True)
class Loaded:
    files: tuple[Path, ...]
    records: list[Record]
    num_duplicates: int  # same (model, id) seen again, e.g. shard files beside the merge


def _check_out_dir(out_dir: Path) -> None:
    """Before any reading: `--out` must be a directory, or creatable as one."""
    existing = next(p for p in (out_dir, *out_dir.absolute().parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == out_dir else f"is inside {existing}, a file"
        raise BadInput(f"--out: {out_dir} {what}; give a directory")


def write_report(
    inputs: list[Path], out_dir: Path, calibration: Path | None = None, judge: str | None = None
) -> ReportPaths:
    """Read every input, write summary.json, report.md and figures/*.png under `out_dir`.

    `calibration`: a calibration JSON of the judge (else one stored for it in the run database,
    if any): adds bias-corrected rates. `judge`: count this judge fingerprint's grades instead of
    the latest judge's (only where a run database sits beside the results).

    Raises BadInput (one line naming the file and line) for a missing path, no `*.jsonl` found,
    a record that cannot be read, an unusable calibration file or an unknown judge.
    """
    _check_out_dir(out_dir)
    given = load_calibration_file(calibration) if calibration is not None else None
    loaded = load_inputs(inputs)
    everything = loaded.records
    selection = select_judge(everything, loaded.files, judge)
    # Random-arm records and logit read-outs have their own section (report/controls.py);
    # confirmation trials theirs (report/adaptive_section.py).
    # Pooled controls (report/pooled.py) are every grouping's controls, no cell's own.
    num_records = len(everything)
    pools, everything = split_pooled(everything)
    explore, confirm = split_confirmation([r for r in everything if is_main(r)])
    loaded = dataclasses.replace(loaded, records=explore)
    summary = build_summary(loaded, pools)
    summary["inputs"]["n_records"] = num_records
    add_inference(summary, selection, given)
    controls = controls_summary(everything)
    if controls is not None:
        summary["controls"] = controls
    lexicon = run_lexicon(loaded.files)
    mentions = mentions_summary(explore, lexicon)
    if mentions is not None:
        summary["mentions"] = mentions
    for name, section in (
        ("leak", leak_summary(explore, lexicon)),
        ("prompts", prompts_summary(explore, lexicon)),
        ("choice", choice_summary(everything)),
        ("mismatch", mismatch_summary(everything)),
        ("provenance", provenance_summary(loaded.files)),
    ):
        if section is not None:
            summary[name] = section
    adaptive = adaptive_summary(explore, confirm, load_decisions(inputs))
    if adaptive is not None:
        summary["adaptive"] = adaptive
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    slugs = figure_slugs({r["model"] for r in everything})  # one file name per model, no clashes
    for model, records in sorted_items(group_by(loaded.records, lambda r: r["model"])):
        cells = into_cells(records, pools)
        figures += render_model_figures(model, cells, out_dir / "figures", slugs[model])
    for model in sorted({r["model"] for r in everything}):
        figures += render_control_figures(model, controls, out_dir / "figures", slugs[model])
    summary_json = out_dir / "summary.json"
    summary_json.write_text(json.dumps(_rounded(summary), indent=2) + "\n", encoding="utf-8")
    report_md = out_dir / "report.md"
    markdown = render_markdown(summary, [f.relative_to(out_dir) for f in figures])
    title, _, body = markdown.partition("\n\n")  # the pool is said before the tables using it
    pooled = "\n".join(pooled_markdown(summary.get("pooled_controls")))
    markdown = "\n\n".join(part for part in (title, pooled, body) if part)
    specificity = specificity_markdown(summary.get("choice"), summary.get("mismatch"))
    tail = [*prompts_markdown(summary.get("prompts")), *controls_markdown(controls), *specificity]
    tail += provenance_markdown(summary.get("provenance"))
    report_md.write_text(markdown + "\n".join(tail), encoding="utf-8")
    return ReportPaths(out_dir, summary_json, report_md, tuple(figures))


# ---------------------------------------------------------------------------------- reading


def find_input_files(inputs: Iterable[Path]) -> list[Path]:
    """The files to read: each file as given, each folder's `*.jsonl` recursively, no repeats."""
    files: list[Path] = []
    seen: set[Path] = set()
    inputs = list(inputs)
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
        elif path.exists():
            found = [path]
        else:
            raise BadInput(f"{path}: no such file or folder")
        for f in found:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                files.append(f)
    if not files:
        where = ", ".join(str(p) for p in inputs) or "(no inputs given)"
        raise BadInput(f"no *.jsonl files found in {where}")
    return files


def load_inputs(inputs: Iterable[Path]) -> Loaded:
    files = find_input_files(inputs)
    by_key: dict[tuple[str, str], Record] = {}
    anonymous: list[Record] = []
    duplicates = 0
    for path in files:
        for record in read_records(path):
            if record["id"] is None:
                anonymous.append(record)
                continue
            key = (record["model"], record["id"])
            old = by_key.get(key)
            if old is not None:
                duplicates += 1
                # A rejudged copy beats the unjudged original; otherwise the later file wins.
                if old["judge"] is not None and record["judge"] is None:
                    continue
            by_key[key] = record
    return Loaded(tuple(files), list(by_key.values()) + anonymous, duplicates)


def read_records(path: Path) -> list[Record]:
    fallback_model = model_from_path(path)
    return [
        parse_record(line.value, fallback_model, f"{path}:{line.lineno}")
        for line in read_jsonl(path, "records file", expect="a seed-format record")
        if line.value is not None
    ]


def parse_record(obj: Any, fallback_model: str, where: str) -> Record:
    """One JSON line → a flat Record; `where` ("file:line") prefixes every error."""
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(obj).__name__}")
    config = obj.get("config") or {}
    if not isinstance(config, dict):
        raise BadInput(f"{where}: 'config' is not an object")
    # Labelled sets (shared/data) carry the human judgement under "label".
    judge = obj["judge"] if "judge" in obj else obj.get("label")
    if judge is not None and not isinstance(judge, dict):
        raise BadInput(f"{where}: 'judge' is neither an object nor null")
    if is_pooled_object(obj):  # a pooled control: no concept, layer or strength
        return _pooled_record(obj, config, fallback_model, where)
    concept = obj.get("concept")
    if not isinstance(concept, str) or not concept:
        raise BadInput(f"{where}: no 'concept'")
    injected = obj.get("was_injected")
    if not isinstance(injected, bool):
        raise BadInput(f"{where}: 'was_injected' missing or not true/false")
    trial_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    model = config.get("model")
    return {
        "id": trial_id,
        "model": model if isinstance(model, str) and model else fallback_model,
        "concept": concept,
        "layer": _layer(config, trial_id, where),
        "strength": _strength(config, trial_id, where),
        "was_injected": injected,
        "judge": judge,
        # The answer, for the mention counts (report/mentions.py); null for logit read-outs.
        "response": obj["response"] if isinstance(obj.get("response"), str) else None,
        **record_fields(obj),
        "confirmation": config.get("confirmation") is True,  # report/adaptive_section.py
        # Which prompt (report/prompts_section.py: per prompt when a battery ran several).
        "prompt": _text_or_none(config.get("prompt_version")),
    }


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _pooled_record(obj: Any, config: dict[str, Any], fallback_model: str, where: str) -> Record:
    # Read as any record with a placeholder cell (its model, judge and arm as usual)...
    cell = {"concept": "pooled", "config": {**config, "controls": None, "layer": 0, "strength": 1}}
    record = parse_record({**obj, **cell}, fallback_model, where)
    # ...then marked as the cell-less control it is.
    return record | {"concept": None, "layer": None, "strength": None, "pooled": True}


def _layer(config: dict[str, Any], trial_id: str | None, where: str) -> int:
    value = config.get("layer")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _ID_LAYER_RE.search(trial_id or "")
    if value is None and match:
        return int(match.group(1))
    raise BadInput(f"{where}: 'config.layer' missing or not an integer")


def _strength(config: dict[str, Any], trial_id: str | None, where: str) -> float:
    value = config.get("strength")
    strength = finite_number(value)  # 3 and 3.0 (some writers' JSON) group together as 3.0
    if strength is not None:
        return strength
    match = _ID_STRENGTH_RE.search(trial_id or "")
    if value is None and match:
        return float(match.group(1))
    raise BadInput(f"{where}: 'config.strength' missing or not a finite number")


def model_from_path(path: Path) -> str:
    """Older records lack config.model; the seed layout names the model folder (`3b/fear.jsonl`)."""
    for parent in path.resolve().parents:
        if parent.name and not parent.name.startswith("shard-"):
            return parent.name
    return "unknown"


# ---------------------------------------------------------------------------------- summary


def natural_key(value: Any) -> tuple[Any, ...]:
    """Sort "Qwen2.5-3B" before "Qwen2.5-14B": digit runs compare as numbers."""
    if isinstance(value, int | float):
        return (0, value)
    parts = _NATURAL_RE.split(str(value))
    return (1, *((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts))


def sorted_items(groups: dict[Any, list[Record]]) -> list[tuple[Any, list[Record]]]:
    return sorted(groups.items(), key=lambda kv: natural_key(kv[0]))


def build_summary(loaded: Loaded, pools: Pools | None = None) -> dict[str, Any]:
    """The summary's tables; with pooled controls (`pools`) every grouping counts its models'
    pool as its controls (report/pooled.py)."""
    records, pools = loaded.records, pools or {}
    groups = []
    by_cell = group_by(records, lambda r: (r["model"], r["concept"], r["layer"], r["strength"]))
    for (model, concept, layer, strength), members in sorted(
        by_cell.items(), key=lambda kv: tuple(natural_key(k) for k in kv[0])
    ):
        groups.append(
            {
                "model": model,
                "concept": concept,
                "layer": layer,
                "strength": strength,
                **compute_metrics(with_pool(members, pools)),
            }
        )
    summary = {
        "inputs": {
            "files": [str(f) for f in loaded.files],
            "n_records": len(records),
            "n_duplicates_dropped": loaded.num_duplicates,
        },
        "overall": compute_metrics(with_pool(records, pools)),
        "by_model": {
            m: compute_metrics(with_pool(rs, pools))
            for m, rs in sorted_items(group_by(records, lambda r: r["model"]))
        },
        "by_concept": {
            c: compute_metrics(with_pool(rs, pools))
            for c, rs in sorted_items(group_by(records, lambda r: r["concept"]))
        },
        "by_model_layer_strength": _model_layer_strength(records, pools),
        "groups": groups,
    }
    pooled = pooled_summary(pools)
    if pooled is not None:
        summary["pooled_controls"] = pooled
    return summary


def add_inference(
    summary: dict[str, Any], selection: JudgeSelection, given: Calibration | None
) -> None:
    """Significance of each cell; corrected rates when a calibration is at hand; which judge."""
    add_significance(summary["groups"])
    if selection.fingerprint is not None:
        summary["judge_selection"] = {
            "fingerprint": selection.fingerprint,
            "known": selection.known,
            "n_regraded": selection.num_regraded,
            "n_ungraded": selection.num_ungraded,
        }
    stored = selection.stored_calibration
    calibration = given or (
        parse_calibration(stored, "run database calibration", "run database")
        if stored is not None
        else None
    )
    if calibration is not None:
        add_corrections(summary, calibration.error_rates, calibration.info())


def _model_layer_strength(records: list[Record], pools: Pools) -> list[dict[str, Any]]:
    """All concepts pooled per model × layer × strength: the report's layer × strength tables."""
    cells = group_by(records, lambda r: (r["model"], r["layer"], r["strength"]))
    return [
        {"model": m, "layer": layer, "strength": s, **compute_metrics(with_pool(rs, pools))}
        for (m, layer, s), rs in sorted(
            cells.items(), key=lambda kv: tuple(natural_key(k) for k in kv[0])
        )
    ]


def _rounded(value: Any) -> Any:
    """Floats to 6 decimals: summary.json stays readable and diffable between runs."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
