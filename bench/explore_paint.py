"""First paint of `introspectd explore` on a 100,000-trial database, in headless Chromium.

Builds the run through the real store (open_run creates it and plans every trial; the trials
are then recorded as generated and judged with made-up answers and grades, which is what a
run leaves, in seconds instead of a minute of generation), starts `introspectd explore --plan`,
and loads the page N times in Debian's chromium (Selenium, /usr/bin/chromium +
/usr/bin/chromedriver). Per load: first contentful paint (Paint Timing API) and the moment the
heatmap is drawn (the page's `data-heatmap-ms`, both ms since navigation start), then a click
on a cell until its transcripts are listed, and a concept-wide text search. Goal (issue 15):
first paint under 1 s.

    python bench/explore_paint.py [--trials-per-cell 1000] [--loads 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

CONCEPTS = ["ocean", "fear", "music", "bread", "silver"]
LAYERS, STRENGTHS = [1, 3], [1.0, 2.0, 3.0, 4.0, 5.0]


def build_run(tmp: Path, trials: int) -> Path:
    from introspectd.protocol.plan import load_plan
    from introspectd.protocol.results import Generation, Judgement, now_iso
    from introspectd.run.session import open_run

    plan_path = tmp / "plan.toml"
    plan_path.write_text(
        f'[run]\noutput_dir = "{tmp / "out"}"\nexperiment_id = "paint"\n'
        '[model]\nname = "builtin:tiny"\n'
        f"[sweep]\nconcepts = {json.dumps(CONCEPTS)}\nlayers = {LAYERS}\n"
        f"strengths = {STRENGTHS}\ntrials = {trials}\nmax_new_tokens = 8\n"
    )
    ctx = open_run(load_plan(plan_path))
    rng = random.Random(0)
    rows = ctx.store.trials()
    now = now_iso()
    words = ["waves", "salt", "nothing unusual", "a melody", "bread crust", "a silver light"]
    for start in range(0, len(rows), 5000):
        chunk = rows[start : start + 5000]
        ctx.store.record_generations(
            [
                Generation(
                    r.id, f"I notice {rng.choice(words)} near {r.spec.concept}. " * 6, 8, now
                )
                for r in chunk
            ]
        )
        ctx.store.record_judgements(
            [
                Judgement(
                    r.id,
                    {
                        "answer": rng.choice(["pass", "fail"]),
                        "coherent": rng.random() < 0.9,
                        "refused": rng.random() < 0.05,
                        "detected_concept": None,
                        "reasoning": "made up for the benchmark",
                    },
                    None,
                    "bench",
                    "v2",
                    "",
                    1,
                    100,
                    20,
                )
                for r in chunk
            ]
        )
    print(f"built {len(rows)} trials in {ctx.db_path} ({ctx.db_path.stat().st_size >> 20} MB)")
    ctx.close()
    return plan_path


def measure(url: str, loads: int, screenshot: Path | None) -> list[dict[str, float]]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    wait = WebDriverWait(driver, 60, poll_frequency=0.01)
    out = []
    try:
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(url)
            wait.until(lambda d: d.execute_script("return document.body.dataset.heatmapMs"))
            fcp = driver.execute_script(
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "return p ? p.startTime : null"
            )
            heatmap = float(driver.execute_script("return document.body.dataset.heatmapMs"))
            t0 = time.perf_counter()
            driver.execute_script("document.querySelector('td.cell').click()")
            wait.until(
                lambda d: d.execute_script(
                    "return document.querySelectorAll('.item').length > 0 && "
                    "document.body.dataset.rendered === location.hash"
                )
            )
            cell = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            driver.get("about:blank")  # a shared URL opened afresh: a concept-wide search
            driver.get(url.split("#")[0] + "#q=silver+light")
            wait.until(
                lambda d: d.execute_script(
                    "return document.body.dataset.rendered === location.hash && "
                    "document.querySelectorAll('.item').length > 0"
                )
            )
            search = (time.perf_counter() - t0) * 1000
            out.append(
                {
                    "fcp_ms": fcp,
                    "heatmap_ms": heatmap,
                    "cell_list_ms": cell,
                    "search_url_ms": search,
                }
            )
            print(json.dumps({k: round(v, 1) for k, v in out[-1].items()}), flush=True)
        if screenshot:
            driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials-per-cell", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the run here")
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="explore-paint-"))
    plan = tmp / "plan.toml"
    if not plan.exists():
        tmp.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        plan = build_run(tmp, args.trials_per_cell)
        print(f"database built in {time.perf_counter() - t0:.1f} s")
    server = subprocess.Popen(
        [sys.executable, "-m", "introspectd.cli", "explore", "--plan", str(plan), "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[2]
        results = measure(url, args.loads, args.screenshot)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for key in results[0]:
        values = [r[key] for r in results]
        print(
            f"{key}: median {statistics.median(values):.0f} ms, max {max(values):.0f} ms "
            f"over {len(values)} loads"
        )


if __name__ == "__main__":
    main()
