"""A judge measured against human labels: grade every labelled record with the plan's judge,
compare with the human `label.answer` (positive class = pass), and build the calibration JSON
that `calibrate` writes and stores (and the report reads to correct rates).

A record the judge fails to grade is counted and named under "failed", never silently dropped
nor counted as a fail: it is absent from every figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anyio

from introspectd.judge.client import Judge, JudgeOutcome
from introspectd.judge.grader import grade_all
from introspectd.judge.labels import LabelFile, Labelled
from introspectd.run.agreement import Confusion

INJECTION, CONTROL = "injection", "control"


async def grade_labelled(judge: Judge, records: tuple[Labelled, ...]) -> dict[str, JudgeOutcome]:
    """{record id: outcome} for every record, through the judge worker pool."""
    send, receive = anyio.create_memory_object_stream[Labelled](math.inf)
    outcomes: dict[str, JudgeOutcome] = {}

    def keep(record: Labelled, outcome: JudgeOutcome) -> None:
        outcomes[record.id] = outcome

    async with send:
        for record in records:
            send.send_nowait(record)
    await grade_all(judge, receive, keep)
    return outcomes


def is_judge_pass(outcome: JudgeOutcome) -> bool | None:
    """The judge's seed-rule grade (`answer`), or None when it failed to grade."""
    if outcome.result is None:
        return None
    return str(outcome.result.get("answer", "")).lower() == "pass"


def build_calibration(
    judge: Judge, labels: LabelFile, split: str | None, outcomes: dict[str, JudgeOutcome]
) -> dict[str, Any]:
    """The calibration JSON (docs/grading.md, "Calibration"): overall and by concept, trial
    type and model."""
    graded: list[tuple[Labelled, bool]] = []
    failed: list[str] = []
    for record in labels.records:
        verdict = is_judge_pass(outcomes[record.id]) if record.id in outcomes else None
        if verdict is None:
            failed.append(record.id)
        else:
            graded.append((record, verdict))
    cfg = judge.cfg
    return {
        "judge": {
            "model": cfg.model,
            "api": cfg.api,
            "prompt_version": cfg.prompt_version,
            "fewshot_hash": judge.fewshot_hash,
            "fingerprint": judge.fingerprint,
        },
        "labels": {
            "path": str(labels.path),
            "sha256": labels.sha256,
            "split": split,
            "n": len(labels.records),
        },
        "overall": _figures(graded),
        "by_concept": _grouped(graded, lambda r: r.concept),
        "by_trial_type": {
            kind: _figures([g for g in graded if _kind(g[0]) == kind])
            for kind in (INJECTION, CONTROL)
        },
        "by_model": _grouped(graded, lambda r: r.model),
        "failed": {"n": len(failed), "ids": failed},
        # What grading the labels cost: stored with the calibration, the run counts it against
        # [judge] budget_usd like its own judgements (Store.judge_totals).
        "usage": {
            "prompt_tokens": judge.tally.prompt_tokens,
            "completion_tokens": judge.tally.completion_tokens,
        },
    }


def _kind(record: Labelled) -> str:
    return INJECTION if record.is_injected else CONTROL


def _figures(graded: list[tuple[Labelled, bool]]) -> dict[str, Any]:
    return Confusion.of((r.is_human_pass, verdict) for r, verdict in graded).to_dict()


def _grouped(
    graded: list[tuple[Labelled, bool]], key: Callable[[Labelled], str]
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[tuple[Labelled, bool]]] = {}
    for item in graded:
        groups.setdefault(key(item[0]), []).append(item)
    return {name: _figures(items) for name, items in sorted(groups.items())}
