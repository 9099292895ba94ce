"""The live view: drawn by the real CLI into a real pseudo-terminal read back through a VT100
emulator (pyte), plus its parts — the pass-rate grid, the sanitising of answers, and the
layout at every terminal size."""

from __future__ import annotations

import itertools
import os
import re
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
GRID_TITLE = "injection pass rate (n judged), layer × strength"
# The judge names the concept with a colour escape, a bell and a carriage return in it.
NASTY_CONCEPT = "ocean\x1b[31mred\x07bell\x1b]0;title\x07x"
SHOWN_CONCEPT = f"oceanred{REPLACEMENT}bellx"
# Fixed columns of "last answers": concept 0-11, arm 13-15, verdict 17-24, "named …" 26-43.
ARM, VERDICT, NAMED = slice(13, 16), slice(17, 25), slice(26, 32)


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
    assert "64 judged" in judge and "0 waiting" in judge, judge
    counters = next(line for line in figures if " × 429" in line)
    num_429 = int(counters.split(" × 429")[0].rsplit("·", 1)[1].strip())
    assert num_429 == sum(s == 429 for s in server.statuses()) > 0, counters

    # The answers, above the end-of-run summary; the named concept fills its fixed column.
    answers = [a for a in _section(lines, "last answers") if a[ARM] in ("inj", "ctl")]
    shown = f"named {SHOWN_CONCEPT}"[:17] + "…"
    assert answers and all(line[26:44] == shown for line in answers), "\n".join(answers)
    assert "[31m" not in term.text() and "]0;" not in term.text()

    # The grid filled in: every judged injection trial passed (the judge said "pass").
    grid = _section(lines, GRID_TITLE + " · 32 judged")
    assert grid[0].split() == ["layer", "×2", "×4"]
    # 2 concepts × 4 trials: 8 judged injection trials per cell, each shown with its rate.
    cells = ["100%", "(8)", "100%", "(8)"]
    assert [row.split() for row in grid[1:]] == [["L1", *cells], ["L3", *cells]]


FIVE_CONCEPTS = """
[model]
name = "builtin:tiny"

[sweep]
concepts = ["ocean", "fear", "silence", "music", "light"]
layers = [1, 3]
strengths = [2.0, 4.0]
trials = 2
max_new_tokens = 24  # answers longer than 80 columns: the answer column must shrink
batch_size = 8
"""


def _judge_naming_concepts() -> JudgeServer:
    """Every answer passes; the concept it names changes length from answer to answer."""
    named = itertools.cycle(["ocean", "a much longer concept name than most", None, "fear"])
    lock = threading.Lock()

    def respond(_: Recorded) -> Action:
        with lock:
            concept = next(named)
        return ok({**GOOD_RESULT, "detected_concept": concept}, delay_s=0.05)

    return JudgeServer(responder=respond)


def _check_answers(lines: list[str]) -> int:
    """Every answer line has its columns where they always are; how many there were. A line
    shorter than the fixed columns and some answer is one a draw has not finished writing."""
    if not _count(lines, "last answers ─"):
        return 0
    answers = [a for a in _section(lines, "last answers") if len(a) > 46]
    for line in answers:
        assert line[12] == " " and line[ARM] in ("inj", "ctl"), "\n".join(lines)
        assert line[VERDICT].strip() in ("pass", "fail", "unjudged"), "\n".join(lines)
        assert line[NAMED] == "named ", "\n".join(lines)
    return len(answers)


def _check_concept_rows(lines: list[str]) -> None:
    """Concepts at equal progress show equal ETAs; a folded row counts trials, not concepts."""
    start = next(i for i, ln in enumerate(lines) if ln.startswith("progress · "))
    end = next(i for i, ln in enumerate(lines) if ln.startswith("figures ─"))
    rows = [ln for ln in lines[start + 2 : end]]  # below the rule and the "all" row
    by_progress: dict[str, set[str]] = {}
    for row in rows:
        count = re.search(r"(\d+)/(\d+)", row)
        assert count, row
        by_progress.setdefault(count[0], set()).add(row.split("%", 1)[1].strip())
    assert all(len(etas) == 1 for etas in by_progress.values()), "\n".join(rows)
    assert not any("done)" in ln or ln.startswith("…") for ln in rows), "\n".join(rows)


@pytest.mark.parametrize("size", [(80, 24), (150, 45)])
def test_live_figures_at_80_and_150_columns(tmp_path: Path, size: tuple[int, int]) -> None:
    with _judge_naming_concepts() as server:
        plan = write_plan(
            tmp_path,
            FIVE_CONCEPTS
            + f"""
[judge]
base_url = "{server.base_url}"
api_key_env = "TEST_JUDGE_KEY"
prompt_version = "v1"
concurrency = 2
""",
        )
        argv = [sys.executable, "-m", "introspectd.cli", "run", "--plan", str(plan), "--local"]
        term = Terminal(argv, *size, _terminal_env(), REPO)
        num_answers = 0
        folded: list[str] = []
        waiting: list[str] = []
        generation: list[str] = []
        try:
            while term.pump(0.1):
                lines = term.lines()
                if not _count(lines, "figures ─") or "done:" in term.text():
                    continue
                num_answers += _check_answers(lines)
                _check_concept_rows(lines)
                folded += [ln for ln in lines if " more concepts " in ln]
                waiting += [ln for ln in lines if ln.startswith("judge ") and " waiting" in ln]
                generation += [ln for ln in lines if ln.startswith("generation ")]
                assert any(re.match(r"^progress · .* elapsed ─", ln) for ln in lines), term.text()
            code = term.finish()
        finally:
            term.close()
    text = term.text()
    assert code == 0, text
    assert num_answers > 0, text
    assert waiting, text  # the judge's backlog is on screen
    if size == (80, 24):  # 5 concepts do not fit: 3 rows, one for the other 2's (or 3's) trials
        pattern = r"^(2 more concepts .* \d+/32|3 more concepts .* \d+/48) "
        assert folded and all(re.search(pattern, f) for f in folded), [
            f for f in folded if not re.search(pattern, f)
        ]
    else:
        assert not folded
    # After generation: its totals and averages, not the last window's rates frozen.
    assert any(re.match(r"generation finished: 80/80 generated in \d", g) for g in generation)
    if size == (150, 45):  # the grid: each cell's rate and its n (5 concepts × 2 trials)
        grid = _section(term.lines(), GRID_TITLE + " · 40 judged")
        assert [row.split() for row in grid[1:]] == [
            ["L1", *["100%", "(10)"] * 2],
            ["L3", *["100%", "(10)"] * 2],
        ]
    # The end: counts, files, next commands (the screen wraps lines at 80 columns).
    flat = text.replace("\n", "")
    assert "done: 80/80 trials generated, 80 judged" in flat, text
    assert f"introspectd explore --plan {plan}" in flat, text
    assert "next: introspectd report " in flat, text


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


def test_judge_pause_is_rounded_up_and_the_backlog_shown() -> None:
    """A pause with 0.3 s left read "paused 0 s"; the figures come from a real JudgeProcess's
    stats, replaced as the child's reports replace them."""
    import dataclasses

    from introspectd.app.live_figures import judge_figures
    from introspectd.judge.process import JudgeProcess

    stats = RunStats()
    stats.judge = JudgeProcess(JudgeConfig(), None)
    stats.judge.stats = dataclasses.replace(stats.judge.stats, paused_s=0.3, in_flight=2)
    stats.num_left_generated, stats.num_generated, stats.num_judged = 3, 10, 5
    first, _ = judge_figures(stats, JudgeConfig())
    assert first[:2] == ["5 judged", "8 waiting"]
    assert first[-1] == "paused by Retry-After, 1 s left"


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


def test_concept_etas_share_the_runs_rate() -> None:
    """Every batch mixes the unfinished concepts (scheduler.py): concepts at equal progress get
    equal ETAs, however their own recent rates wobble; fewer trials left, sooner; none after
    the run."""
    stats = RunStats()
    stats.by_concept_total.update({"a": 100, "b": 100, "small": 20, "done": 10})
    stats.by_concept_done.update({"a": 0, "b": 0, "small": 0, "done": 10})
    stats.num_selected, stats.num_done_before = 230, 10
    rates = ConceptRates(window_s=30)
    rates.observe(stats, now=0.0)
    assert rates.eta_s(stats, ["a"]) is None  # one sample: no rate yet
    assert rates.eta_s(stats, ["done"]) == 0.0
    stats.by_concept_done.update({"a": 20, "small": 10})  # in 10 s: 50 trials, 5/s
    stats.num_done_before = 60
    rates.observe(stats, now=5.0)
    stats.by_concept_done.update({"b": 20})  # b's trials came in a later batch of the window
    rates.observe(stats, now=10.0)
    assert rates.eta_s(stats, None) == pytest.approx(170 / 5.0)
    assert rates.eta_s(stats, ["a"]) == rates.eta_s(stats, ["b"]) == pytest.approx(170 / 5.0)
    assert rates.eta_s(stats, ["small"]) == pytest.approx(10 * 3 / 5.0)  # 1/3 of the rate
    assert rates.eta_s(stats, ["small", "done"]) == pytest.approx(6.0)  # the group: its last
    rates.observe(stats, now=100.0)  # nothing finished for 90 s: the old samples age out
    assert rates.eta_s(stats, ["a"]) is None


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
    assert low[0][2] == "0 in flight (limit 1 of 16)"
    assert low[2][0].startswith("SLOW: limit 1 of 16 for 0 s: bursts of 429s (")
    assert low[2][0].endswith("[judge] min_concurrency sets a floor")


def test_folded_concepts_keep_their_rows_when_one_is_left() -> None:
    """Past the rows a terminal has, unfinished concepts come first and finished ones fill the
    rest: with one concept left running the fold still names as many as before."""
    stats = RunStats()
    stats.by_concept_total.update({f"c{i}": 16 for i in range(5)})
    stats.by_concept_done.update({f"c{i}": 16 for i in range(4)} | {"c4": 3})
    view = LiveView(Header("S", "m", "auto", "/tmp/out", ""), stats, JudgeConfig())
    console = Console(width=100, force_terminal=True, record=True)
    console.print(view.progress_rows(list(stats.by_concept_total), 100, max_rows=3))
    rows = console.export_text(styles=False).splitlines()
    assert [r.split()[0] for r in rows] == ["c4", "c0", "3"]
    assert rows[2].startswith("3 more concepts") and "48/48" in rows[2]
