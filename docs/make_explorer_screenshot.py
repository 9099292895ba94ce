"""Redraw docs/explorer.png: the explorer on real transcripts (the human-labelled set in
../shared/data), a cell opened and one injection transcript shown. Needs Debian's chromium and
chromium-driver (Selenium drives them; nothing is downloaded).

    python docs/make_explorer_screenshot.py [JSONL ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "labelled_responses.jsonl"


def pick(inputs: list[Path]) -> dict[str, str]:
    """The view to show: in the model with the most records, the first judged-pass injection
    transcript that names its concept."""
    records = [json.loads(line) for p in inputs for line in p.read_text().splitlines() if line]
    models = Counter(r["config"]["model"] for r in records)
    for r in sorted(records, key=lambda r: -models[r["config"]["model"]]):
        grade = r.get("judge") or r.get("label") or {}
        named = r["concept"].lower() in r["response"].lower()
        if r["was_injected"] and grade.get("answer") == "pass" and named:
            c = r["config"]
            return {
                "model": c["model"],
                "concept": r["concept"],
                "layer": str(c["layer"]),
                "strength": f"{c['strength']:g}",
                "trial": r["id"],
            }
    raise SystemExit("no judged-pass injection transcript in the inputs")


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    inputs = [Path(p) for p in sys.argv[1:]] or [DEFAULT]
    view = urllib.parse.urlencode(pick(inputs))
    server = subprocess.Popen(
        [sys.executable, "-m", "introspectd.cli", "explore", *map(str, inputs), "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--window-size=1500,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        assert server.stdout is not None
        driver.get(server.stdout.readline().split()[2] + "#" + view)
        WebDriverWait(driver, 60).until(
            lambda d: d.execute_script(
                "return document.body.dataset.rendered === location.hash && "
                "document.querySelector('#trial-pane mark') !== null"
            )
        )
        time.sleep(0.3)
        driver.save_screenshot(str(REPO / "docs" / "explorer.png"))
        print(f"wrote docs/explorer.png ({view})")
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
