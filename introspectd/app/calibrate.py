"""`introspectd calibrate`: measure the plan's judge against human labels.

Grades every labelled record (of `--split`) with the plan's [judge] settings through the judge
worker pool, writes the calibration JSON (`--out`, default `calibration_<fingerprint>.json` in
the run's directory), stores it in the run's database under the judge's fingerprint (creating
the run's directory and database if the plan has not run yet) and prints a table.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from introspectd import stopping
from introspectd.errors import BadInput, Interrupted
from introspectd.judge.calibration import build_calibration, grade_labelled
from introspectd.judge.client import Judge, judging_off
from introspectd.judge.labels import load_labels
from introspectd.judge.pool import run_spend_usd
from introspectd.judge.progress import JudgingDisplay, Progress, nothing_graded
from introspectd.output.records import write_atomic
from introspectd.protocol.plan import Plan
from introspectd.run.session import DB_NAME, RunContext, claim_run, open_run
from introspectd.text import printable


@dataclass(frozen=True)
class Calibrated:
    calibration: dict[str, Any]
    out: Path
    db: Path


def calibrate(
    plan: Plan,
    labels_path: Path,
    split: str | None,
    out: Path | None,
    display: JudgingDisplay | None = None,
) -> Calibrated:
    labels = load_labels(labels_path, split)  # bad labels: one line, before anything is sent
    cfg = plan.judge
    api_key = cfg.api_key()
    if not cfg.is_enabled(api_key):
        raise BadInput(f"calibrate: {judging_off(cfg)}")
    base_dir = plan.path.parent if isinstance(plan.path, Path) else None
    candidates = tuple(sorted(set(plan.sweep.concepts) | {r.concept for r in labels.records}))
    ctx = _open_run_db(plan)  # a plan that cannot run is refused before any request
    try:
        # The run's [judge] budget_usd covers calibrating too: what its judgements (and earlier
        # calibrations) cost counts, and this calibration's cost is stored with it.
        judge = Judge(
            cfg, api_key, base_dir=base_dir, candidates=candidates, spent_usd=run_spend_usd(ctx)
        )
        progress = Progress(
            "calibrate", "labelled records", len(labels.records), lambda: judge.stats, display
        )

        async def grade() -> dict[str, Any]:
            outcomes: dict[str, Any] = {}
            async with judge, anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_stop, tg.cancel_scope)
                tg.start_soon(progress.show)
                try:
                    outcomes = await grade_labelled(judge, labels.records)
                finally:
                    progress.finish()  # the judge's figures are read in its event loop
                tg.cancel_scope.cancel()
            return outcomes

        with stopping.deferred():
            outcomes = anyio.run(grade)
        if stopping.received() is not None:
            raise Interrupted(f"stopped by {stopping.received()}: calibration not written")
        calibration = build_calibration(judge, labels, split, outcomes)
        if calibration["failed"]["n"] == len(labels.records):  # an n = 0 calibration is none
            reasons = Counter(o.error for o in outcomes.values() if o.error is not None)
            raise nothing_graded(
                "calibrate", len(labels.records), "labelled records", dict(reasons)
            )
        target = out or ctx.out_dir / f"calibration_{judge.fingerprint}.json"
        write_atomic(target, (json.dumps(calibration, indent=2) + "\n").encode("utf-8"))
        ctx.store.history.save_calibration(judge.fingerprint, calibration)
        return Calibrated(calibration, target, ctx.db_path)
    finally:
        ctx.close()


async def _cancel_on_stop(scope: anyio.CancelScope) -> None:
    """SIGINT/SIGTERM: stop grading (a partial calibration is not written)."""
    while stopping.received() is None:
        await anyio.sleep(0.2)
    scope.cancel()


def _open_run_db(plan: Plan) -> RunContext:
    """The run's database: an existing one is opened without its lock (a `run` may be judging
    it; the calibration is one short write), a missing one is created like `run` would."""
    claim = claim_run(plan, lock=False)
    if (claim.out_dir / DB_NAME).is_file():
        return claim.open(with_trials=False)
    return open_run(plan, create=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _rate(group: dict[str, Any], name: str) -> str:
    ci = group[f"{name}_ci"]
    interval = "" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return _pct(group[name]) + interval


def render_calibration(calibration: dict[str, Any], console: Console) -> None:
    """The calibration as one table: overall, then by trial type, concept and model."""
    judge, labels = calibration["judge"], calibration["labels"]
    # Names come from the label file and the plan: Text, never rich markup ("[/oops]").
    model = printable(str(judge["model"]))
    table = Table(
        title=Text(
            f"judge {model} ({judge['api']}, prompt {judge['prompt_version']}"
            f", few-shot {judge['fewshot_hash']}) · fingerprint {judge['fingerprint']}"
            f"\nvs {labels['n']} human labels ({labels['split'] or 'all splits'}), "
            "positive = pass"
        )
    )
    for name in (
        "group",
        "n",
        "TP",
        "FP",
        "FN",
        "TN",
        "TPR [95% CI]",
        "TNR [95% CI]",
        "accuracy [95% CI]",
        "kappa",
    ):
        table.add_column(name, justify="left" if name == "group" else "right")
    rows: list[tuple[str, dict[str, Any]]] = [("overall", calibration["overall"])]
    for section, prefix in (
        ("by_trial_type", ""),
        ("by_concept", "concept "),
        ("by_model", "model "),
    ):
        rows += [(prefix + name, group) for name, group in calibration[section].items()]
    for name, g in rows:
        table.add_row(
            Text(printable(name)),
            str(g["n"]),
            str(g["tp"]),
            str(g["fp"]),
            str(g["fn"]),
            str(g["tn"]),
            _rate(g, "tpr"),
            _rate(g, "tnr"),
            _rate(g, "accuracy"),
            _pct(g["kappa"]),
            end_section=name in ("overall", "control"),
        )
    console.print(table)
    failed = calibration["failed"]
    if failed["n"]:
        console.print(
            Text(
                f"the judge failed to grade {failed['n']} labelled records (left out of "
                f"every figure): {printable(', '.join(failed['ids']))}"
            )
        )
