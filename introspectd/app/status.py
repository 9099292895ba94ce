"""`introspectd status`: where a run stands, from its database. No torch."""

from __future__ import annotations

from typing import Any

from introspectd.judge.budget import spend_usd
from introspectd.protocol.trials import Status
from introspectd.run.session import RunContext


def status_summary(ctx: RunContext) -> dict[str, Any]:
    counts = ctx.store.counts()
    by_status = {s.value: sum(c.get(s.value, 0) for c in counts.values()) for s in Status}
    total = sum(by_status.values())
    finished = by_status[Status.JUDGED] + by_status[Status.JUDGE_FAILED]
    return {
        "run": {
            "stamp": ctx.run.stamp,
            "experiment_id": ctx.run.experiment_id,
            "model": ctx.run.model_name,
            "directory": str(ctx.out_dir),
            "plan_hash": ctx.run.spec_hash,
        },
        "total": total,
        "finished": finished,
        "is_complete": total > 0 and finished == total,
        "by_status": by_status,
        "by_concept": counts,
        "new_tokens": ctx.store.generated_tokens(),
        "judge": _judge_summary(ctx),
    }


def _judge_summary(ctx: RunContext) -> dict[str, Any]:
    """The judge's totals, plus its spend at the plan's prices and the cap (issue 13)."""
    totals = ctx.store.judge_totals()
    cfg = ctx.plan.judge
    totals["spend_usd"] = spend_usd(cfg, totals["prompt_tokens"], totals["completion_tokens"])
    totals["budget_usd"] = cfg.budget_usd
    return totals


def render_status(summary: dict[str, Any]) -> str:
    run = summary["run"]
    lines = [
        f"run {run['stamp']}  {run['model']}  {run['directory']}",
        f"finished {summary['finished']}/{summary['total']}"
        + ("  (complete)" if summary["is_complete"] else ""),
    ]
    statuses = [s.value for s in Status]
    lines.append(f"{'concept':<16}" + "".join(f"{s:>14}" for s in statuses))
    for concept, counts in sorted(summary["by_concept"].items()):
        lines.append(f"{concept:<16}" + "".join(f"{counts.get(s, 0):>14}" for s in statuses))
    judge = summary["judge"]
    lines.append(
        f"judge: {judge['judgements']} judgements, {judge['prompt_tokens']} prompt + "
        f"{judge['completion_tokens']} completion tokens"
    )
    if "spend_usd" in judge:
        cap = f" of ${judge['budget_usd']:g} budget" if judge["budget_usd"] else " (no budget)"
        lines.append(f"judge spend: ${judge['spend_usd']:.4f}{cap}")
    for reason, n in judge["failures_by_reason"].items():
        lines.append(f"  failed x{n}: {reason}")
    return "\n".join(lines)
