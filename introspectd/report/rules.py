"""Pass/fail rules the report counts by, as pure functions of one record's `judge` object.

- Seed rule: the judge's `answer` is "pass" (what every record has).
- Paper rule (PROTOCOL.md; Lindsey et al.): an injection also needs the model's claim of
  noticing to come *before* its answer first mentions the concept (`detection_before_mention`
  is True), which separates introspection from steering that merely leaks into the text.
  Controls pass by the same rule as the seed's.

Records graded by a v1 judge have no `detection_before_mention`: their paper-rule verdict is
None (unknown), and the report leaves them out of the paper-rule rates instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAPER_FIELD = "detection_before_mention"


def passes_seed_rule(judge: Mapping[str, Any]) -> bool:
    return str(judge.get("answer", "")).strip().lower() == "pass"


def passes_paper_rule(judge: Mapping[str, Any], was_injected: bool) -> bool | None:
    """The paper's verdict, or None when the judge did not grade the order of claim and
    mention (a v1 judge)."""
    if PAPER_FIELD not in judge:
        return None
    if not was_injected:
        return passes_seed_rule(judge)
    return passes_seed_rule(judge) and judge.get(PAPER_FIELD) is True
