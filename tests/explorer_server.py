"""Test helpers for the explorer: seed-format records with a known grid, and a real
`introspectd explore` subprocess on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers import REPO

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


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class Explorer:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as r:
            return json.loads(r.read())

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
        yield Explorer(proc, line.split()[2].rstrip("/"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
