"""report.md's "Prompts" section: with a prompt battery ([sweep] prompts), every headline rate
per prompt, and how far the prompts disagree (docs/protocols.md, "Prompts"). A result that
holds on one prompt only is not a result; the false-positive rate differs by prompt too.

The rates are the metrics' own (report/metrics.py) over each prompt's records, all concepts,
layers and strengths pooled, beside the judge-free mention rates (report/mentions.py), so an
unjudged battery shows something too; each prompt's answers are independent samples, so their
Wilson (rates) and Newcombe (differences) intervals stand as they are. The disagreement is the
spread of net detection (of the mention difference, unjudged): the largest minus the smallest
prompt's, in points.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from introspectd.protocol.lexicon import Lexicon
from introspectd.protocol.results import Record
from introspectd.report.mentions import mention_metrics
from introspectd.report.metrics import compute_metrics, group_by
from introspectd.report.scale import fmt_net, fmt_rate


def prompts_summary(records: Iterable[Record], lexicon: Lexicon) -> dict[str, Any] | None:
    """The summary's "prompts" section; None unless the records hold more than one prompt."""
    rows = [r for r in records if r.get("prompt") and isinstance(r.get("response"), str)]
    if len({r["prompt"] for r in rows}) < 2:
        return None
    out: dict[str, Any] = {}
    for model, mine in sorted(group_by(rows, lambda r: r["model"]).items()):
        groups = group_by(mine, lambda r: r["prompt"])
        by_prompt = {p: _prompt_figures(rs, lexicon) for p, rs in sorted(groups.items())}
        out[model] = {
            "by_prompt": by_prompt,
            "net_detection_spread": _spread([m["net_detection"] for m in by_prompt.values()]),
            "mention_difference_spread": _spread(
                [m["mentions"]["mention_difference"] for m in by_prompt.values()]
            ),
        }
    return out


def _prompt_figures(records: list[Record], lexicon: Lexicon) -> dict[str, Any]:
    answers = [(r, lexicon.first_mention(r["response"], r["concept"])) for r in records]
    return {**compute_metrics(records), "mentions": mention_metrics(answers)}


def _spread(values: list[float | None]) -> float | None:
    """The largest minus the smallest of the prompts' values (None with fewer than two)."""
    known = [v for v in values if v is not None]
    return max(known) - min(known) if len(known) > 1 else None


def prompts_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = [
        "",
        "## Prompts",
        "",
        "Per prompt of the battery (all concepts, layers and strengths pooled): injection pass"
        " rate, control false-positive rate and net detection (judged answers), and how often"
        " injected and control answers mention their concept (no judge), as in the tables"
        " above. Spread = the largest minus the smallest prompt's figure, in points: a finding"
        " that holds on one prompt only is not a finding.",
        "",
        "| model | prompt | injection pass | control FP | net detection | mentions injected |"
        " mentions control | mention difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, figures in section.items():
        for prompt, m in figures["by_prompt"].items():
            mentions = m["mentions"]
            lines.append(
                f"| `{model}` | {prompt} | {fmt_rate(m, 'injection_pass_rate')} | "
                f"{fmt_rate(m, 'control_fp_rate')} | {fmt_net(m, 'net_detection')} | "
                f"{fmt_rate(mentions, 'injection_mention_rate')} | "
                f"{fmt_rate(mentions, 'control_mention_rate')} | "
                f"{fmt_net(mentions, 'mention_difference')} |"
            )
    for model, figures in section.items():
        for name, what in (("net_detection", "net detection"), ("mention_difference", "mention"
                           " difference")):  # fmt: skip
            spread = figures[name + "_spread"]
            if spread is not None:
                lines += ["", f"`{model}`: the prompts' {what} spans {100 * spread:.1f} points."]
    return lines
