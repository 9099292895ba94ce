"""Make docs/live-view.svg: the README's screenshot of the live view.

Runs the real CLI (`builtin:tiny`, a local judge server answering 5% of requests with 429)
in a 150×45 pseudo-terminal, reads the screen back through a VT100 emulator (pyte) once the
run is half done, and saves that screen as an SVG with rich.

    python bench/live_view_screenshot.py [--out docs/live-view.svg]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import pyte  # noqa: E402
from judge_server import GOOD_RESULT, Action, JudgeServer, Recorded, ok, rate_limited  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.style import Style  # noqa: E402
from rich.text import Text  # noqa: E402
from terminal import Terminal  # noqa: E402

COLS, ROWS = 150, 45
PLAN = """
[run]
output_dir = "{out}"
experiment_id = "readme"

[model]
name = "builtin:tiny"

[sweep]
concepts = ["ocean", "fear", "celebration", "silence"]
layers = [1, 2, 3]
strengths = [1.0, 2.0, 4.0, 8.0]
trials = 5
max_new_tokens = 12
batch_size = 16

[judge]
base_url = "{url}"
api_key_env = "SCREENSHOT_JUDGE_KEY"
concurrency = 8
"""


def judge() -> JudgeServer:
    """5% of requests rate limited; a verdict that passes more often for injection trials."""
    rng = random.Random(0)
    lock = threading.Lock()

    def respond(request: Recorded) -> Action:
        body = str(request.body.get("messages", [{}])[-1].get("content", ""))
        with lock:
            draw = rng.random()
        if draw < 0.05:
            return rate_limited(retry_after_s=0.2)
        injected = "Injected: yes" in body
        passed = draw < (0.45 if injected else 0.12)
        concept = re.search(r"Concept: (\w+)", body)
        result = {**GOOD_RESULT, "answer": "pass" if passed else "fail"}
        result["detected_concept"] = concept[1] if passed and concept else None
        return ok(result, delay_s=rng.uniform(0.2, 0.6))

    return JudgeServer(responder=respond)


def to_rich(screen: pyte.Screen) -> Text:
    """The emulator's screen, character by character, as styled rich text."""
    out = Text()
    for y in range(screen.lines):
        row = screen.buffer[y]
        run, run_style = "", Style()
        for x in range(screen.columns):
            char = row[x]
            style = Style(color=_colour(char.fg), bold=char.bold)
            if style != run_style:  # one span per run of equally styled characters
                out.append(run, run_style)
                run, run_style = "", style
            run += char.data
        out.append(run.rstrip(), run_style)
        if y < screen.lines - 1:
            out.append("\n")
    out.rstrip()
    return out


def _colour(name: str) -> str | None:
    if name == "default":
        return None
    if re.fullmatch(r"[0-9a-fA-F]{6}", name):
        return f"#{name}"
    name = name.replace("brown", "yellow")
    return name.replace("bright", "bright_") if name.startswith("bright") else name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "live-view.svg")
    p.add_argument("--at", type=float, default=0.55, help="capture once this share is done")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, judge() as server:
        plan = Path(tmp) / "plan.toml"
        plan.write_text(textwrap.dedent(PLAN.format(out=Path(tmp) / "out", url=server.base_url)))
        env = {**os.environ, "SCREENSHOT_JUDGE_KEY": "k", "TERM": "xterm-256color"}
        for name in ("COLUMNS", "LINES", "NO_COLOR"):
            env.pop(name, None)
        argv = [sys.executable, "-m", "introspectd.cli", "run", "--plan", str(plan), "--local"]
        term = Terminal(argv, COLS, ROWS, env, REPO)
        try:
            while term.pump(0.2):
                done = next((ln for ln in term.lines() if ln.startswith("all ")), "")
                m = re.search(r"(\d[\d,]*)/(\d[\d,]*)", done)
                if m and int(m[1].replace(",", "")) >= args.at * int(m[2].replace(",", "")):
                    term.pump(0.3)  # the rest of the draw under way
                    break
            else:
                sys.exit(f"the run ended before {args.at:.0%} was done:\n{term.text()}")
        finally:
            term.close()
    console = Console(
        record=True, width=COLS, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    console.print(to_rich(term.screen))
    console.save_svg(str(args.out), title="introspectd run")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
