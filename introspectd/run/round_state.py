"""An adaptive run's state, derived from its database: which trials the next round adds and
which cells are confirmed. No SQL here (the store's `outcomes`), no decisions either
(run/round_decisions.py): this module only counts.

Everything is recomputed from the judged results each time, so a restart — after SIGKILL, or
on another VM from a GCS snapshot — reaches the same state: `replay` re-decides every fully
judged round from round 0, and the missing trials of the decided rounds are exactly what the
next call adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from introspectd.protocol.plan import Plan
from introspectd.protocol.trials import Status, TrialSpec, cell_trials
from introspectd.run.db import Outcome
from introspectd.run.round_decisions import (
    CellCounts,
    CellKey,
    Replay,
    StopReason,
    certain_next,
    injection_interval,
    net_lower_bound,
    replay,
)

# Decisions rest on judged answers only: a judge failure leaves its trial undecided (its round
# waits), never counted as nothing. An adaptive run whose judge fails every request would
# otherwise run each cell to its cap and confirm arbitrary cells (issue 22 item 19).
_FINISHED = (Status.JUDGED,)
_SETTLED = (Status.JUDGED, Status.JUDGE_FAILED)  # nothing more will happen to it this process


@dataclass
class _Cell:
    """Per-index outcomes of one cell's exploration trials: index → (judged, pass, coherent)."""

    inj: dict[int, tuple[bool, bool | None, bool | None]]
    ctl: dict[int, tuple[bool, bool | None, bool | None]]

    def counts_below(self, num_indices: int) -> CellCounts | None:
        """Counts over indices < num_indices; None if one is missing or still being judged."""
        counts = [0, 0, 0, 0, 0]  # inj_pass, inj_n, ctl_fp, ctl_n, coherent
        for t in range(num_indices):
            inj, ctl = self.inj.get(t), self.ctl.get(t)
            if inj is None or ctl is None or not (inj[0] and ctl[0]):
                return None
            if inj[1] is not None:
                counts[0] += inj[1]
                counts[1] += 1
                counts[4] += bool(inj[2])
            if ctl[1] is not None:
                counts[2] += not ctl[1]
                counts[3] += 1
        return CellCounts(num_indices, *counts)

    def best_possible_lower(self, num_indices: int) -> float:
        """The highest injection-rate lower bound the cell can reach once indices < num_indices
        are all judged: every injection answer not yet graded counted as a pass."""
        passes = total = 0
        for t in range(num_indices):
            entry = self.inj.get(t)
            if entry is None or not entry[0] or entry[1] is None:
                passes, total = passes + 1, total + 1  # pending, or a judge failure (≤ a pass)
            else:
                passes, total = passes + entry[1], total + 1
        return injection_interval(CellCounts(num_indices, passes, total))[0]


def _cells(outcomes: Iterable[Outcome], chosen: set[CellKey]) -> dict[CellKey, _Cell]:
    cells = {key: _Cell({}, {}) for key in chosen}
    for o in outcomes:
        if o.is_confirmation or o.cell not in cells:
            continue
        passed = None if o.answer is None else o.answer.strip().lower() == "pass"
        entry = (o.status in _FINISHED, passed, o.coherent)
        (cells[o.cell].inj if o.is_injected else cells[o.cell].ctl)[o.trial] = entry
    return cells


def replay_run(plan: Plan, outcomes: list[Outcome], chosen: set[CellKey]) -> Replay:
    """The decisions the run's judged results lead to, round by round."""
    return _replay_cells(plan, _cells(outcomes, chosen), chosen)


def _replay_cells(plan: Plan, cells: dict[CellKey, _Cell], chosen: set[CellKey]) -> Replay:

    def counts_through(
        _: int, num_indices: Mapping[CellKey, int]
    ) -> dict[CellKey, CellCounts] | None:
        out: dict[CellKey, CellCounts] = {}
        for key, cell in cells.items():
            counts = cell.counts_below(num_indices[key])
            if counts is None:
                return None
            out[key] = counts
        return out

    return replay(plan.adaptive, plan.sweep.trials, sorted(chosen), counts_through)


def _early_trials(
    plan: Plan,
    cells: dict[CellKey, _Cell],
    state: Replay,
    present: set[tuple[CellKey, int, bool]],
) -> list[TrialSpec]:
    """Next-round trials of the cells whose round is judged and whose decision to go on is
    certain already (`certain_next`), while other cells' answers are still being judged."""
    max_best: dict[str, float] = {}
    for key, cell in cells.items():
        if state.stopped.get(key) is not StopReason.DROPPED_INCOHERENT:
            bound = cell.best_possible_lower(state.num_indices[key])
            max_best[key[0]] = max(max_best.get(key[0], 0.0), bound)
    add: list[TrialSpec] = []
    for key, cell in sorted(cells.items()):
        num = state.num_indices[key]
        counts = cell.counts_below(num) if key not in state.stopped else None
        if counts is None:
            continue
        num_next = certain_next(plan.adaptive, counts, max_best.get(key[0], 0.0))
        add += [
            spec
            for spec in cell_trials(key, range(num, num + num_next))
            if (key, spec.trial, False) not in present
        ]
    return add


def exploration_counts(outcomes: list[Outcome], chosen: set[CellKey]) -> dict[CellKey, CellCounts]:
    """Each cell's judged exploration results so far, whatever is still in flight."""
    out = {}
    for key, cell in _cells(outcomes, chosen).items():
        inj_pass = sum(bool(e[1]) for e in cell.inj.values() if e[1] is not None)
        inj_n = sum(e[1] is not None for e in cell.inj.values())
        ctl_fp = sum(not e[1] for e in cell.ctl.values() if e[1] is not None)
        ctl_n = sum(e[1] is not None for e in cell.ctl.values())
        coherent = sum(bool(e[2]) for e in cell.inj.values() if e[1] is not None)
        out[key] = CellCounts(len(cell.inj), inj_pass, inj_n, ctl_fp, ctl_n, coherent)
    return out


def best_cells(counts: Mapping[CellKey, CellCounts], k: int) -> list[CellKey]:
    """The `k` best cells: highest lower bound of the 95% Newcombe interval on injection pass
    rate − control FP rate (ties: plan order of concept, layer, strength)."""
    return sorted(counts, key=lambda key: (-net_lower_bound(counts[key]), key))[:k]


def blocked_by_failures(outcomes: list[Outcome], chosen: set[CellKey]) -> int:
    """How many of the chosen cells' exploration trials failed to be judged, once nothing else
    is in flight (every trial judged or failed); 0 while any is still waiting for the judge.
    Called when `missing_trials` adds nothing and the run is not over: a positive count means
    the run cannot go on until those trials are judged."""
    mine = [o for o in outcomes if not o.is_confirmation and o.cell in chosen]
    if any(o.status not in _SETTLED for o in mine):
        return 0
    return sum(o.status is Status.JUDGE_FAILED for o in mine)


def missing_trials(
    plan: Plan, outcomes: list[Outcome], chosen: set[CellKey], is_adaptive: bool
) -> tuple[list[TrialSpec], bool]:
    """(trials to add now, whether the run needs no more after them).

    Adaptive: the decided rounds' trials not in the database yet. Once exploration is over
    (every round decided, or, for a fixed grid, every chosen exploration trial judged), the
    confirmation trials of the `confirm_top` best cells.
    """
    present = {(o.cell, o.trial, o.is_confirmation) for o in outcomes if o.is_injected}
    if is_adaptive:
        cells = _cells(outcomes, chosen)
        state = _replay_cells(plan, cells, chosen)
        add = [
            spec
            for key, num in sorted(state.num_indices.items())
            for spec in cell_trials(key, range(num))
            if (key, spec.trial, False) not in present
        ]
        if not add and not state.is_finished:
            add = _early_trials(plan, cells, state, present)
        if add or not state.is_finished:
            return add, False
    elif any(
        not o.is_confirmation and o.cell in chosen and o.status not in _FINISHED for o in outcomes
    ):
        return [], False
    settings = plan.adaptive
    top = best_cells(exploration_counts(outcomes, chosen), settings.confirm_top)
    add = [
        spec
        for key in top
        for spec in cell_trials(key, range(settings.confirm_trials), is_confirmation=True)
        if (key, spec.trial, True) not in present
    ]
    return add, not add


def decisions_summary(
    plan: Plan, outcomes: list[Outcome], chosen: set[CellKey]
) -> dict[str, object]:
    """What `adaptive.json` holds: the settings and each cell's trial indices and stop reason
    ("open" while undecided), for the report (report/adaptive_section.py)."""
    state = replay_run(plan, outcomes, chosen) if plan.adaptive.enabled else None
    cells = []
    for key in sorted(chosen):
        concept, layer, strength = key
        stop = "fixed grid" if state is None else str(state.stopped.get(key, "open"))
        num = plan.sweep.trials if state is None else state.num_indices[key]
        cells.append(
            {"concept": concept, "layer": layer, "strength": strength, "trials": num, "stop": stop}
        )
    return {
        "settings": {"first_round": plan.sweep.trials, **plan.adaptive.__dict__},
        "best_by": "lower bound of the 95% Newcombe interval on injection pass − control FP",
        "cells": cells,
    }
