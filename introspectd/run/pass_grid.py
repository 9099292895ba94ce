"""The injection pass rate per (layer, strength) cell, counted as judgements arrive.

The live view draws it several times a second, so it is kept incrementally: one dict update
per judgement, never a scan of the database (a run may hold 100,000 rows). Pure Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Cell = tuple[int, float]  # (layer, strength)


@dataclass
class CellCounts:
    num_judged: int = 0  # injection trials judged in this cell
    num_passed: int = 0  # of which the judge answered "pass"

    @property
    def pass_rate(self) -> float | None:
        return self.num_passed / self.num_judged if self.num_judged else None


def is_pass(result: Mapping[str, Any]) -> bool:
    """The judge's verdict, read as report/metrics.py reads it."""
    return str(result.get("answer", "")).strip().lower() == "pass"


class PassGrid:
    """Cells are placed first (every trial of the run, at its start), then filled by judged
    injection trials; control trials only place their cell, so the grid's shape is the plan's."""

    def __init__(self) -> None:
        self.cells: dict[Cell, CellCounts] = {}
        # trial id -> its cell; the cell tuples are shared, so a trial costs one dict slot.
        self._cell_of: dict[str, Cell] = {}
        self._canonical: dict[Cell, Cell] = {}

    def place(self, trial_id: str, layer: int, strength: float) -> None:
        key = (layer, strength)
        if key not in self.cells:
            self.cells[key] = CellCounts()
            self._canonical[key] = key
        self._cell_of[trial_id] = self._canonical[key]

    def add(self, trial_id: str, is_injected: bool, result: Mapping[str, Any] | None) -> None:
        """Count one judgement; failed judgements (no result) and unknown trials count nowhere."""
        cell = self._cell_of.get(trial_id)
        if cell is None or result is None or not is_injected:
            return
        counts = self.cells[cell]
        counts.num_judged += 1
        counts.num_passed += is_pass(result)

    @property
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.cells})

    @property
    def strengths(self) -> list[float]:
        return sorted({strength for _, strength in self.cells})

    def counts(self, layer: int, strength: float) -> CellCounts:
        return self.cells.get((layer, strength)) or CellCounts()

    @property
    def num_judged(self) -> int:
        return sum(c.num_judged for c in self.cells.values())
