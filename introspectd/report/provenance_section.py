"""The report's Provenance section: what made each run's generations, from the run database
beside its results (`store.provenance`, written by app/provenance.py). Results read without a
database (copied files, `rejudge --input`) have none to show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from introspectd.report.judges import run_databases
from introspectd.run.rundir import open_store


def provenance_words(facts: dict[str, Any]) -> str:
    """One line: `introspectd 0.1.0 (abc123def456), torch 2.6.0 (CUDA 12.4), transformers
    5.23.0 on NVIDIA H100 80GB HBM3; model sha256 1f2e...`."""
    build = facts.get("introspectd") or {}
    commit = f" ({str(build['commit'])[:12]})" if build.get("commit") else ""
    cuda = f" (CUDA {facts['cuda']})" if facts.get("cuda") else ""
    devices = ", ".join(d.get("name") or d.get("device") for d in facts.get("devices") or [])
    model = facts.get("model") or {}
    weights = (
        f"revision {model['revision']}"
        if model.get("revision")
        else f"sha256 {model['sha256'][:16]}"
        if model.get("sha256")
        else (model.get("note") or "unidentified")
    )
    judge = (facts.get("judge") or {}).get("fingerprint") or "none"
    return (
        f"introspectd {build.get('version')}{commit}, torch {facts.get('torch')}{cuda}, "
        f"transformers {facts.get('transformers')} on {devices or 'unknown devices'}; "
        f"model {weights}; judge {judge}"
    )


def provenance_summary(files: tuple[Path, ...]) -> list[dict[str, Any]] | None:
    """Per run database beside the inputs: its directory, every process's facts (oldest
    first), and the judge fingerprints that graded it; None when there is no database."""
    runs = []
    for db in run_databases(files):
        store = open_store(db, read_only=True)
        try:
            rows = store.provenance.all()
            judges = store.history.judge_fingerprints()
        finally:
            store.close()
        runs.append({"run": str(db.parent), "records": rows, "judge_fingerprints": judges})
    return runs or None


def provenance_markdown(runs: list[dict[str, Any]] | None) -> list[str]:
    if not runs:
        return []
    lines = ["", "## Provenance", ""]
    for run in runs:
        lines.append(f"- `{run['run']}`:")
        if not run["records"]:
            lines.append("  no provenance stored (a run from before introspectd recorded it)")
        for facts in run["records"]:
            lines.append(f"  - {facts.get('recorded_at', '')}: {provenance_words(facts)}")
        if run["judge_fingerprints"]:
            lines.append(f"  - graded by judge {', '.join(run['judge_fingerprints'])}")
    return [*lines, ""]
