"""Does an adaptive sweep pay? A simulation with no model and no judge.

Each repeat draws a synthetic layer × strength surface shaped like the seed's published one
(near zero at early layers and weak strengths, a ridge around 2/3 depth, pass rate and coherence
collapsing at high strength), then runs the real decision code
(`introspectd.run.round_decisions.decide`, the function the run calls) against Bernoulli
outcomes drawn from it, round by round.

It reports, over the repeats:
* trials spent by the adaptive sweep (injection + control, the whole grid) against the trials a
  fixed grid needs to give the *frontier cells* the same 95% half-width — frontier cells being the
  coherent cells whose true injection rate is within 10 points of the best cell's (the cells a
  "best cell" claim rests on) — and the half-width the seed's fixed 40-trial grid gives them;
* how often the cell picked as best (highest lower bound of the Newcombe interval on
  injection − control FP) is the true best, over repeats where it leads the next by ≥ 10 points;
* the mean error of the confirmation rate (fresh trials on the picked cell) against its true
  rate, beside the exploration rate's error on the same cell (the winner's curse).

    python bench/adaptive_sim.py --repeats 1000
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from introspectd.protocol.intervals import wilson_interval
from introspectd.protocol.plan import AdaptiveConfig
from introspectd.run.round_decisions import (
    CellCounts,
    StopReason,
    decide,
    halfwidth,
    net_lower_bound,
)

DEPTHS = (1 / 6, 1 / 3, 1 / 2, 2 / 3, 5 / 6, 0.93)  # the seed's default layer points
STRENGTHS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
CONTROL_FP = 0.02
FIXED_TRIALS = 40
LEAD = 0.10  # "the true best leads the next by ≥ 10 points"


@dataclass(frozen=True)
class Surface:
    inj: np.ndarray  # [cells] true injection pass rate
    coherent: np.ndarray  # [cells] true coherent-answer rate on injection trials


def draw_surface(rng: np.random.Generator) -> Surface:
    """A ridge at ~2/3 depth, rising with strength, collapsing (with coherence) past ~3."""
    peak = rng.uniform(0.55, 0.95)
    centre = rng.uniform(0.6, 0.72)
    width = rng.uniform(0.1, 0.16)
    rise_mid = rng.uniform(1.6, 2.3)
    collapse = rng.uniform(2.9, 3.5)
    depth = np.array(DEPTHS)[:, None]
    strength = np.array(STRENGTHS)[None, :]
    ridge = np.exp(-(((depth - centre) / width) ** 2))
    rise = 1 / (1 + np.exp(-(strength - rise_mid) / 0.3))
    coherent = 1 / (1 + np.exp((strength - collapse) / 0.25)) * np.ones_like(depth)
    inj = np.clip(peak * ridge * rise * coherent + 0.005, 0, 1)
    return Surface(inj.ravel(), coherent.ravel())


def run_adaptive(
    settings: AdaptiveConfig, first_round: int, surface: Surface, rng: np.random.Generator
) -> tuple[np.ndarray, list[CellCounts], dict[int, StopReason]]:
    """One adaptive sweep; returns trial indices per cell, final counts and stop reasons."""
    num_cells, cap = len(surface.inj), settings.max_trials_per_cell
    inj = rng.random((num_cells, cap)) < surface.inj[:, None]
    ctl = rng.random((num_cells, cap)) < CONTROL_FP
    coh = rng.random((num_cells, cap)) < surface.coherent[:, None]
    inj_c, ctl_c, coh_c = (np.cumsum(a, axis=1) for a in (inj, ctl, coh))
    num = np.full(num_cells, first_round)
    stopped: dict[int, StopReason] = {}
    while True:
        counts = {
            i: CellCounts(
                int(n),
                int(inj_c[i, n - 1]),
                int(n),
                int(ctl_c[i, n - 1]),
                int(n),
                int(coh_c[i, n - 1]),
            )
            for i, n in enumerate(num)
        }
        decisions = decide(settings, counts, stopped)
        for i, d in decisions.items():
            if d.stop is not None:
                stopped.setdefault(i, d.stop)
            num[i] += d.num_next
        if len(stopped) == num_cells:
            return num, [counts[i] for i in range(num_cells)], stopped


def fixed_trials_for(halfwidth_target: float, rates: np.ndarray) -> int:
    """Trials per cell a fixed grid needs for every one of `rates` to reach the half-width
    (expected counts)."""
    n = 1
    while any(halfwidth(round(p * n), n) > halfwidth_target for p in rates):
        n += max(1, n // 50)
    return n


def simulate(repeats: int, seed: int, settings: AdaptiveConfig, first_round: int) -> dict:
    rng = np.random.default_rng(seed)
    adaptive_trials, fixed_trials, fixed40_hw = [], [], []
    frontier_hw_ok, picks_ok, num_clear = [], [], 0
    fixed_same_achieved, frontier_reasons = [], Counter[str]()
    confirm_err, explore_err = [], []
    for _ in range(repeats):
        surface = draw_surface(rng)
        num, counts, stopped = run_adaptive(settings, first_round, surface, rng)
        best_true = float(surface.inj.max())
        frontier = (surface.inj >= best_true - 0.10) & (surface.coherent >= settings.min_coherent)
        adaptive_trials.append(2 * int(num.sum()))  # injection + control per index
        n_fixed = fixed_trials_for(settings.target_halfwidth, surface.inj[frontier])
        fixed_trials.append(2 * n_fixed * len(num))
        fixed40_hw.append(
            max(halfwidth(round(p * FIXED_TRIALS), FIXED_TRIALS) for p in surface.inj[frontier])
        )
        achieved = [
            halfwidth(counts[i].inj_pass, counts[i].inj_n) for i in np.flatnonzero(frontier)
        ]
        frontier_hw_ok.append(max(achieved) <= settings.target_halfwidth)
        frontier_reasons.update(str(stopped[i]) for i in np.flatnonzero(frontier))
        # Conservative: a fixed grid sized to the worst half-width adaptive left a frontier cell.
        n_same = fixed_trials_for(max(achieved), surface.inj[frontier])
        fixed_same_achieved.append(2 * n_same * len(num))
        ranked = sorted(range(len(num)), key=lambda i: net_lower_bound(counts[i]), reverse=True)
        picked = ranked[0]
        order = np.sort(surface.inj)[::-1]
        if order[0] - order[1] >= LEAD:
            num_clear += 1
            picks_ok.append(picked == int(np.argmax(surface.inj)))
        fresh = rng.random(settings.confirm_trials) < surface.inj[picked]
        confirm_err.append(float(fresh.mean()) - float(surface.inj[picked]))
        explore_err.append(
            counts[picked].inj_pass / counts[picked].inj_n - float(surface.inj[picked])
        )
    mean_adaptive, mean_fixed = float(np.mean(adaptive_trials)), float(np.mean(fixed_trials))
    ce = np.array(confirm_err)
    return {
        "repeats": repeats,
        "settings": {"first_round": first_round, **settings.__dict__},
        "adaptive_trials_mean": mean_adaptive,
        "fixed_trials_same_halfwidth_mean": mean_fixed,
        "trial_ratio_fixed_over_adaptive": mean_fixed / mean_adaptive,
        "fixed_trials_same_achieved_halfwidth_mean": float(np.mean(fixed_same_achieved)),
        "trial_ratio_conservative": float(np.mean(fixed_same_achieved)) / mean_adaptive,
        "frontier_stop_reasons": dict(frontier_reasons),
        "fixed40_trials": 2 * FIXED_TRIALS * len(DEPTHS) * len(STRENGTHS),
        "fixed40_frontier_halfwidth_mean": float(np.mean(fixed40_hw)),
        "frontier_reached_target_frac": float(np.mean(frontier_hw_ok)),
        "repeats_with_lead_ge_10pts": num_clear,
        "best_cell_picked_frac": float(np.mean(picks_ok)) if picks_ok else math.nan,
        "confirmation_mean_error_pts": 100 * float(ce.mean()),
        "confirmation_mean_error_95ci_pts": [
            100 * float(ce.mean() - 1.96 * ce.std(ddof=1) / math.sqrt(len(ce))),
            100 * float(ce.mean() + 1.96 * ce.std(ddof=1) / math.sqrt(len(ce))),
        ],
        "exploration_mean_error_pts": 100 * float(np.mean(explore_err)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-round", type=int, default=20)
    parser.add_argument("--target-halfwidth", type=float, default=0.05)
    parser.add_argument("--max-trials", type=int, default=500)
    parser.add_argument("--round-trials", type=int, default=20)
    parser.add_argument("--confirm-trials", type=int, default=200)
    args = parser.parse_args()
    settings = AdaptiveConfig(
        enabled=True,
        target_halfwidth=args.target_halfwidth,
        max_trials_per_cell=args.max_trials,
        round_trials=args.round_trials,
        min_coherent=0.5,
        confirm_top=1,
        confirm_trials=args.confirm_trials,
    )
    started = time.perf_counter()
    result = simulate(args.repeats, args.seed, settings, args.first_round)
    result["seconds"] = round(time.perf_counter() - started, 1)
    assert wilson_interval(0, 1) is not None  # the interval math is the package's own
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
