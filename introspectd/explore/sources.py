"""What the explorer reads: one `Source` per model, each a run database opened read-only.

A plan's run is opened in place (never written). Seed-format JSONL files are read (never
written) into one scratch database per model in a temporary folder, so both are served by the
same queries (run/browse.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.protocol.plan import Plan
from introspectd.protocol.trials import Status, trial_seed
from introspectd.report.writer import find_input_files, natural_key
from introspectd.run import browse
from introspectd.run.session import open_run
from introspectd.run.store import RunRow, Store, now_iso
from introspectd.text import loads_text


@dataclass
class Source:
    """One model's trials. `lock`: the server answers from worker threads; one statement at
    a time goes through the shared connection."""

    model: str
    store: Store
    stamp: str
    run_seed: int | None
    config: dict[str, Any]  # run-wide settings shown with each trial (prompt version, ...)
    norms: dict[tuple[str, int], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seed(self, trial_id: str) -> int | None:
        """The trial's sampling seed, as the generator derives it (protocol.trials)."""
        if self.run_seed is None or not self.stamp:
            return None
        return trial_seed(self.run_seed, trial_id.removeprefix(f"{self.stamp}_"))

    def trial_config(self, trial: dict[str, Any]) -> dict[str, Any]:
        norm = self.norms.get((trial["concept"], trial["layer"]))
        extra = {"vector_norm": norm, "magnitude": trial["strength"] * norm} if norm else {}
        return {
            "model": self.model,
            **self.config,
            "layer": trial["layer"],
            "strength": trial["strength"],
            "trial": trial["trial"],
            **extra,
        }

    def close(self) -> None:
        self.store.close()


def source_from_plan(plan: Plan) -> Source:
    """The plan's run database, read-only (a missing run is BadInput from open_run)."""
    ctx = open_run(plan, create=False, read_only=True, with_trials=False)
    run = ctx.run
    sweep = run.spec.get("sweep", {})
    config = {
        k: sweep[k] for k in ("prompt_version", "inject_style", "max_new_tokens") if k in sweep
    }
    return Source(
        run.model_name, ctx.store, run.stamp, run.spec.get("seed"), config, ctx.store.vector_norms()
    )


def sources_from_jsonl(inputs: list[Path], scratch: Path) -> list[Source]:
    """Seed-format files (folders searched for `*.jsonl`) → one scratch database per model."""
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for row, config in iter_jsonl_rows(inputs):
        by_model.setdefault(row["model"], {})[row["id"]] = row  # a later copy replaces
        configs.setdefault(row["model"], config)
    sources = []
    for i, model in enumerate(sorted(by_model, key=natural_key)):
        store = Store(scratch / f"model-{i}.sqlite3")
        store.save_run(RunRow("", "", model, "{}", {}, "", [], now_iso()))
        browse.import_trials(store, by_model[model].values())
        sources.append(Source(model, store, "", None, configs[model]))
    return sources


def iter_jsonl_rows(inputs: list[Path]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each record of the inputs as a trial row (browse's shape, plus "model") and the
    run-wide part of its config; a bad line is BadInput naming file and line."""
    from introspectd.report.writer import parse_record

    for path in find_input_files(inputs):
        fallback = path.parent.name or "unknown"
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = loads_text(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise BadInput(f"{where}: not a JSON line ({e})") from None
                yield _row(obj, parse_record(obj, fallback, where), where)


def _row(obj: dict[str, Any], flat: dict[str, Any], where: str) -> tuple[dict, dict]:
    config = obj.get("config") or {}
    judge_error = obj.get("judge_error")
    judge = flat["judge"]
    status = Status.JUDGED if judge else Status.JUDGE_FAILED if judge_error else Status.GENERATED
    arm = obj.get("arm")  # records name their arm since the random arm (issue 14)
    if arm not in ("injection", "control", "random"):
        arm = "injection" if flat["was_injected"] else "control"
    trial = config.get("trial")
    row = {
        "id": flat["id"] or where,
        "model": flat["model"],
        "concept": flat["concept"],
        "arm": arm,
        "layer": flat["layer"],
        "strength": flat["strength"],
        "trial": trial if isinstance(trial, int) else 0,
        "status": status.value,
        "response": obj.get("response") if isinstance(obj.get("response"), str) else "",
        "judge": judge,
        "judge_error": judge_error if isinstance(judge_error, str) else None,
        "generated_at": obj.get("timestamp") if isinstance(obj.get("timestamp"), str) else None,
    }
    run_wide = {k: config[k] for k in ("prompt_version", "inject_style") if k in config}
    return row, run_wide
