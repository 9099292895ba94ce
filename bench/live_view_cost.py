"""What the live view costs the run loop, in CPU time: one 150×45 draw of a 100,000-trial run,
and the pass-rate grid's bookkeeping (placing every trial at start, one update per judgement).

    python bench/live_view_cost.py [--trials 100000] [--draws 200]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from introspectd.app.live_figures import Header
from introspectd.app.live_view import LiveView
from introspectd.protocol.plan import JudgeConfig
from introspectd.run.stats import RecentAnswer, RunStats

CONCEPTS, LAYERS, STRENGTHS = 50, 12, 8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=100_000)
    p.add_argument("--draws", type=int, default=200)
    args = p.parse_args()
    stats = RunStats()
    cells = [(layer, float(s)) for layer in range(LAYERS) for s in range(1, STRENGTHS + 1)]
    ids = [f"20261202_021000_c{n % CONCEPTS}_injected_L{n}_S1.0_t{n}" for n in range(args.trials)]
    tracemalloc.start()  # memory from one filling, time from another (tracemalloc slows it)
    measured = RunStats()
    for n, trial_id in enumerate(ids):
        measured.grid.place(trial_id, *cells[n % len(cells)])
    grid_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del measured
    start = time.process_time()
    for n, trial_id in enumerate(ids):
        stats.grid.place(trial_id, *cells[n % len(cells)])
    place_s = time.process_time() - start
    start = time.process_time()
    for n, trial_id in enumerate(ids):
        stats.grid.add(trial_id, True, {"answer": "pass" if n % 3 else "fail"})
    add_s = time.process_time() - start
    for c in range(CONCEPTS):
        stats.by_concept_total[f"concept{c}"] = args.trials // CONCEPTS
        stats.by_concept_done[f"concept{c}"] = (c * 97) % (args.trials // CONCEPTS)
    stats.num_selected = args.trials
    for n in range(5):
        stats.recent.append(RecentAnswer("ocean", n % 2 == 0, "pass", "an answer " * 30, "ocean"))
    header = Header("20261202_021000", "Qwen/Qwen2.5-7B-Instruct", "cuda", "/out", "gs://b/p")
    console = Console(width=150, height=45, file=io.StringIO(), force_terminal=True)
    view = LiveView(header, stats, JudgeConfig())
    start = time.process_time()
    for _ in range(args.draws):
        console.print(view)
    draw_ms = (time.process_time() - start) / args.draws * 1000
    print(
        f"{args.trials:,} trials, {CONCEPTS} concepts, {LAYERS}×{STRENGTHS} cells: "
        f"grid place {place_s * 1e3:.0f} ms ({grid_bytes / 1e6:.1f} MB), "
        f"grid update {add_s / args.trials * 1e6:.2f} µs/judgement, "
        f"one 150×45 draw {draw_ms:.1f} ms"
    )


if __name__ == "__main__":
    main()
