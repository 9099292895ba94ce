"""The live view: drawn by the real CLI into a real pseudo-terminal read back through a VT100
emulator (pyte), plus its parts — the pass-rate grid, the sanitising of answers, and the
layout at every terminal size."""

from __future__ import annotations

import itertools
import os
import sys
import threading
from pathlib import Path

import pytest
from helpers import REPO, TINY_PLAN, write_plan
from judge_server import GOOD_RESULT, Action, JudgeServer, Recorded, ok, rate_limited
from rich.console import Console
from terminal import Terminal

from introspectd.app.live_figures import (
    ConceptRates,
    Header,
    failures_in_words,
    judge_figures,
    reason_words,
    spend_figure,
)
from introspectd.app.live_view import LiveView
from introspectd.protocol.plan import JudgeConfig
from introspectd.run.pass_grid import PassGrid
from introspectd.run.stats import RecentAnswer, RunStats
from introspectd.text import REPLACEMENT, printable

HEADER_MARK = "introspectd  run "
# The judge names the concept with a colour escape, a bell and a carriage return in it.
NASTY_CONCEPT = "ocean\x1b[31mred\x07bell\x1b]0;title\x07x"
SHOWN_CONCEPT = f"oceanred{REPLACEMENT}bellx"


def _judge_with_429s() -> JudgeServer:
    """Every 12th request is rate limited; the rest name NASTY_CONCEPT."""
    counter = itertools.count()
    lock = threading.Lock()

    def respond(_: Recorded) -> Action:
        with lock:
            n = next(counter)
        if n % 12 == 5:
            return rate_limited(retry_after_s=0.05)
        return ok({**GOOD_RESULT, "detected_concept": NASTY_CONCEPT}, delay_s=0.15)

    return JudgeServer(responder=respond)


def _plan(tmp_path: Path, server: JudgeServer) -> Path:
    body = TINY_PLAN.replace("trials = 2", "trials = 4")  # 64 trials
    return write_plan(
        tmp_path,
        body
        + f"""
[judge]
base_url = "{server.base_url}"
api_key_env = "TEST_JUDGE_KEY"
prompt_version = "v1"  # the scripted concept carries control characters: v2 would map it to "other"
concurrency = 2
max_attempts = 4
backoff_s = 0.01
timeout_s = 10
""",
    )


def _terminal_env() -> dict[str, str]:
    env = {**os.environ, "TEST_JUDGE_KEY": "k", "TERM": "xterm-256color"}
    for name in ("COLUMNS", "LINES", "NO_COLOR", "TERM_PROGRAM", "INTROSPECTD_LOG_EVERY_S"):
        env.pop(name, None)  # rich would take a size from COLUMNS/LINES instead of the pty's
    return env


def _count(lines: list[str], mark: str) -> int:
    return sum(mark in line for line in lines)


def _section(lines: list[str], title: str) -> list[str]:
    """The lines under a rule titled `title`, up to the next rule."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title + " ─"))
    rest = lines[start + 1 :]
    end = next((i for i, line in enumerate(rest) if "──────" in line), len(rest))
    return rest[:end]


def test_one_copy_of_the_view_through_refreshes_and_resizes(tmp_path: Path) -> None:
    with _judge_with_429s() as server:
        argv = [
            sys.executable,
            "-m",
            "introspectd.cli",
            "run",
            "--plan",
            str(_plan(tmp_path, server)),
        ]
        term = Terminal([*argv, "--local"], 150, 45, _terminal_env(), REPO)
        sizes = iter([(70, 14), (120, 40)])  # small (sections truncate), then large again
        num_draws_seen = 0
        num_resizes = 0
        try:
            while term.pump(0.1):
                lines = term.lines()
                # Never two copies, whenever we look (a draw half written shows one or none).
                assert _count(lines, HEADER_MARK) <= 1, term.text()
                assert _count(lines, "figures ─") <= 1, term.text()
                if _count(lines, "last answers ─"):
                    num_draws_seen += 1
                    if num_draws_seen % 8 == 0 and (size := next(sizes, None)):
                        term.resize(*size)
                        num_resizes += 1
            code = term.finish()
        finally:
            term.close()
    lines = term.lines()
    assert code == 0, term.text()
    assert num_resizes == 2, f"the run ended before both resizes:\n{term.text()}"
    assert _count(lines, HEADER_MARK) == 1, term.text()
    assert _count(lines, "figures ─") == 1, term.text()
    assert sum(line.startswith("all ") for line in lines) == 1, term.text()
    assert "done: 64/64 trials" in term.text()

    figures = _section(lines, "figures")
    text = "\n".join(figures)
    for repr_bit in ("{}", "True", "False", "=", "_by_", "None"):
        assert repr_bit not in text, text
    assert "trials/s" in text and "tokens/s" in text and "batch 8" in text
    judge = next(line for line in figures if line.startswith("judge"))
    num_429 = int(judge.split(" × 429")[0].rsplit("·", 1)[1].strip())
    assert num_429 == sum(s == 429 for s in server.statuses()) > 0, judge
    assert "64 judged" in judge

    answers = [a for a in _section(lines, "last answers") if a and not a.startswith("done:")]
    assert answers and all(SHOWN_CONCEPT in line for line in answers), "\n".join(answers)
    assert "[31m" not in term.text() and "]0;" not in term.text()

    # The grid filled in: every judged injection trial passed (the judge said "pass").
    grid = _section(lines, "injection pass rate, layer × strength (32 judged)")
    assert grid[0].split() == ["layer", "×2", "×4"]
    assert [row.split() for row in grid[1:]] == [["L1", "100%", "100%"], ["L3", "100%", "100%"]]


# --- the parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain answer", "plain answer"),
        ("two\nlines\r\nand\ttabs", "two lines and tabs"),
        ("red \x1b[31;1mtext\x1b[0m here", "red text here"),
        ("title \x1b]0;pwned\x07 after", "title after"),
        ("bell\x07 bs\x08 nul\x00", f"bell{REPLACEMENT} bs{REPLACEMENT} nul{REPLACEMENT}"),
        ("c1 \x9b2J csi \x90 dcs \x85 nel", f"c1 csi {REPLACEMENT} dcs nel"),
        ("rtl \u202eevil\u202c", f"rtl {REPLACEMENT}evil{REPLACEMENT}"),
        ("lone \ud800 surrogate", f"lone {REPLACEMENT} surrogate"),
        ("wide 海 and é stay", "wide 海 and é stay"),
        ("\x1b[2J\x1b[H", ""),
    ],
)
def test_printable_replaces_every_unprintable(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert all(ch.isprintable() for ch in printable(raw))


def test_failures_are_worded() -> None:
    assert failures_in_words({}, 0) == "none"
    words = failures_in_words({"timeout": 1, "rate_limited": 3, "http_503": 2}, 7)
    assert words == "7: 3 rate limited, 2 HTTP 503, 1 timed out, 1 other"
    assert reason_words("judge process") == "judge process died"


def test_spend_shows_only_with_prices() -> None:
    assert spend_figure(JudgeConfig(), 1.5, 0.0) is None
    priced = JudgeConfig(price_in_per_mtok=0.25, price_out_per_mtok=2.0)
    assert spend_figure(priced, 1.5, 0.0) == "spend $1.50"
    capped = JudgeConfig(price_in_per_mtok=0.25, price_out_per_mtok=2.0, budget_usd=10.0)
    assert spend_figure(capped, 1.5, 10.0) == "spend $1.50 of $10.00 budget"


def test_grid_counts_injected_judgements_per_cell() -> None:
    grid = PassGrid()
    for trial_id, layer, strength in [("a", 1, 2.0), ("b", 1, 2.0), ("c", 3, 4.0), ("d", 3, 2.0)]:
        grid.place(trial_id, layer, strength)
    grid.add("a", True, {"answer": "pass"})
    grid.add("b", True, {"answer": " FAIL "})
    grid.add("c", True, {"answer": "Pass"})
    grid.add("d", False, {"answer": "pass"})  # control: not an injection pass
    grid.add("a", True, None)  # a failed judgement counts nowhere
    grid.add("unknown", True, {"answer": "pass"})  # not placed: ignored
    assert (grid.layers, grid.strengths) == ([1, 3], [2.0, 4.0])
    assert grid.counts(1, 2.0).pass_rate == 0.5
    assert grid.counts(3, 4.0).pass_rate == 1.0
    assert grid.counts(3, 2.0).pass_rate is None
    assert grid.counts(1, 4.0).pass_rate is None  # not in the plan at all
    assert grid.num_judged == 3


def test_run_stats_feed_the_grid_and_the_answers() -> None:
    stats = RunStats()
    stats.grid.place("t1", 2, 8.0)
    stats.on_judged("fear", True, {"answer": "pass", "detected_concept": "fear"}, None, "yes", "t1")
    stats.on_judged("fear", True, None, "timeout after 5 s", "no", "t1")
    assert stats.grid.counts(2, 8.0).num_passed == 1
    assert [(r.verdict, r.detected) for r in stats.recent] == [("pass", "fear"), ("unjudged", None)]


def test_concept_eta_is_each_concepts_own_rate() -> None:
    stats = RunStats()
    stats.by_concept_total.update({"fast": 100, "slow": 100, "done": 10})
    stats.by_concept_done.update({"fast": 0, "slow": 0, "done": 10})
    rates = ConceptRates(window_s=30)
    rates.observe(stats, now=0.0)
    assert rates.eta_s(stats, "fast") is None  # one sample: no rate yet
    stats.by_concept_done.update({"fast": 20, "slow": 2})  # in 10 s: 2/s and 0.2/s
    rates.observe(stats, now=10.0)
    assert rates.eta_s(stats, "fast") == pytest.approx(80 / 2.0)
    assert rates.eta_s(stats, "slow") == pytest.approx(98 / 0.2)
    assert rates.eta_s(stats, "done") == 0.0
    stats.num_selected, stats.num_done_before = 210, 32  # the run: 22 done in 10 s, 178 left
    assert rates.eta_s(stats, None) == pytest.approx(178 / 2.2)
    rates.observe(stats, now=100.0)  # nothing finished for 90 s: the old samples age out
    assert rates.eta_s(stats, "fast") is None


def _busy_stats(num_concepts: int, num_layers: int, num_strengths: int) -> RunStats:
    stats = RunStats()
    for c in range(num_concepts):
        stats.by_concept_total[f"concept{c}"] = 10
        stats.by_concept_done[f"concept{c}"] = c % 11
    stats.num_selected = 10 * num_concepts
    for layer, strength in itertools.product(range(num_layers), range(1, num_strengths + 1)):
        stats.grid.place(f"{layer}-{strength}", layer, float(strength))
        stats.grid.add(f"{layer}-{strength}", True, {"answer": "pass" if layer % 2 else "fail"})
    for n in range(5):
        stats.recent.append(RecentAnswer("ocean", n % 2 == 0, "pass", "a long answer " * 20))
    return stats


@pytest.mark.parametrize("size", [(150, 45), (80, 24), (60, 12), (40, 6), (20, 3), (200, 60)])
@pytest.mark.parametrize("shape", [(2, 2, 2), (40, 12, 9)])
def test_view_fits_any_terminal(size: tuple[int, int], shape: tuple[int, int, int]) -> None:
    """Never taller than the terminal less one row (so a draw never scrolls), never wider."""
    width, height = size
    console = Console(width=width, height=height, force_terminal=True, record=True)
    header = Header("20261202_021000", "builtin:tiny", "auto", "/tmp/out", "gs://b/p")
    console.print(LiveView(header, _busy_stats(*shape), JudgeConfig()), end="")
    lines = console.export_text(styles=False).split("\n")
    assert len(lines) <= max(1, height - 1)
    assert all(len(line) <= width for line in lines)
    assert HEADER_MARK.strip() in lines[0]


def test_the_judge_figures_say_when_the_limit_sits_far_below_concurrency() -> None:
    """Issue 22 item 9: a burst of 429s drove the limit to the floor; the view says so, and
    why, on a line of its own (a healthy limiter adds no such line)."""
    import anyio
    from test_judge_limiter import fill, grow_to

    from introspectd.judge.client import Judge
    from introspectd.judge.grader import InProcessGrader
    from introspectd.judge.limiter import AdaptiveLimiter, Signal

    async def main() -> tuple[list[list[str]], list[list[str]]]:
        limiter = AdaptiveLimiter(16)
        cfg = JudgeConfig(concurrency=16, base_url="http://127.0.0.1:9/v1")
        async with Judge(cfg, None, limiter=limiter) as judge:
            stats = RunStats()
            stats.judge = InProcessGrader(judge)
            await grow_to(limiter, 16)
            healthy = judge_figures(stats, cfg)
            for _ in range(40):
                for t in await fill(limiter):
                    limiter.release(t, Signal.RATE_LIMITED)
            await anyio.sleep(0.01)
            return healthy, judge_figures(stats, cfg)

    healthy, low = anyio.run(main)
    assert len(healthy) == 2
    assert low[0][0].startswith("0 in flight / limit 1 (max 16)")
    assert low[2][0].startswith("SLOW: limit 1 of 16 for 0 s: bursts of 429s (")
    assert low[2][0].endswith("[judge] min_concurrency sets a floor")
