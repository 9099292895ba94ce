"""report.md's "Refusals" section: per model × layer × strength, how often the model declined
to answer (the judge's `refused`), and detection with and without those answers, side by side.

Refusals drag the raw rates down: a refused injection fails and a refused control passes only
if it claims nothing, so a model that refuses half the time can show a negative raw net
detection and a positive one among the answers it gave (upstream's 32B: −48.8 raw, +20.0
excluding its 43.9% refusals). Both are shown because neither is the whole story: excluding
refusals conditions on the model answering, which steering itself may change. The numbers are
the metrics' own (report/metrics.py, `refusal_rate` and `*_excl_refusals`); this only lays
them out.
"""

from __future__ import annotations

from typing import Any

from introspectd.report.scale import fmt_net, fmt_rate


def refusals_markdown(cells: list[dict[str, Any]]) -> list[str]:
    """The section, or nothing when no judged record says whether it refused (unjudged runs,
    older judges)."""
    if not any(c["counts"]["refusal_rate"][1] for c in cells):
        return []
    lines = [
        "## Refusals",
        "",
        "Per model × layer × strength (all concepts): the share of judged answers the judge"
        " flagged as refusals, and the injection pass rate, control false-positive rate and net"
        " detection over all judged answers (raw) beside the same over the answers that were"
        " not refusals (excl. refusals). Rates: 95% Wilson interval (k/n); net detection in"
        " percentage points (Newcombe).",
        "",
        "| model | layer | strength | refused | injection pass | injection pass excl."
        " refusals | control FP | control FP excl. refusals | net detection | net excl."
        " refusals |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| `{c['model']}` | {c['layer']} | {c['strength']:g} | "
            + " | ".join(
                [
                    fmt_rate(c, "refusal_rate"),
                    fmt_rate(c, "injection_pass_rate"),
                    fmt_rate(c, "injection_pass_rate_excl_refusals"),
                    fmt_rate(c, "control_fp_rate"),
                    fmt_rate(c, "control_fp_rate_excl_refusals"),
                    fmt_net(c, "net_detection"),
                    fmt_net(c, "net_detection_excl_refusals"),
                ]
            )
            + " |"
        )
    return lines
