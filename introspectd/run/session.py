"""From a plan to an open run: paths, the model's shape, the database, and the trials to do.

Everything here runs before any weights load, so a bad plan fails in a second with one line.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from introspectd.errors import BadInput, PlanMismatch
from introspectd.protocol import user_vectors
from introspectd.protocol.concept_sets import run_baseline
from introspectd.protocol.controls import CONTROL_DEFAULTS, sweep_trials
from introspectd.protocol.models import (
    ModelRef,
    check_context,
    num_layers,
    read_model_config,
    resolve_model,
)
from introspectd.protocol.plan import Plan, env_experiment_id, env_stamp, spec_hash
from introspectd.protocol.results import RunRow, now_iso
from introspectd.protocol.trials import Status, Trial, TrialSpec, resolve_layers
from introspectd.run.db import DatabaseError, Store, read_run
from introspectd.run.rundir import (  # noqa: F401  (DB_NAME, LOCK_NAME: the run's file names)
    DB_NAME,
    LOCK_NAME,
    lock_run_dir,
    no_run_found,
    open_store,
    refuse_orphaned_results,
)

if TYPE_CHECKING:
    from introspectd.run.shard import Shard

log = logging.getLogger("introspectd")
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
    pending: list[Trial]  # pending trials this process should generate
    selected_ids: set[str]  # every trial this process is responsible for
    notes: list[str] = field(default_factory=list)
    lock_fd: int | None = None  # held while this process runs the directory (rundir.py)
    cells: set[tuple[str, int, float]] = field(default_factory=set)  # selected cells (adaptive)

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
    ref = resolve_model(plan.model.name, plan.model.slug, file, plan.model.gguf_file)
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
    user_vectors.check_plan_file(plan.sweep, str(plan.path), config, layers)  # before weights
    return ref, layers


def generation_spec(plan: Plan, ref: ModelRef, layers: list[int]) -> dict[str, Any]:
    spec = plan.generation_spec()
    spec["model"]["name"] = ref.name
    if ref.gguf_sha256:  # the file's content decides the weights, not its path
        spec["model"]["gguf_sha256"] = ref.gguf_sha256
    if plan.sweep.vectors_file:  # and a vectors file's content decides the steering
        spec["sweep"]["vectors_sha256"] = user_vectors.file_sha256(plan.sweep, str(plan.path))
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
        # Read-only: looking for our run must not migrate or write other runs' databases,
        # and one damaged sibling must not block this run.
        try:
            run = read_run(candidate)
        except DatabaseError as e:
            log.warning(
                "skipping %s while looking for this plan's run: unreadable (%s)", candidate, e
            )
            continue
        if run is not None and _is_same_or_extension(run.spec, spec):
            return candidate.parent
    return root / f"{datetime.now():%Y-%m-%d}-sweep" / ref.slug


def _is_same_or_extension(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return _extension_problem(old, new) is None


def _extension_problem(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """None when `new` equals `old` or only adds trials; else the first difference."""
    new = json.loads(json.dumps(new))  # as `old` was stored: lists, not tuples
    if old["model"] != new["model"]:
        return f"model: {old['model']} → {new['model']}"
    if old["seed"] != new["seed"]:
        return f"run.seed: {old['seed']} → {new['seed']}"
    if old.get("adaptive") != new.get("adaptive"):
        return f"adaptive: {old.get('adaptive')} → {new.get('adaptive')}"
    if "adaptive" in new and old["sweep"]["trials"] != new["sweep"]["trials"]:
        return "sweep.trials (an adaptive run's first round) changed"
    # A key left out of a spec holds its default (strip_default_controls): compare both sides.
    for key in sorted({*old["sweep"], *new["sweep"]}):
        old_value = old["sweep"].get(key, CONTROL_DEFAULTS.get(key))
        new_value = new["sweep"].get(key, CONTROL_DEFAULTS.get(key))
        if old_value == new_value or _only_adds(key, old_value, new_value):
            continue
        if key == "prompts" and len(old_value) < 2:
            return (
                f"sweep.prompts: {old_value!r} → {new_value!r}: with more than one prompt every "
                "trial id gains its prompt (_p{name}), so this run's trials would be renamed; "
                "start a new experiment for the battery"
            )
        return f"sweep.{key}: {old_value!r} → {new_value!r}"
    return None


def _only_adds(key: str, old: Any, new: Any) -> bool:
    """Whether changing sweep `key` from `old` to `new` keeps every trial and adds some."""
    if key in ("concepts", "layers", "strengths", "arms", "custom_prompts"):
        return all(item in new for item in old)
    if key == "prompts":  # a battery's ids name their prompt; one prompt's do not
        return len(old) > 1 and all(item in new for item in old)
    if key in ("trials", "control_trials", "mismatch", "factual_controls"):  # trials added
        return bool(new > old)
    return False


@dataclass
class RunClaim:
    """A run's directory, resolved and (to start or change the run) locked, before anything
    in it is read: `run` restores its GCS snapshot in between, then calls `open`."""

    plan: Plan
    narrowing: Narrowing
    ref: ModelRef
    layers: list[int]
    spec: dict[str, Any]
    out_dir: Path
    lock_fd: int | None  # held for a writer (see rundir.lock_run_dir); passed on to the RunContext

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the descriptor releases the lock
            self.lock_fd = None

    def open(self, read_only: bool = False, with_trials: bool = True) -> RunContext:
        """Open the database (creating or extending the run when locked); the context takes the
        lock over. `read_only` (unlocked claims): never write the run's files.
        `with_trials=False` (unlocked) leaves `pending` and `selected_ids` empty: listing
        100,000 trials takes seconds, which `status` (counts only) does not need."""
        try:
            return self._open(read_only and self.lock_fd is None, with_trials)
        except BaseException:
            self.release()
            raise

    def _open(self, read_only: bool, with_trials: bool) -> RunContext:
        plan, out_dir, create = self.plan, self.out_dir, self.lock_fd is not None
        if not create and not (out_dir / DB_NAME).is_file():
            raise no_run_found(str(plan.path), out_dir)
        if create:
            refuse_orphaned_results(plan, out_dir)
        store = open_store(out_dir / DB_NAME, read_only=read_only)
        notes: list[str] = []
        try:
            run = _reconcile_run(plan, self.ref, self.spec, out_dir, store, notes, create)
        except BaseException:
            store.close()
            raise
        if not (with_trials or create):
            return RunContext(plan, self.ref, self.layers, out_dir, store, run, [], set(), notes)
        all_specs = _all_specs(plan, self.layers)
        shard = self.narrowing.shard
        by_cell = plan.adaptive.enabled  # each shard adapts its own cells
        added = store.add_trials(run.stamp, _shard_of(all_specs, shard, by_cell)) if create else 0
        if added and notes:
            notes.append(f"added {added} new trials to the run")
        chosen = _narrow(all_specs, self.narrowing, by_cell)
        selected_ids = {s.trial_id(run.stamp) for s in chosen}
        cells = {s.cell for s in chosen}
        if plan.adds_trials_as_it_goes:  # later rounds and confirmation trials of these cells
            selected_ids |= {r.id for r in store.trials() if r.spec.cell in cells}
        pending = [
            Trial(r.id, r.spec) for r in store.trials(Status.PENDING) if r.id in selected_ids
        ]
        lock, self.lock_fd = self.lock_fd, None
        ctx = RunContext(
            plan, self.ref, self.layers, out_dir, store, run, pending, selected_ids, notes, lock
        )
        ctx.cells = cells
        return ctx


def claim_run(plan: Plan, narrowing: Narrowing | None = None, lock: bool = True) -> RunClaim:
    """Resolve the run's directory and check the narrowing; with `lock`, take the directory's
    lock (the caller then opens or releases the claim)."""
    narrowing = narrowing or Narrowing()
    ref, layers = model_and_layers(plan)
    spec = generation_spec(plan, ref, layers)
    out_dir = experiment_dir(plan, ref, spec)
    if narrowing.shard is not None:
        out_dir = out_dir / narrowing.shard.dirname
    _check_narrowing(plan, narrowing, str(plan.path))
    if narrowing.shard is not None:  # before its directory is made: an empty shard is a typo
        _require_trials_in(narrowing.shard, plan, layers)
    lock_fd = lock_run_dir(out_dir) if lock else None
    return RunClaim(plan, narrowing, ref, layers, spec, out_dir, lock_fd)


def open_run(
    plan: Plan,
    narrowing: Narrowing | None = None,
    create: bool = True,
    read_only: bool = False,
    with_trials: bool = True,
) -> RunContext:
    """The run, created or extended when `create` (holding its lock), else only read.

    `read_only` (with create=False): never write the run's files (`status`, `export`)."""
    claim = claim_run(plan, narrowing, lock=create)
    return claim.open(read_only=read_only, with_trials=with_trials)


def _check_narrowing(plan: Plan, narrowing: Narrowing, file: str) -> None:
    unknown = [c for c in narrowing.concepts if c not in plan.sweep.concepts]
    if unknown:
        raise BadInput(
            f"--concept: {unknown[0]!r} is not a concept of {file} "
            f"({', '.join(plan.sweep.concepts)})"
        )
    if narrowing.num_trials is not None and plan.adaptive.enabled:
        raise BadInput(f"--trials: {file} has [adaptive] enabled, which decides the trials")
    if narrowing.num_trials is not None and not 1 <= narrowing.num_trials <= plan.sweep.trials:
        raise BadInput(
            f"--trials: must be between 1 and the plan's trials ({plan.sweep.trials}) "
            f"in {file}, got {narrowing.num_trials}"
        )


def _all_specs(plan: Plan, layers: list[int]) -> list[TrialSpec]:
    return sweep_trials(plan.sweep, layers)


def _require_trials_in(shard: Shard, plan: Plan, layers: list[int]) -> None:
    by_cell = plan.adaptive.enabled
    specs = _all_specs(plan, layers)
    if _shard_of(specs, shard, by_cell):
        return
    units = len({s.cell for s in specs}) if by_cell else len(specs)
    raise BadInput(
        f"--shard {shard}: this shard holds none of {plan.path}'s "
        f"{units} {'cells' if by_cell else 'trials'}; split it into at most {units} shards"
    )


def _shard_of(
    specs: list[TrialSpec], shard: Shard | None, by_cell: bool = False
) -> list[TrialSpec]:
    if shard is None:
        return specs
    from introspectd.run.shard import select_shard, select_shard_by_cell

    return select_shard_by_cell(specs, shard) if by_cell else select_shard(specs, shard)


def _narrow(specs: list[TrialSpec], narrowing: Narrowing, by_cell: bool) -> list[TrialSpec]:
    chosen = _shard_of(specs, narrowing.shard, by_cell)
    if narrowing.concepts:
        # The control pool is every concept's: `--concept` runs it too (a pooled control
        # belongs to no concept, protocol/trials.py).
        chosen = [s for s in chosen if s.concept in narrowing.concepts or s.is_pooled]
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
        raise no_run_found(file, out_dir)
    if existing is None:
        stamp = plan.run.stamp or env_stamp() or f"{datetime.now():%Y%m%d_%H%M%S}"
        run = RunRow(
            stamp,
            out_dir.parent.name,
            ref.name,
            plan.to_json(),
            spec,
            new_hash,
            run_baseline(plan.sweep),
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
