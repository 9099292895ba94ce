"""From a plan to an open run: paths, the model's shape, the database, and the trials to do.

Everything here runs before any weights load, so a bad plan fails in a second with one line.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from introspectd.errors import BadInput, PlanMismatch
from introspectd.models import ModelRef, check_context, num_layers, read_model_config, resolve_model
from introspectd.plan import Plan, env_experiment_id, env_stamp, spec_hash
from introspectd.prompts import baseline_words
from introspectd.scheduler import Ticket
from introspectd.store import RunRow, Store, now_iso
from introspectd.trials import Status, TrialSpec, expand_trials, resolve_layers

if TYPE_CHECKING:
    from introspectd.shard import Shard

DB_NAME = "state.sqlite"
LOCK_NAME = ".introspectd.lock"
# INTROSPECTD_STAMP and INTROSPECTD_EXPERIMENT_ID, which `batch render` pins for every task,
# are read (and checked like the plan keys) by plan.env_stamp and plan.env_experiment_id.


@dataclass(frozen=True)
class Narrowing:
    """`--concept`, `--trials` and `--shard`: which of the plan's trials this process runs."""

    concepts: tuple[str, ...] = ()
    num_trials: int | None = None
    shard: Shard | None = None


@dataclass
class RunContext:
    plan: Plan
    ref: ModelRef
    layers: list[int]
    out_dir: Path
    store: Store
    run: RunRow
    tickets: list[Ticket]  # pending trials this process should generate
    selected_ids: set[str]  # every trial this process is responsible for
    notes: list[str] = field(default_factory=list)
    lock_fd: int | None = None  # held while this process runs the directory (see _lock_run_dir)

    @property
    def db_path(self) -> Path:
        return self.out_dir / DB_NAME

    def close(self) -> None:
        self.store.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def model_and_layers(plan: Plan) -> tuple[ModelRef, list[int]]:
    file = str(plan.path)
    ref = resolve_model(plan.model.name, plan.model.slug, file)
    config = read_model_config(ref, file)
    check_context(config, plan.sweep.max_new_tokens, ref.name, file)
    total = num_layers(config)
    layers = resolve_layers(plan.sweep.layers, total)
    bad = [layer for layer in layers if layer >= total]
    if bad:
        raise BadInput(
            f"{file}: [sweep] layers: layer {bad[0]} is out of range for "
            f"{ref.name} ({total} layers: 0..{total - 1})"
        )
    return ref, layers


def generation_spec(plan: Plan, ref: ModelRef, layers: list[int]) -> dict[str, Any]:
    spec = plan.generation_spec()
    spec["model"]["name"] = ref.name
    spec["sweep"]["layers"] = layers
    return spec


def experiment_dir(plan: Plan, ref: ModelRef, spec: dict[str, Any]) -> Path:
    """`{output_dir}/{experiment_id}/{slug}`; a missing experiment_id is fixed at creation."""
    root = Path(plan.run.output_dir)
    experiment_id = plan.run.experiment_id or env_experiment_id()
    if experiment_id:
        return root / experiment_id / ref.slug
    # Reuse the dated directory of an earlier start of this same plan, so a restart on another
    # day resumes instead of starting over.
    for candidate in sorted(root.glob(f"*-sweep/{ref.slug}/{DB_NAME}")):
        store = Store(candidate)
        try:
            run = store.get_run()
        finally:
            store.close()
        if run is not None and _is_same_or_extension(run.spec, spec):
            return candidate.parent
    return root / f"{datetime.now():%Y-%m-%d}-sweep" / ref.slug


def _is_same_or_extension(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return _extension_problem(old, new) is None


def _extension_problem(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """None when `new` equals `old` or only adds trials; else the first difference."""
    if old["model"] != new["model"]:
        return f"model: {old['model']} → {new['model']}"
    if old["seed"] != new["seed"]:
        return f"run.seed: {old['seed']} → {new['seed']}"
    for key, old_value in old["sweep"].items():
        new_value = new["sweep"].get(key)
        if old_value == new_value:
            continue
        if key in ("concepts", "layers", "strengths") and set(old_value) <= set(new_value):
            continue
        if key == "trials" and new_value > old_value:
            continue
        return f"sweep.{key}: {old_value!r} → {new_value!r}"
    return None


def open_run(
    plan: Plan,
    narrowing: Narrowing | None = None,
    create: bool = True,
    before_open: Callable[[Path], None] | None = None,
) -> RunContext:
    """Resolve the run's directory, call `before_open(dir)` (GCS restore), open the database."""
    narrowing = narrowing or Narrowing()
    file = str(plan.path)
    ref, layers = model_and_layers(plan)
    spec = generation_spec(plan, ref, layers)
    out_dir = experiment_dir(plan, ref, spec)
    if narrowing.shard is not None:
        out_dir = out_dir / narrowing.shard.dirname
    _check_narrowing(plan, narrowing, file)
    lock = _lock_run_dir(out_dir) if create else None
    try:
        if before_open is not None:
            before_open(out_dir)
        if not create and not (out_dir / DB_NAME).is_file():
            raise _no_run_found(file, out_dir)
        store = Store(out_dir / DB_NAME)
        notes: list[str] = []
        run = _reconcile_run(plan, ref, spec, out_dir, store, notes, is_writable=create)
        all_specs = expand_trials(
            plan.sweep.concepts, layers, plan.sweep.strengths, plan.sweep.trials
        )
        added = store.add_trials(run.stamp, _shard_of(all_specs, narrowing.shard)) if create else 0
        if added and notes:
            notes.append(f"added {added} new trials to the run")
        selected = _narrow(all_specs, narrowing)
        selected_ids = {s.trial_id(run.stamp) for s in selected}
        tickets = [
            Ticket(row.id, row.spec)
            for row in store.trials(Status.PENDING)
            if row.id in selected_ids
        ]
        return RunContext(
            plan, ref, layers, out_dir, store, run, tickets, selected_ids, notes, lock
        )
    except BaseException:
        if lock is not None:
            os.close(lock)  # closing the descriptor releases the lock
        raise


def _no_run_found(file: str, out_dir: Path) -> BadInput:
    return BadInput(f"{file}: no run found at {out_dir / DB_NAME}; start it with `introspectd run`")


def _lock_run_dir(out_dir: Path) -> int:
    """Hold an exclusive lock on the run directory for this process's lifetime.

    Two processes on one run would generate the same trials twice (the database keeps one
    answer each, but the GPU time is wasted) and could race a GCS restore.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise BadInput(
            f"{out_dir}: another introspectd process (pid {holder}) is running this "
            "run; wait for it or stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _check_narrowing(plan: Plan, narrowing: Narrowing, file: str) -> None:
    unknown = [c for c in narrowing.concepts if c not in plan.sweep.concepts]
    if unknown:
        raise BadInput(
            f"--concept: {unknown[0]!r} is not a concept of {file} "
            f"({', '.join(plan.sweep.concepts)})"
        )
    if narrowing.num_trials is not None and not 1 <= narrowing.num_trials <= plan.sweep.trials:
        raise BadInput(
            f"--trials: must be between 1 and the plan's trials ({plan.sweep.trials}) "
            f"in {file}, got {narrowing.num_trials}"
        )


def _shard_of(specs: list[TrialSpec], shard: Shard | None) -> list[TrialSpec]:
    if shard is None:
        return specs
    from introspectd.shard import select_shard

    return select_shard(specs, shard)


def _narrow(specs: list[TrialSpec], narrowing: Narrowing) -> list[TrialSpec]:
    chosen = _shard_of(specs, narrowing.shard)
    if narrowing.concepts:
        chosen = [s for s in chosen if s.concept in narrowing.concepts]
    if narrowing.num_trials is not None:
        chosen = [s for s in chosen if s.trial < narrowing.num_trials]
    return chosen


def _reconcile_run(
    plan: Plan,
    ref: ModelRef,
    spec: dict[str, Any],
    out_dir: Path,
    store: Store,
    notes: list[str],
    is_writable: bool,
) -> RunRow:
    """The stored run, checked against this plan; created or extended only when writable
    (`status`, `export` and `rejudge` read a run without changing its plan)."""
    file = str(plan.path)
    existing = store.get_run()
    new_hash = spec_hash(spec)
    if existing is None and not is_writable:
        raise _no_run_found(file, out_dir)
    if existing is None:
        stamp = plan.run.stamp or env_stamp() or f"{datetime.now():%Y%m%d_%H%M%S}"
        run = RunRow(
            stamp,
            out_dir.parent.name,
            ref.name,
            plan.to_json(),
            spec,
            new_hash,
            baseline_words(plan.sweep.concepts),
            now_iso(),
        )
        store.save_run(run)
        return run
    if plan.run.stamp and plan.run.stamp != existing.stamp:
        raise PlanMismatch(
            f"{file}: [run] stamp: the run at {out_dir} has stamp "
            f"{existing.stamp}, not {plan.run.stamp}"
        )
    if existing.spec_hash == new_hash:
        run = RunRow(**{**existing.__dict__, "plan_json": plan.to_json()})
        if is_writable:
            store.save_run(run)
        return run
    problem = _extension_problem(existing.spec, spec)
    if problem is not None:
        raise PlanMismatch(
            f"{file}: the run at {out_dir} was created with a different plan "
            f"({problem}); restore the original plan or use a new "
            "[run] experiment_id"
        )
    clash = sorted(set(plan.sweep.concepts) & set(existing.baseline))
    if clash:
        raise PlanMismatch(
            f"{file}: [sweep] concepts: {clash[0]!r} is one of this run's "
            "baseline words, so its vector would be skewed; use a new experiment_id"
        )
    notes.append(f"plan extends the stored run at {out_dir} (same settings, more trials)")
    if not is_writable:
        return existing
    run = RunRow(
        existing.stamp,
        existing.experiment_id,
        existing.model_name,
        plan.to_json(),
        spec,
        new_hash,
        existing.baseline,
        existing.created_at,
    )
    store.save_run(run)
    return run
