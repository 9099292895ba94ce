"""introspectd: concept-injection introspection sweeps on open-weight LLMs, at scale.

The public surface, for scripts and notebooks (the command line uses the same functions):

    plan = introspectd.load_plan("sweep.toml")            # a file or gs://bucket/plan.toml
    ctx = introspectd.open_run(plan, create=False, read_only=True)   # a run's database
    introspectd.write_report([Path("data/sweeps/exp/3b")], Path("report"))

Every error introspectd raises on purpose is an `IntrospectdError` (see `introspectd.errors`
for the tree and exit codes). Names load on first use, so `import introspectd` stays cheap and
never imports torch: every CLI command imports this package first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from introspectd.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BadInput,
    Interrupted,
    IntrospectdError,
    PlanMismatch,
    RestoreError,
    SnapshotError,
    StaleWriter,
    Transient,
    UploadError,
)

if TYPE_CHECKING:
    from introspectd.app.plans import load_plan
    from introspectd.judge.rejudge import rejudge
    from introspectd.protocol.plan import Plan
    from introspectd.protocol.trials import TrialSpec, expand_trials
    from introspectd.report.writer import ReportPaths, write_report
    from introspectd.run.session import Narrowing, RunContext, open_run

__version__ = "0.1.0"

_LAZY = {
    "load_plan": "introspectd.app.plans",
    "Plan": "introspectd.protocol.plan",
    "TrialSpec": "introspectd.protocol.trials",
    "expand_trials": "introspectd.protocol.trials",
    "Narrowing": "introspectd.run.session",
    "RunContext": "introspectd.run.session",
    "open_run": "introspectd.run.session",
    "rejudge": "introspectd.judge.rejudge",
    "ReportPaths": "introspectd.report.writer",
    "write_report": "introspectd.report.writer",
}

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "BadInput",
    "Interrupted",
    "IntrospectdError",
    "Narrowing",
    "Plan",
    "PlanMismatch",
    "ReportPaths",
    "RestoreError",
    "RunContext",
    "SnapshotError",
    "StaleWriter",
    "Transient",
    "TrialSpec",
    "UploadError",
    "__version__",
    "expand_trials",
    "load_plan",
    "open_run",
    "rejudge",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'introspectd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # load once
    return value
