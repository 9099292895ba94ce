"""Adaptive sweeps: after each round, which cells get more trials. Pure: no I/O, no clock.

A *cell* is one (concept, layer, strength). Round 0 is `[sweep] trials` trial indices per cell;
each later round adds up to `round_trials` indices (an injection and a control each) to every
cell still open. After a round is fully judged, `decide` looks at each open cell's judged
results of that round and earlier and either gives it another round or stops it:

1. `dropped_incoherent`: the 95% Wilson interval of its coherent-answer rate (injection trials)
   lies entirely below `min_coherent` — strength has broken the model;
2. `target_reached`: the half-width of its injection pass rate's interval is ≤ target;
3. `dropped_below_best`: that interval lies entirely below the interval of the best cell of
   the same concept (best = highest lower bound among cells not dropped as incoherent);
4. `cap`: it has `max_trials_per_cell` indices already.

The run (app/rounds.py) and the simulation (bench/adaptive_sim.py) both call `decide` and
`replay`; neither has a second copy of these rules. A trial's round follows from its index and
the plan's settings alone (`round_of`), and a round's decision uses only trials of that round
and earlier, so replaying the rounds over the database's judged results after a restart gives
the same decisions whatever was in flight when the process died.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from introspectd.protocol.intervals import Interval, newcombe_interval, wilson_interval
from introspectd.protocol.plan import AdaptiveConfig

K = TypeVar("K", bound=Hashable)
CellKey = tuple[str, int, float]  # (concept, layer, strength)


class StopReason(StrEnum):
    TARGET_REACHED = "target_reached"
    DROPPED_BELOW_BEST = "dropped_below_best"
    DROPPED_INCOHERENT = "dropped_incoherent"
    CAP = "cap"


@dataclass(frozen=True)
class CellCounts:
    """One cell's judged results over the rounds so far (judge failures count nowhere)."""

    num_issued: int  # trial indices issued to the cell (each an injection and a control)
    inj_pass: int = 0
    inj_n: int = 0
    ctl_fp: int = 0
    ctl_n: int = 0
    coherent: int = 0  # judged injection trials whose answer was coherent


@dataclass(frozen=True)
class Decision:
    num_next: int  # trial indices the next round adds; 0 once stopped
    stop: StopReason | None  # why it stopped (this round or earlier); None while open


def round_of(settings: AdaptiveConfig, first_round: int, trial_index: int) -> int:
    """The round a trial index belongs to."""
    if trial_index < first_round:
        return 0
    return 1 + (trial_index - first_round) // settings.round_trials


def halfwidth(k: int, n: int) -> float:
    ci = wilson_interval(k, n)
    return 1.0 if ci is None else (ci[1] - ci[0]) / 2


def injection_interval(cell: CellCounts) -> Interval:
    return wilson_interval(cell.inj_pass, cell.inj_n) or (0.0, 1.0)


def net_lower_bound(cell: CellCounts) -> float:
    """How cells are ranked as "best": the lower bound of the 95% Newcombe interval on
    injection pass rate − control false-positive rate; −1 with no data."""
    ci = newcombe_interval(cell.inj_pass, cell.inj_n, cell.ctl_fp, cell.ctl_n)
    return -1.0 if ci is None else ci[0]


def _is_incoherent(settings: AdaptiveConfig, cell: CellCounts) -> bool:
    ci = wilson_interval(cell.coherent, cell.inj_n)
    return settings.min_coherent > 0 and ci is not None and ci[1] < settings.min_coherent


def decide(
    settings: AdaptiveConfig,
    cells: Mapping[K, CellCounts],
    stopped: Mapping[K, StopReason],
    group_of: Callable[[K], Hashable] = lambda key: 0,
) -> dict[K, Decision]:
    """Every cell's decision after a round. `stopped`: cells stopped in earlier rounds (they
    stay stopped); `group_of`: the cells one "best" is chosen among (the run: the concept)."""
    best_lower: dict[Hashable, float] = {}
    for key, cell in cells.items():
        if stopped.get(key) is StopReason.DROPPED_INCOHERENT or _is_incoherent(settings, cell):
            continue
        group = group_of(key)
        best_lower[group] = max(best_lower.get(group, 0.0), injection_interval(cell)[0])
    out: dict[K, Decision] = {}
    for key, cell in cells.items():
        reason = stopped.get(key) or _stop_reason(
            settings, cell, best_lower.get(group_of(key), 0.0)
        )
        if reason is not None:
            out[key] = Decision(0, reason)
        else:
            room = settings.max_trials_per_cell - cell.num_issued
            out[key] = Decision(min(settings.round_trials, room), None)
    return out


def _stop_reason(
    settings: AdaptiveConfig, cell: CellCounts, best_lower: float
) -> StopReason | None:
    if _is_incoherent(settings, cell):
        return StopReason.DROPPED_INCOHERENT
    if cell.inj_n > 0 and halfwidth(cell.inj_pass, cell.inj_n) <= settings.target_halfwidth:
        return StopReason.TARGET_REACHED
    if cell.inj_n > 0 and injection_interval(cell)[1] < best_lower:
        return StopReason.DROPPED_BELOW_BEST
    if cell.num_issued >= settings.max_trials_per_cell:
        return StopReason.CAP
    return None


def certain_next(settings: AdaptiveConfig, cell: CellCounts, max_best_lower: float) -> int:
    """Trial indices the cell's next round surely adds (0: not sure, or it stops), given the
    highest lower bound its group's best cell could still reach. Only the "below the best"
    rule looks at other cells, and it can only fire more often as the best rises, so a cell
    that stays open against that highest bound stays open whatever the others' pending
    answers turn out to be: its next round can start before theirs are judged."""
    if _stop_reason(settings, cell, max_best_lower) is not None:
        return 0
    return min(settings.round_trials, settings.max_trials_per_cell - cell.num_issued)


@dataclass(frozen=True)
class Replay:
    """Where a run stands: decisions of every fully judged round, replayed from round 0."""

    num_rounds_decided: int
    stopped: dict[CellKey, StopReason]
    num_indices: dict[CellKey, int]  # indices each cell should have now (its rounds so far)

    @property
    def is_finished(self) -> bool:
        return len(self.stopped) == len(self.num_indices)


def replay(
    settings: AdaptiveConfig,
    first_round: int,
    cells: list[CellKey],
    counts_through: Callable[[int, Mapping[CellKey, int]], Mapping[CellKey, CellCounts] | None],
) -> Replay:
    """Decide rounds 0, 1, … in order for as long as `counts_through(r, num_indices)` finds
    every cell's indices below `num_indices[cell]` present and their judging ended (else it
    returns None). Pure given that function."""
    stopped: dict[CellKey, StopReason] = {}
    num_indices = {key: first_round for key in cells}
    round_index = 0
    while len(stopped) < len(cells):
        counts = counts_through(round_index, num_indices)
        if counts is None:
            break
        decisions = decide(settings, counts, stopped, group_of=lambda key: key[0])
        for key, decision in decisions.items():
            if decision.stop is not None:
                stopped[key] = decision.stop
            else:
                num_indices[key] += decision.num_next
        round_index += 1
    return Replay(round_index, stopped, num_indices)
