"""What the explorer reads: one `Source` per model, each a run database opened read-only.

A plan's run is opened in place (never written). Seed-format JSONL files are read (never
written) into one scratch database per model in a temporary folder, so both are served by the
same queries (run/db/browse.py). A trial's sampling seed is known where its run's database is at
hand: the plan's, or a `state.sqlite` beside the JSONL files (a run directory holds both).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.jsonl import read_jsonl
from introspectd.protocol.lexicon import Lexicon, recorded_mention
from introspectd.protocol.plan import Plan
from introspectd.protocol.results import RecordMention, RunRow, now_iso
from introspectd.protocol.trials import Status, trial_seed
from introspectd.report.controls import finite_number
from introspectd.report.judges import run_databases
from introspectd.report.mentions import run_lexicon
from introspectd.report.writer import find_input_files, natural_key
from introspectd.run.db import Store, browse
from introspectd.run.rundir import open_store
from introspectd.run.session import open_run


@dataclass
class Source:
    """One model's trials. `lock`: the server answers from worker threads; one statement at
    a time goes through the shared connection."""

    model: str
    store: Store
    run_seeds: dict[str, int]  # stamp → run seed, of the runs whose database is at hand
    config: dict[str, Any]  # run-wide settings shown with each trial (prompt version, ...)
    norms: dict[tuple[str, int], float] = field(default_factory=dict)
    lexicon: Lexicon = field(default_factory=Lexicon)  # the run's: its plan's [mentions]
    recorded: dict[str, RecordMention] = field(default_factory=dict)  # the files' `mention`s
    residual: dict[int, float] = field(default_factory=dict)  # strength_unit = "residual" only
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seed(self, trial_id: str) -> int | None:
        return seed_of(self.run_seeds, trial_id)

    def mention(self, trial: dict[str, Any]) -> RecordMention | None:
        return trial_mention(trial, self.recorded.get(trial["id"]), self.lexicon)

    def trial_config(self, trial: dict[str, Any]) -> dict[str, Any]:
        norm = self.norms.get((trial["concept"], trial["layer"]))
        extra = {"vector_norm": norm, "magnitude": trial["strength"] * norm} if norm else {}
        residual = self.residual.get(trial["layer"])
        if residual is not None:  # the delta's size is strength × residual norm (arms.py)
            extra = {"vector_norm": norm, "residual_norm": residual}
            extra["magnitude"] = trial["strength"] * residual
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


def trial_mention(
    trial: dict[str, Any], recorded: RecordMention | None, lexicon: Lexicon
) -> RecordMention | None:
    """Where the trial's answer first mentions its concept: as its record says (files), else
    as the exporter writes it with `lexicon` (a run's: its plan's); None for a read-out."""
    if trial.get("p_yes") is not None:
        return None
    if recorded is not None:
        return recorded
    return lexicon.first_mention(trial["response"] or "", trial["concept"]).as_record()


def seed_of(run_seeds: dict[str, int], trial_id: str) -> int | None:
    """The trial's sampling seed, as the generator derives it (protocol.trials); None when its
    run is not among `run_seeds`. Ids start with their run's stamp."""
    for stamp, run_seed in run_seeds.items():
        if stamp and trial_id.startswith(f"{stamp}_"):
            return trial_seed(run_seed, trial_id.removeprefix(f"{stamp}_"))
    return None


def run_seeds_beside(inputs: list[Path]) -> dict[str, int]:
    """stamp → run seed of each run database beside the input files."""
    seeds = {}
    for db in run_databases(tuple(find_input_files(inputs))):
        store = open_store(db, read_only=True)
        try:
            run = store.get_run()
        finally:
            store.close()
        if run is not None and isinstance(run.spec.get("seed"), int):
            seeds[run.stamp] = run.spec["seed"]
    return seeds


def source_from_plan(plan: Plan) -> Source:
    """The plan's run database, read-only (a missing run is BadInput from open_run)."""
    ctx = open_run(plan, create=False, read_only=True, with_trials=False)
    run = ctx.run
    sweep = run.spec.get("sweep", {})
    config = {
        k: sweep[k] for k in ("prompt_version", "inject_style", "max_new_tokens") if k in sweep
    }
    seed = run.spec.get("seed")
    seeds = {run.stamp: seed} if isinstance(seed, int) else {}
    norms = ctx.store.vector_norms()
    source = Source(run.model_name, ctx.store, seeds, config, norms, plan.mentions.lexicon())
    if sweep.get("strength_unit") == "residual":
        source.residual = ctx.store.residual_norms()
    return source


def sources_from_jsonl(inputs: list[Path], scratch: Path) -> list[Source]:
    """Seed-format files (folders searched for `*.jsonl`) → one scratch database per model.
    Files without a record are BadInput: there would be nothing to show."""
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for row, config in iter_jsonl_rows(inputs):
        by_model.setdefault(row["model"], {})[row["id"]] = row  # a later copy replaces
        configs.setdefault(row["model"], config)
    if not by_model:
        raise BadInput(no_records(inputs))
    seeds = run_seeds_beside(inputs)
    lexicon = jsonl_lexicon(inputs)
    sources = []
    for i, model in enumerate(sorted(by_model, key=natural_key)):
        store = Store(scratch / f"model-{i}.sqlite3")
        store.save_run(RunRow("", "", model, "{}", {}, "", [], now_iso()))
        rows = by_model[model].values()
        browse.import_trials(store, rows)
        recorded = {r["id"]: r["mention"] for r in rows if r["mention"] is not None}
        sources.append(Source(model, store, seeds, configs[model], {}, lexicon, recorded))
    return sources


def jsonl_lexicon(inputs: list[Path]) -> Lexicon:
    """The report's lexicon for these files (the plan stored beside them, else built-in): for
    records written before records carried `mention`."""
    return run_lexicon(find_input_files(inputs))


def no_records(inputs: list[Path]) -> str:
    files = ", ".join(str(f) for f in find_input_files(inputs))
    return f"{files}: no records to explore (not one JSON line)"


def iter_jsonl_rows(inputs: list[Path]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each record of the inputs as a trial row (browse's shape, plus "model") and the
    run-wide part of its config; a bad line is BadInput naming file and line."""
    from introspectd.report.writer import model_from_path, parse_record

    for path in find_input_files(inputs):
        fallback = model_from_path(path)  # the report's rule: one rule for both
        for line in read_jsonl(path, "records file", expect="a seed-format record"):
            if line.value is not None:
                where = f"{path}:{line.lineno}"
                yield _row(line.value, parse_record(line.value, fallback, where), where)


def _mention(obj: dict[str, Any], flat: dict[str, Any]) -> RecordMention | None:
    """The record's own `mention`, where it fits its answer (else the lexicon finds it)."""
    if not isinstance(flat["response"], str):
        return None
    found = recorded_mention(obj.get("mention"), flat["response"])
    return None if found is None else found.as_record()


def _probability(obj: dict[str, Any], key: str) -> float | None:
    return finite_number(obj.get(key))


def _sql_int(value: Any) -> int | None:
    """`value` where it is an integer SQLite can store (JSON's may have any number of digits)."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return value if is_int and value in browse.SQL_INTEGER else None


def _row(obj: dict[str, Any], flat: dict[str, Any], where: str) -> tuple[dict, dict]:
    config = obj.get("config") or {}
    judge_error = obj.get("judge_error")
    judge = flat["judge"]
    status = Status.JUDGED if judge else Status.JUDGE_FAILED if judge_error else Status.GENERATED
    arm = obj.get("arm")  # records name their arm since the random arm (issue 14)
    if arm not in ("injection", "control", "random"):
        arm = "injection" if flat["was_injected"] else "control"
    if flat["layer"] not in browse.SQL_INTEGER:
        raise BadInput(f"{where}: 'config.layer' is out of range (a 64-bit integer)")
    trial = _sql_int(config.get("trial"))
    factual = obj.get("factual")  # a logit run's factual control question (control_keys.py)
    factual = factual if isinstance(factual, dict) else {}
    question, question_text = factual.get("index"), factual.get("text")
    row = {
        "id": flat["id"] or where,
        "model": flat["model"],
        "concept": flat["concept"],
        "arm": arm,
        "layer": flat["layer"],
        "strength": flat["strength"],
        "trial": 0 if trial is None else trial,
        "status": status.value,
        "response": obj.get("response") if isinstance(obj.get("response"), str) else "",
        "judge": judge,
        "judge_error": judge_error if isinstance(judge_error, str) else None,
        "generated_at": obj.get("timestamp") if isinstance(obj.get("timestamp"), str) else None,
        "question": _sql_int(question),
        "mention": _mention(obj, flat),
        "question_text": question_text if isinstance(question_text, str) else None,
        **{k: _probability(obj, k) for k in ("p_yes", "prob_yes", "prob_no")},
    }
    run_wide = {k: config[k] for k in ("prompt_version", "inject_style") if k in config}
    return row, run_wide
