"""Load a plan from wherever the command line was told: a local file or `gs://`."""

from __future__ import annotations

from pathlib import Path

from introspectd.protocol.plan import Plan, plan_from_text
from introspectd.protocol.plan import load_plan as load_local_plan


def load_plan(path: str | Path) -> Plan:
    file = str(path)
    if not file.startswith("gs://"):
        return load_local_plan(path)
    from introspectd.cloud.gcs import read_plan_text  # google-cloud-storage only when needed

    return plan_from_text(read_plan_text(file), file, file)
