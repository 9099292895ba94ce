"""The rich live view of a run: ONE renderable, drawn by ONE `rich.live.Live`.

Why the view stays a single copy on screen:
- everything is one renderable (no `rich.progress.Progress` printing its own lines);
- the renderable sizes itself to the terminal at each draw (sections shrink in priority order
  and a final crop caps it at height - 1 lines), so the terminal never scrolls the live region,
  which would strand a copy above it;
- log lines (and the judge child's stderr) are printed through the Live's console, above the
  view, instead of being written to the terminal behind its back;
- after a resize the screen is cleared once before the next draw: a terminal reflows the old
  view's lines, and the Live could no longer tell how many rows to move up over.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.control import Control
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.rule import Rule
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from introspectd.app.live_figures import (
    ConceptRates,
    Header,
    duration,
    generation_figures,
    judge_figures,
    snapshot_figure,
)
from introspectd.run.pass_grid import PassGrid
from introspectd.run.stats import RunStats
from introspectd.text import printable

# The engine ticks 4 times a second; a full draw of a large run costs ~10-60 ms of Python
# that the decode thread waits for (one GIL), so the view redraws at most twice a second.
DRAW_EVERY_S = 0.5
_SEP = " · "
_CELL_WIDTH = 9  # "100% (40)": a grid cell's pass rate and its number of judged trials
_CONCEPT_CELLS = 12  # last answers' fixed columns
_NAMED_CELLS = 18


class LiveView:
    """The whole view for one draw; lays itself out for the size it is drawn at."""

    def __init__(
        self,
        header: Header,
        stats: RunStats,
        judge_cfg: Any,
        rates: ConceptRates | None = None,
    ) -> None:
        self.header = header
        self.stats = stats
        self.judge_cfg = judge_cfg
        self.rates = rates or ConceptRates()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.size.height
        budget = max(1, height - 1)  # the last row stays free: a draw never scrolls the screen
        width = options.max_width
        group = Group(*self.sections(width, budget))
        lines = console.render_lines(group, options.update(height=None), pad=False)
        for number, line in enumerate(lines[:budget]):
            if number:
                yield Segment.line()
            yield from line

    def sections(self, width: int, budget: int) -> list[RenderableType]:
        """The sections that fit in `budget` lines: space goes to the header, the overall bar
        and the figures first, then concepts, the grid and the answers; drawn top to bottom."""
        stats, grid = self.stats, self.stats.grid
        header, figures = self.header_lines(), self.figure_lines()
        elapsed = f"progress · {duration(stats.elapsed_s())} elapsed"
        overall: list[RenderableType] = [_rule(elapsed), self.progress_rows(["all"], width)]
        left = budget
        sizes: dict[str, int] = {}
        num_concepts = len(stats.by_concept_total)
        grid_lines = 2 + len(grid.layers) if grid.cells else 0
        answer_lines = 1 + len(stats.recent) if stats.recent else 0
        # Concepts leave room for the grid and the answers, unless only 3 or fewer would show.
        concept_lines = max(min(num_concepts, 3), budget - 9 - grid_lines - answer_lines)
        for name, wanted, least in (
            ("header", len(header), 1),
            ("overall", len(overall), 1),
            ("figures", len(figures), 2),
            ("concepts", min(num_concepts, concept_lines), 1),
            ("grid", grid_lines, 3),
            ("answers", answer_lines, 2),
        ):
            sizes[name] = min(wanted, left) if min(wanted, left) >= least else 0
            left -= sizes[name]
        out: list[RenderableType] = [*header[: sizes["header"]], *overall[: sizes["overall"]]]
        if sizes["concepts"]:
            names = list(stats.by_concept_total)
            out.append(self.progress_rows(names, width, max_rows=sizes["concepts"]))
        out.extend(figures[: sizes["figures"]])
        if sizes["grid"]:
            out += [self.grid_title(grid), self.grid_table(grid, width, sizes["grid"] - 2)]
        if sizes["answers"]:
            answers = list(stats.recent)[-(sizes["answers"] - 1) :]
            out += [_rule("last answers"), *(answer_line(r, width) for r in answers)]
        return out

    def header_lines(self) -> list[RenderableType]:
        fields = self.header.fields(self.stats)
        lines: list[RenderableType] = []
        for start, part in (
            (Text.assemble(("introspectd  ", "bold cyan")), fields[:4]),
            (Text(), fields[4:]),
        ):
            for number, (name, value) in enumerate(part):
                if number:
                    start.append(_SEP, style="dim")
                start.append(f"{name} ", style="dim")
                start.append(value, style="bold" if name == "run" else "")
            start.no_wrap = True
            start.overflow = "ellipsis"
            lines.append(start)
        return lines

    def progress_rows(self, names: list[str], width: int, max_rows: int | None = None) -> Table:
        """One bar per name ("all" is the whole run); past `max_rows`, unfinished concepts
        first, and one row for the rest together: their trials, and how many are finished."""
        stats = self.stats
        groups: list[tuple[str, list[str] | None]] = [("all", None)]
        if names != ["all"]:
            total, done = stats.by_concept_total, stats.by_concept_done
            shown = names
            if max_rows is not None and len(names) > max_rows:
                # Unfinished first, then finished ones fill the rows left: the last concept
                # running keeps the same number of rows as the first did.
                unfinished = [c for c in names if done[c] < total[c]]
                finished = [c for c in names if c not in set(unfinished)]
                shown = (unfinished + finished)[: max(0, max_rows - 1)]
            groups = [(c, [c]) for c in shown]
            hidden = [c for c in names if c not in set(shown)]
            if hidden:
                groups.append((_folded_label(len(hidden)), hidden))
        rows = [(label, *self._counts(group)) for label, group in groups]
        table = Table.grid(padding=(0, 1))
        for column in ("name", "bar", "count", "pct", "eta"):
            table.add_column(column, no_wrap=True, overflow="ellipsis")
        bar_width = max(5, min(40, width - 52))
        for name, total_n, done_n, eta in rows:
            table.add_row(
                Text(printable(name)[:16].ljust(16), style="bold" if name == "all" else ""),
                ProgressBar(total=max(total_n, 1), completed=done_n, width=bar_width),
                f"{done_n:>7,}/{total_n:,}",
                f"{100 * done_n / total_n if total_n else 100:5.1f} %",
                "done" if done_n >= total_n else f"ETA {duration(eta)}",
            )
        return table

    def _counts(self, concepts: list[str] | None) -> tuple[int, int, float | None]:
        """(trials, finished, ETA) of these concepts; None: the whole run."""
        stats = self.stats
        if concepts is None:
            total, done = stats.num_selected, stats.num_done
        else:
            total = sum(stats.by_concept_total[c] for c in concepts)
            done = sum(stats.by_concept_done[c] for c in concepts)
        return total, done, self.rates.eta_s(stats, concepts)

    def figure_lines(self) -> list[RenderableType]:
        rows: list[tuple[str, list[str]]] = [("generation", generation_figures(self.stats))]
        for number, line in enumerate(judge_figures(self.stats, self.judge_cfg)):
            rows.append(("judge" if number == 0 else "", line))
        rows.append(("snapshot", [snapshot_figure(self.stats)]))
        lines: list[RenderableType] = [_rule("figures")]
        for label, parts in rows:
            text = Text.assemble((f"{label:<11}", "bold"), _SEP.join(parts))
            text.no_wrap = True
            text.overflow = "ellipsis"
            lines.append(text)
        return lines

    def grid_title(self, grid: PassGrid) -> Rule:
        return _rule(
            f"injection pass rate (n judged), layer × strength · {grid.num_judged:,} judged"
        )

    def grid_table(self, grid: PassGrid, width: int, num_rows: int) -> Table:
        layers, strengths = grid.layers, grid.strengths
        max_columns = max(1, (width - 6) // (_CELL_WIDTH + 1))
        more_strengths = len(strengths) > max_columns
        strengths = strengths[: max_columns - 1] if more_strengths else strengths
        table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False)
        table.add_column("layer", justify="right", no_wrap=True, style="dim")
        for strength in strengths:
            table.add_column(f"×{strength:g}", justify="right", no_wrap=True, min_width=_CELL_WIDTH)
        if more_strengths:
            table.add_column("…", no_wrap=True)
        shown = layers if len(layers) <= num_rows else layers[: max(0, num_rows - 1)]
        for layer in shown:
            cells = [_rate_cell(grid, layer, s) for s in strengths]
            table.add_row(f"L{layer}", *cells, *([""] if more_strengths else []))
        if len(shown) < len(layers):
            table.add_row(f"+{len(layers) - len(shown)}", *["…" for _ in strengths])
        return table


def answer_line(answer: Any, width: int) -> Text:
    """One judged answer: concept, arm, verdict and the concept the judge heard, each in a
    column of fixed width, then the answer in what is left. Only the answer shrinks, so the
    columns stay put from frame to frame (a table sized to its contents let the arm and the
    verdict go first at 80 columns, and moved every column as the answers changed)."""
    verdict = printable(answer.verdict)
    named = printable(answer.detected) if answer.detected else "–"
    line = Text(no_wrap=True, overflow="ellipsis")
    for words, cells, style in (
        (printable(answer.concept), _CONCEPT_CELLS, ""),
        ("inj" if answer.is_injected else "ctl", 3, ""),
        (verdict, 8, {"pass": "green", "fail": "yellow"}.get(verdict, "red")),
        (f"named {named}", _NAMED_CELLS, "dim"),
    ):
        cell = Text(words, style=style)
        cell.truncate(cells, overflow="ellipsis", pad=True)
        line.append_text(cell)
        line.append(" ")
    text = Text(printable(answer.text[:400]))
    text.truncate(max(1, width - line.cell_len), overflow="ellipsis")
    line.append_text(text)
    return line


def _folded_label(num_concepts: int) -> str:
    label = f"{num_concepts} more concepts"
    return label if len(label) <= 16 else f"+{num_concepts} concepts"


def _rule(title: str) -> Rule:
    return Rule(Text(title, style="bold"), align="left", style="dim")


def _rate_cell(grid: PassGrid, layer: int, strength: float) -> Text:
    counts = grid.counts(layer, strength)
    rate = counts.pass_rate
    if rate is None:
        return Text("·", style="dim")
    style = "bold green" if rate >= 0.5 else "green" if rate >= 0.2 else "yellow" if rate else ""
    return Text(f"{rate:.0%} ({counts.num_judged})", style=style)


class _ConsoleLogs:
    """Points the root logger's terminal handlers at the Live's stderr proxy for its lifetime,
    so a log line is printed above the view instead of over it."""

    def __init__(self) -> None:
        self._swapped: list[tuple[logging.StreamHandler[Any], Any]] = []

    def start(self, proxy: Any, terminal: Any) -> None:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is terminal:
                self._swapped.append((handler, handler.setStream(proxy)))

    def stop(self) -> None:
        for handler, stream in self._swapped:
            handler.setStream(stream)
        self._swapped.clear()


class LiveDisplay:
    """A `Display` (progress.py) on a terminal: one Live, redrawn on each engine tick."""

    def __init__(self, header: Header, judge_cfg: Any, console: Console | None = None) -> None:
        self.stats = RunStats()
        self.header = header
        self.judge_cfg = judge_cfg
        self.console = console or Console(file=sys.stderr)
        self.live = Live(
            console=self.console,
            auto_refresh=False,  # drawn on the engine's tick: no second thread writing
            transient=False,  # the final figures stay on screen after the run
            vertical_overflow="crop",
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._logs = _ConsoleLogs()
        self._size: tuple[int, int] | None = None
        self._last_draw = -DRAW_EVERY_S
        self._rates = ConceptRates()

    def __enter__(self) -> LiveDisplay:
        terminal = sys.stderr
        self.live.start(refresh=False)
        self._logs.start(sys.stderr, terminal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.update(self.stats, is_final=True)
        finally:
            self._logs.stop()
            self.live.stop()

    def update(self, stats: RunStats, is_final: bool = False) -> None:
        size = (self.console.size.width, self.console.size.height)
        now = time.monotonic()
        if not is_final and size == self._size and now - self._last_draw < DRAW_EVERY_S:
            return
        self._last_draw = now
        if self._size is not None and size != self._size:
            # Goes through the Live's hook: up over the old view, then home and clear.
            self.console.print(Control.home(), Control.clear(), end="")
        self._size = size
        self._rates.observe(stats, now)
        self.live.update(LiveView(self.header, stats, self.judge_cfg, self._rates), refresh=True)
