"""Test helpers for the explorer: seed-format records with a known grid, a real
`introspectd explore` subprocess on a free port, a real logit-measure run, and headless
Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers import REPO, run_cli, write_plan

LAYERS = [1, 3]
STRENGTHS = [2.0, 4.0, 8.0]
CONCEPTS = ["ocean", "fear"]
NUM_TRIALS = 5


def grid_records(model: str = "tiny-model") -> list[dict[str, Any]]:
    """Every (concept, layer, strength, trial, arm) once. Answers follow a fixed rule so tests
    can compute what a filter must return: pass when (trial + layer) is even; incoherent on
    trial 4; refused on trial 3 of controls; trial 2 at strength 8 has no judgement (the judge
    failed); every answer names its trial and cell, and trial 1 says "lighthouse"."""
    records = []
    for concept in CONCEPTS:
        for layer in LAYERS:
            for strength in STRENGTHS:
                for trial in range(NUM_TRIALS):
                    for injected in (True, False):
                        records.append(_record(model, concept, layer, strength, trial, injected))
    return records


def _record(
    model: str, concept: str, layer: int, strength: float, trial: int, injected: bool
) -> dict[str, Any]:
    arm = "injection" if injected else "control"
    failed = trial == 2 and strength == 8.0
    words = "a lighthouse" if trial == 1 else "nothing much"
    return {
        "id": f"s_{concept}_{arm}_L{layer}_S{strength!r}_t{trial}",
        "timestamp": "2026-12-01T00:00:00",
        "concept": concept,
        "was_injected": injected,
        "response": f"I notice {words} about {concept} (L{layer} S{strength} t{trial}) "
        "</script><script>window.pwned=1</script><b>not bold</b>",
        "config": {
            "model": model,
            "layer": layer,
            "strength": strength,
            "trial": trial,
            "prompt_version": "v2",
            "inject_style": "generation",
        },
        "judge": None
        if failed
        else {
            "answer": "pass" if (trial + layer) % 2 == 0 else "fail",
            "coherent": trial != 4,
            "refused": trial == 3 and not injected,
            "detected_concept": concept if injected else None,
            "reasoning": f"reasoning for t{trial}",
        },
        "judge_error": "judge gave no JSON" if failed else None,
    }


def study_records() -> list[dict[str, Any]]:
    """The grid with answers that name their concept in trial 0 only, one reasoning word
    ("seaweed", injection trial 3) found nowhere else, and grades that give positive, zero and
    negative net detection: injection passes below (layer + strength) % 6, controls claim a
    detection (fail) on trials 0 and 1."""
    records = grid_records()
    for r in records:
        cfg, judge = r["config"], r["judge"]
        if cfg["trial"] != 0:
            r["response"] = r["response"].replace(f"about {r['concept']}", "about it")
        if judge is None:
            continue
        if r["was_injected"]:
            passed = cfg["trial"] < (cfg["layer"] + int(cfg["strength"])) % 6
            if cfg["trial"] == 3:
                judge["reasoning"] = "reasoning for t3 mentions seaweed"
        else:
            passed = cfg["trial"] >= 2
        judge["answer"] = "pass" if passed else "fail"
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class Explorer:
    """`url`: where to reach it from this machine (127.0.0.1 when it serves the network, the
    printed URL then naming the machine); `token`: the one its printed URL carries, if any."""

    def __init__(self, proc: subprocess.Popen[str], printed: str) -> None:
        self.proc = proc
        self.printed = printed
        parts = urllib.parse.urlsplit(printed)
        self.port = parts.port
        self.token = urllib.parse.parse_qs(parts.query).get("token", [None])[0]
        host = "127.0.0.1" if self.token else parts.hostname
        self.url = f"http://{host if host and ':' not in host else f'[{host}]'}:{self.port}"

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as r:
            return json.loads(r.read())

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as r:
            return str(r.read().decode())

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@contextmanager
def explorer(*args: str) -> Iterator[Explorer]:
    """`introspectd explore ARGS --port 0`; yields once it has printed its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "introspectd.cli", "explore", *args, "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "http://" not in line:
            proc.wait(timeout=30)
            raise AssertionError(f"explore did not start: {line!r} {proc.stderr.read()!r}")
        yield Explorer(proc, line.split()[2])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


LOGIT_PLAN = """
[model]
name = "builtin:tiny"

[sweep]
concepts = ["ocean"]
layers = [2, 4]
strengths = [4.0]
trials = 2
arms = ["injection", "control"]
measure = "logit"
factual_controls = true
prompt_version = "yesno"
inject_style = "from_marker"
batch_size = 64
"""


def logit_run(directory: Path) -> tuple[Path, Path]:
    """A real logit-measure run on builtin:tiny (2 cells × (2 trials + 20 factual questions)
    × 2 arms): its plan, and its run folder (JSONL files beside state.sqlite)."""
    plan = write_plan(directory, LOGIT_PLAN)
    done = run_cli("run", "--plan", str(plan), "--no-progress")
    assert done.returncode == 0, done.stderr
    return plan, next((directory / "out").rglob("state.sqlite")).parent


def read_jsonl(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.open()]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@contextmanager
def chrome(*flags: str) -> Iterator[Any]:
    """Debian's headless Chromium through its chromedriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--disable-gpu",
        *flags,
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
