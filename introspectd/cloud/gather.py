"""Gather a run's shards from GCS: status and a merged, de-duplicated seed-layout export.

Each shard's latest good snapshot (see snapshot.py) is restored into a scratch folder and read
with the store, so the merge sees exactly what the shard's database holds. Completeness is
checked against the plan: a missing shard or trial is named (the CLI then exits 1).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.output.records import completed_records, write_atomic, write_jsonl
from introspectd.protocol.controls import sweep_trials
from introspectd.protocol.plan import ENV_STAMP, Plan, env_experiment_id, env_stamp
from introspectd.protocol.results import SeedRecord
from introspectd.protocol.trials import POOLED_CONCEPT
from introspectd.run.db import Store
from introspectd.run.rundir import refuse_other_run_dir
from introspectd.run.session import generation_spec, model_and_layers

log = logging.getLogger("introspectd")
SHARD_DIR_RE = re.compile(r"^shard-(\d+)-of-(\d+)$")


@dataclass
class Gathered:
    run_dir: str
    stamp: str = ""
    model_name: str = ""
    shards_found: list[str] = field(default_factory=list)
    shards_missing: list[str] = field(default_factory=list)
    records: dict[str, SeedRecord] = field(default_factory=dict)  # id → record
    num_unfinished: int = 0
    plan_order: dict[str, int] = field(default_factory=dict)  # planned id → its place in the plan
    adaptive_cells: list[dict[str, Any]] = field(default_factory=list)  # shards' adaptive.json

    @property
    def missing_ids(self) -> list[str]:
        return sorted(self.plan_order.keys() - self.records.keys())


@dataclass
class _Source:
    """One snapshot folder's run: `shard-I-of-N`, or "" for an unsharded run."""

    sub: str
    stamp: str
    model_name: str
    records: list[SeedRecord]
    num_unfinished: int
    adaptive_cells: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.sub or "(unsharded)"


def gather(plan: Plan, uri: str) -> Gathered:
    """Every snapshot of the plan's run under `uri`, merged; a missing bucket or no permission
    is one BadInput line."""
    from introspectd.cloud.gcs import gcs_errors

    with gcs_errors(uri):
        return _gather(plan, uri)


def _gather(plan: Plan, uri: str) -> Gathered:
    from introspectd.cloud.gcs import list_objects, make_client, make_retry, parse_gcs_uri

    experiment_id = plan.run.experiment_id or env_experiment_id()
    if not experiment_id:
        raise BadInput(f"{plan.path}: [run] experiment_id: required to find the run in {uri}")
    ref, layers = model_and_layers(plan)
    run_dir = f"{experiment_id}/{ref.slug}"
    bucket_name, prefix = parse_gcs_uri(uri)
    bucket = make_client().bucket(bucket_name)
    base = f"{prefix}/{run_dir}/" if prefix else f"{run_dir}/"
    names = [b.name for b in list_objects(bucket, base, make_retry(30.0), 30.0)]
    dirs = sorted(
        {
            n[len(base) :].rsplit("/", 1)[0]
            for n in names
            if n.endswith("/manifest.json") and SHARD_DIR_RE.match(n[len(base) :].split("/")[0])
        }
    )
    sources = dirs + ([""] if f"{base}manifest.json" in names else [])
    if not sources:
        raise BadInput(f"{uri}/{run_dir}: no snapshot found (nothing uploaded yet?)")
    found = [s for sub in sources if (s := _read_source(uri, run_dir, sub, plan)) is not None]
    stamp = _choose_stamp(plan, f"{uri}/{run_dir}", found)
    chosen = [s for s in found if s.stamp == stamp]
    for other in found:
        if other.stamp != stamp:
            log.warning("ignoring %s: it holds run %s, not %s", other.label, other.stamp, stamp)
    out = Gathered(run_dir, stamp=stamp)
    out.shards_missing = _missing_shards(f"{uri}/{run_dir}", [s.sub for s in chosen if s.sub])
    _merge(chosen, out)
    out.adaptive_cells = [cell for source in chosen for cell in source.adaptive_cells]
    spec = generation_spec(plan, ref, layers)
    planned = sweep_trials(plan.sweep, spec["sweep"]["layers"])
    out.plan_order = {s.trial_id(stamp): i for i, s in enumerate(planned)}
    return out


def _read_source(uri: str, run_dir: str, sub: str, plan: Plan) -> _Source | None:
    from introspectd.cloud.snapshot import SnapshotStore

    rel = f"{run_dir}/{sub}".rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        if SnapshotStore(uri, rel).restore(Path(tmp)) is None:
            return None
        store = Store(Path(tmp) / "state.sqlite")
        try:
            run = store.get_run()
            if run is None:
                return None
            counts = store.counts()
            by_concept = completed_records(
                store, run.model_name, plan.sweep, list(counts), plan.mentions.lexicon()
            )
            decisions = _decisions(plan, store)
        finally:
            store.close()
    unfinished = sum(c.get("pending", 0) + c.get("generated", 0) for c in counts.values())
    records = [r for rs in by_concept.values() for r in rs]
    return _Source(sub, run.stamp, run.model_name, records, unfinished, decisions)


def _decisions(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """A shard's cells' adaptive decisions (each shard adapts its own cells)."""
    if not plan.adds_trials_as_it_goes:
        return []
    from introspectd.run.round_state import decisions_summary

    cells = {r.spec.cell for r in store.trials()}
    summary = decisions_summary(plan, store.outcomes.all(), cells)
    return list(summary["cells"])  # type: ignore[call-overload]


def _choose_stamp(plan: Plan, where: str, found: list[_Source]) -> str:
    """The one run to gather. Runs with different stamps are separate generations of the same
    trials (ids differ only in the stamp): merging them would count each trial twice, and
    picking one silently would be arbitrary, so the user names it when there is a choice."""
    wanted = plan.run.stamp or env_stamp() or ""
    stamps: dict[str, list[str]] = {}
    for source in found:
        stamps.setdefault(source.stamp, []).append(source.label)
    listing = "; ".join(f"{', '.join(labels)}: stamp {st}" for st, labels in stamps.items())
    if wanted:
        if found and wanted not in stamps:
            raise BadInput(f"{where}: no snapshot holds run {wanted} ({listing})")
        return wanted
    if len(stamps) > 1:
        raise BadInput(
            f"{where}: holds {len(stamps)} different runs of this plan ({listing}); they cannot "
            f"be merged — choose one with [run] stamp or {ENV_STAMP}=<stamp>"
        )
    return next(iter(stamps), "")


def _missing_shards(where: str, subs: list[str]) -> list[str]:
    counts = {int(m.group(2)) for d in subs if (m := SHARD_DIR_RE.match(d))}
    if len(counts) > 1:
        raise BadInput(f"{where}: shards of different splits found ({sorted(counts)})")
    if not counts:
        return []
    n = counts.pop()
    return [f"shard-{i}-of-{n}" for i in range(n) if f"shard-{i}-of-{n}" not in subs]


def _merge(chosen: list[_Source], out: Gathered) -> None:
    """One record per id (shards of one run are disjoint; an unsharded run of the same stamp
    overlaps them: the same trials, kept once)."""
    overlap = 0
    for source in chosen:
        out.shards_found.append(source.label)
        out.model_name = out.model_name or source.model_name
        out.num_unfinished += source.num_unfinished
        for r in source.records:
            overlap += r["id"] in out.records
            out.records.setdefault(r["id"], r)
    if overlap:
        log.warning(
            "%d trials appear in more than one of %s; each is kept once",
            overlap,
            ", ".join(out.shards_found),
        )


def _summary(g: Gathered) -> dict[str, Any]:
    missing = g.missing_ids
    return {
        "run": g.run_dir,
        "stamp": g.stamp,
        "shards_found": g.shards_found,
        "shards_missing": g.shards_missing,
        "planned": len(g.plan_order),
        # Only planned trials count: records outside this plan never make it look complete.
        "finished": len(g.plan_order) - len(missing),
        "unfinished_in_snapshots": g.num_unfinished,
        "missing_trials": len(missing),
        "missing_examples": missing[:5],
        "is_complete": not missing and not g.shards_missing,
    }


def status_from_gcs(plan: Plan, uri: str) -> dict[str, Any]:
    """What GCS holds of the run, against the plan (`is_complete` says whether it is all)."""
    return _summary(gather(plan, uri))


def status_line(summary: dict[str, Any]) -> str:
    return (
        f"run {summary['run']} ({summary['stamp']}): {summary['finished']}/"
        f"{summary['planned']} finished; shards found: {', '.join(summary['shards_found'])}"
    )


@dataclass(frozen=True)
class Exported:
    target: Path
    num_records: int
    num_snapshots: int
    summary: dict[str, Any]  # as status_from_gcs

    def line(self) -> str:
        return (
            f"exported {self.num_records} trials ({self.summary['finished']}/"
            f"{self.summary['planned']} of the plan) from {self.num_snapshots} snapshot(s) "
            f"to {self.target}"
        )


def export_from_gcs(plan: Plan, uri: str, out_dir: Path | None) -> Exported:
    """Merge the shards' snapshots into seed-layout JSONL files in `out_dir` (default: the
    run's local directory), in plan order."""
    g = gather(plan, uri)
    own_dir = Path(plan.run.output_dir) / g.run_dir
    if out_dir is not None:
        refuse_other_run_dir(out_dir, own_dir, "--out")
    target = out_dir or own_dir
    by_concept: dict[str, list[SeedRecord]] = {}
    for trial_id in sorted(g.records, key=lambda i: g.plan_order.get(i, len(g.plan_order))):
        rec = g.records[trial_id]
        # A pooled control's record has no concept; its file is named for the pool.
        by_concept.setdefault(rec["concept"] or POOLED_CONCEPT, []).append(rec)
    for concept, records in by_concept.items():
        write_jsonl(target / f"{concept}.jsonl", records)
    if g.adaptive_cells:  # the shards' decisions, for the report's stop reasons
        from introspectd.output.decisions_file import FILE_NAME

        text = json.dumps({"cells": g.adaptive_cells}, indent=2) + "\n"
        write_atomic(target / FILE_NAME, text.encode())
    return Exported(target, len(g.records), len(g.shards_found), _summary(g))


def gap_lines(summary: dict[str, Any]) -> list[str]:
    """What keeps the gathered run from being complete, one line each; none when complete."""
    lines = []
    if summary["shards_missing"]:
        lines.append(f"incomplete: missing shards {', '.join(summary['shards_missing'])}")
    if summary["missing_trials"]:
        lines.append(
            f"incomplete: {summary['missing_trials']} planned trials not finished, e.g. "
            f"{', '.join(summary['missing_examples'])}"
        )
    return lines
