"""From a plan to an open run: paths, the model's shape, the database, and the trials to do.

Everything here runs before any weights load, so a bad plan fails in a second with one line.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from introspectd.errors import EXIT_INTERRUPTED, BadInput, PlanMismatch
from introspectd.fs_errors import environment_failure
from introspectd.protocol.models import (
    ModelRef,
    check_context,
    num_layers,
    read_model_config,
    resolve_model,
)
from introspectd.protocol.plan import Plan, env_experiment_id, env_stamp, spec_hash
from introspectd.protocol.prompts import baseline_words
from introspectd.protocol.trials import Status, TrialSpec, expand_trials, resolve_layers
from introspectd.run.scheduler import Ticket
from introspectd.run.store import RunRow, Store, database_damage, now_iso, read_run

if TYPE_CHECKING:
    from introspectd.run.shard import Shard

log = logging.getLogger("introspectd")
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
        # Read-only: looking for our run must not migrate or write other runs' databases,
        # and one damaged sibling must not block this run.
        try:
            run = read_run(candidate)
        except sqlite3.DatabaseError as e:
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
    read_only: bool = False,
    with_trials: bool = True,
) -> RunContext:
    """Resolve the run's directory, call `before_open(dir)` (GCS restore), open the database.

    `read_only` (with create=False): never write the run's files (`status`, `export`).
    `with_trials=False` (with create=False) leaves `tickets` and `selected_ids` empty: listing
    100,000 trials takes seconds, which `status` (counts only) does not need."""
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
        if create:
            _refuse_orphaned_results(plan, out_dir)
        store = _open_store(out_dir / DB_NAME, read_only=read_only and not create)
        notes: list[str] = []
        try:
            run = _reconcile_run(plan, ref, spec, out_dir, store, notes, is_writable=create)
        except BaseException:
            store.close()
            raise
        if not (with_trials or create):
            return RunContext(plan, ref, layers, out_dir, store, run, [], set(), notes, lock)
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


def _open_store(db: Path, read_only: bool) -> Store:
    """The run's database, checked first: a damaged file is one line (exit 2), never a
    traceback halfway through a run. (With [upload] gcs, durability.py has already swapped a
    damaged file for the last good snapshot by now.)"""
    try:
        damage = database_damage(db) if db.is_file() and db.stat().st_size else None
        if damage is not None:
            raise BadInput(
                f"{db}: the run database is damaged ({' '.join(damage.split())[:200]}); replace "
                "it with a backup (with [upload] gcs, `run` restores its last snapshot itself)"
            )
        return Store(db, read_only=read_only)
    except (sqlite3.Error, OSError) as e:
        failure = environment_failure(e)
        if failure is not None and failure[1] == EXIT_INTERRUPTED:
            raise  # a full disk is transient, not the user's input: cli.main says so, exit 75
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise BadInput(f"{db}: cannot open the run database ({reason})") from None


def _result_files(plan: Plan, out_dir: Path) -> list[str]:
    names = [f"{c}.jsonl" for c in plan.sweep.concepts]
    return [n for n in names if (out_dir / n).is_file() and (out_dir / n).stat().st_size > 0]


def _holds_run(db: Path) -> bool:
    """False when `db` is missing, empty or holds no run; True otherwise, damaged included
    (_open_store reports damage)."""
    if not db.is_file() or db.stat().st_size == 0:
        return False
    try:
        return read_run(db) is not None
    except sqlite3.Error:
        try:
            return database_damage(db) is not None
        except sqlite3.Error:
            return True


def _refuse_orphaned_results(plan: Plan, out_dir: Path) -> None:
    """Results on disk but no run database (deleted, 0 bytes, or never holding a run).

    Starting over would give the run a new stamp and rewrite these files without the finished
    trials. We refuse rather than move the files aside: the trials were judged and are often
    the only copy, a fresh run beside them would leave two stamps for `report` to mix, and
    the user knows best whether to restore the database or really start again.
    """
    if _holds_run(out_dir / DB_NAME):
        return
    found = _result_files(plan, out_dir)
    if found:
        raise BadInput(
            f"{out_dir}: holds results ({', '.join(found)}) but no run database ({DB_NAME} is "
            "missing or empty); restore the database, or move the results elsewhere to start "
            "a new run"
        )


def _lock_run_dir(out_dir: Path) -> int:
    """Hold an exclusive lock on the run directory for this process's lifetime.

    Two processes on one run would generate the same trials twice (the database keeps one
    answer each, but the GPU time is wasted) and could race a GCS restore.
    """
    lock = out_dir / LOCK_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symlink planted here must not make us truncate its target. O_NONBLOCK
        # only so a FIFO cannot hang the open; it is refused just below.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as e:
        why = "is a symbolic link; remove it" if os.path.islink(lock) else e.strerror or str(e)
        raise BadInput(f"{lock}: cannot take the run lock: {why}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInput(f"{lock}: cannot take the run lock: not a regular file; remove it")
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
    from introspectd.run.shard import select_shard

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
