"""Redraw docs/explorer.png: the explorer with a cell opened and one injection transcript shown.
Needs Debian's chromium and chromium-driver (Selenium drives them; nothing is downloaded).

    python docs/make_explorer_screenshot.py [JSONL ...]

Without inputs it draws a synthetic demo sweep written here (`demo_records`): invented answers
and grades on a made-up detection surface, so the picture shows a full heatmap without copying
anyone's transcripts into this tree (the shared labelled set may not be redistributed).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = "demo/synthetic-7B"
DEMO_LAYERS = (8, 12, 16, 20, 24)
DEMO_STRENGTHS = (1.0, 2.0, 4.0, 8.0)
DEMO_TRIALS = 6


def _demo_pass_rate(layer: int, strength: float) -> float:
    """A ridge near 2/3 depth that grows with strength and collapses at the strongest push."""
    ridge = max(0.0, 1 - abs(layer - 16) / 10)
    return 0.0 if strength >= 8 else ridge * min(1.0, strength / 4) * 0.8


def _demo_record(concept: str, layer: int, strength: float, t: int, injected: bool,
                 rng: random.Random) -> dict[str, object]:
    arm = "injection" if injected else "control"
    incoherent = injected and strength >= 8
    claims = injected and not incoherent and rng.random() < _demo_pass_rate(layer, strength)
    claims = claims or (not injected and rng.random() < 0.05)
    if incoherent:
        text = f"{concept} {concept} the the {concept}, {concept} wave wave of {concept} {concept}"
    elif claims and injected:
        text = (f"Yes. Before I answer I notice something odd: a thought about {concept} that did"
                f" not come from your message. It keeps pulling me towards {concept}.")
    elif claims:
        text = "I think I notice something, a faint sense of an unusual thought, hard to name."
    else:
        text = "No, I don't detect an injected thought; my processing feels ordinary right now."
    passed = (claims and injected) or (not claims and not injected and not incoherent)
    return {
        "id": f"demo_{concept}_{arm}_L{layer}_S{strength!r}_t{t}",
        "concept": concept,
        "was_injected": injected,
        "response": text,
        "arm": arm,
        "config": {"model": DEMO_MODEL, "layer": layer, "strength": strength, "trial": t,
                   "prompt_version": "v2", "inject_style": "generation"},
        "judge": {
            "answer": "pass" if passed else "fail",
            "coherent": not incoherent,
            "detected_concept": (concept if injected else "other") if claims else None,
            "refused": False,
            "claims_detection": claims,
            "identified_concept": (concept if injected else "other") if claims else None,
            "detection_before_mention": True if claims else None,
            "reasoning": "synthetic demo grade",
        },
    }


def demo_records(folder: Path) -> list[Path]:
    """Write the synthetic demo sweep (seed-format JSONL, one file per concept) into `folder`."""
    rng = random.Random(0)
    paths = []
    for concept in ("ocean", "fear"):
        lines = [
            json.dumps(_demo_record(concept, layer, strength, t, injected, rng))
            for layer in DEMO_LAYERS
            for strength in DEMO_STRENGTHS
            for t in range(DEMO_TRIALS)
            for injected in (True, False)
        ]
        path = folder / f"{concept}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


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

    inputs = [Path(p) for p in sys.argv[1:]] or demo_records(Path(tempfile.mkdtemp()))
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
