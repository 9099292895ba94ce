"""`introspectd status`: where a run stands, from its database. No torch."""

from __future__ import annotations

import shlex
from typing import Any

from introspectd.judge.budget import spend_usd
from introspectd.protocol.plan import Plan
from introspectd.protocol.trials import Status
from introspectd.report.provenance_section import provenance_words
from introspectd.run.db import WAITING, JudgingCounts
from introspectd.run.session import RunContext

MAX_REASONS = 2  # reasons named in a "not judged" line; the rest are counted


def status_summary(ctx: RunContext) -> dict[str, Any]:
    counts = ctx.store.counts()
    by_status = {s.value: sum(c.get(s.value, 0) for c in counts.values()) for s in Status}
    total = sum(by_status.values())
    finished = by_status[Status.JUDGED] + by_status[Status.JUDGE_FAILED]
    judging = ctx.store.outcomes.judging_counts()
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
        # Complete means nothing is left to generate or send: rows judging failed on count as
        # finished. `not_judged` says how many of them have no grade, and why.
        "is_complete": total > 0 and finished == total,
        "generated": judging.generated,
        "judged": judging.judged,
        "read_out": judging.read_out,
        "not_judged": judging.not_judged,
        "is_judged": total > 0 and judging.judged + judging.read_out == total,
        "hint": not_judged_line(judging, ctx.plan),
        "by_status": by_status,
        "by_concept": counts,
        "new_tokens": ctx.store.generated_tokens(),
        "judge": _judge_summary(ctx),
        # What made the generations: the latest process's facts, and how many processes
        # (machines, restarts) loaded the model; the judges that actually graded.
        "provenance": ctx.store.provenance.latest(),
        "provenance_records": len(ctx.store.provenance.all()),
        "judge_fingerprints": ctx.store.history.judge_fingerprints(),
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
        "finished "
        + progress_words(
            summary["total"], summary["generated"], summary["judged"], summary["read_out"]
        )
        + ("  (complete)" if summary["is_complete"] and summary["is_judged"] else ""),
    ]
    if summary["hint"]:
        lines.append(summary["hint"])
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
    if summary.get("provenance"):
        lines.append("made with " + provenance_words(summary["provenance"]))
    return "\n".join(lines)


def progress_words(total: int, generated: int, judged: int, read_out: int) -> str:
    """Generated and judged out of the total (`32/32 generated, 0/32 judged`): a run is not
    called done when only its generation is."""
    if read_out and not judged:  # logit mode: read-outs have nothing to judge
        return f"{generated}/{total} generated, {read_out}/{total} read out"
    return f"{generated}/{total} generated, {judged}/{total} judged"


def not_judged_line(counts: JudgingCounts, plan: Plan) -> str:
    """How many answers have no grade, why, and the command that grades them; "" when none.
    A stored reason ends in its own advice ("; run `introspectd rejudge`"), replaced here."""
    if not counts.num_not_judged:
        return ""
    cfg = plan.judge
    fix = f"introspectd rejudge --plan {shlex.quote(str(plan.path))}"
    if not cfg.is_enabled(cfg.api_key()):
        fix = f"set ${cfg.api_key_env} (or [judge] base_url), then: {fix} (or run again)"
    elif list(counts.not_judged) == [WAITING]:  # a run's drain left them queued
        fix = f"introspectd run --plan {shlex.quote(str(plan.path))} judges them"
    return f"{not_judged_words(counts)}: {fix}"


def not_judged_words(counts: JudgingCounts) -> str:
    """ "12 not judged (HTTP 500)": how many answers have no grade and why, without the
    advice each stored reason ends in ("; run `introspectd rejudge`")."""
    reasons = list(counts.not_judged.items())
    named = [
        (why.split("; run `")[0] if len(reasons) == 1 else f"{n}× {why.split('; run `')[0]}")
        for why, n in reasons[:MAX_REASONS]
    ]
    if len(reasons) > MAX_REASONS:
        named.append(f"{len(reasons) - MAX_REASONS} more reasons: introspectd status")
    return f"{counts.num_not_judged} not judged ({'; '.join(named)})"
