"""Helpers shared by the test modules: plan files and real CLI subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

from introspectd.generate.decoding import WorkItem
from introspectd.generate.steering import SteeringState, steering
from introspectd.protocol.results import Generation
from introspectd.protocol.trials import Trial
from introspectd.run.scheduler import Scheduler

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


class KeptWork:
    """A WorkSource over a real scheduler that keeps every generation it is handed (for driving
    a generator directly, without the run loop)."""

    def __init__(self, trials: list[Trial]) -> None:
        self.scheduler = Scheduler(trials)
        self.generations: list[Generation] = []

    def take(self, n: int) -> list[Trial]:
        return self.scheduler.take(n)

    def done(self, generations: list[Generation]) -> None:
        self.generations.extend(generations)
        self.scheduler.complete([g.trial_id for g in generations])

    def requeue(self) -> int:
        return self.scheduler.requeue_in_flight()

    def should_stop(self) -> bool:
        return False


def jsonl_lines(text: str) -> list[str]:
    """A JSONL file's lines, each with its newline. Split on "\n" only: str.splitlines() also
    splits at U+0085 or U+2028, which json.dumps(ensure_ascii=False) leaves raw inside a
    sampled answer (the random test models emit them)."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def write_plan(directory: Path, body: str, name: str = "plan.toml") -> Path:
    """A plan file whose output_dir is inside `directory` unless the body sets [run]."""
    text = textwrap.dedent(body)
    if "[run]" not in text:
        text = f'[run]\noutput_dir = "{directory / "out"}"\nexperiment_id = "exp"\n\n' + text
    path = directory / name
    path.write_text(text)
    return path


TINY_PLAN = """
[model]
name = "builtin:tiny"

[sweep]
concepts = ["ocean", "fear"]
layers = [1, 3]
strengths = [2.0, 4.0]
trials = 2
max_new_tokens = 8
batch_size = 8
"""


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "introspectd.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def start_run(
    plan: Path, *flags: str, env: dict[str, str] | None = None, stderr: int | None = subprocess.PIPE
) -> subprocess.Popen[str]:
    """`introspectd run --plan P --no-progress FLAGS` as a background process (stdout dropped)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "introspectd.cli",
            "run",
            "--plan",
            str(plan),
            "--no-progress",
            *flags,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        env={**os.environ, **(env or {})},
    )


def hf_reference(
    runner: Any,
    prompt: list[int],
    item: WorkItem,
    eos: list[int],
    n: int,
    steer_from: int | None = None,
) -> list[int]:
    """HF generate, one trial, greedy; the hook steers decode steps, and the prompt from
    `steer_from` on when given."""
    state = SteeringState()
    if item.delta is not None:
        state.deltas = {item.layer: item.delta[None].clone()}
        if steer_from is not None:
            state.position_mask = torch.zeros(1, len(prompt))
            state.position_mask[:, steer_from:] = 1
    with torch.inference_mode(), steering(runner.model, state, [item.layer]):
        out = runner.model.generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=eos or None,
            pad_token_id=0,
        )
    toks = out[0, len(prompt) :].tolist()
    return toks[:-1] if toks and eos and toks[-1] in eos else toks


def base_model_copy(directory: Path) -> Path:
    """The tiny model without its chat template, under `directory`: what a base checkpoint
    looks like."""
    from introspectd.generate.builtin import BUILTIN_SPECS, build
    from introspectd.protocol.models import resolve_model

    source = Path(resolve_model("builtin:tiny", "", "test").source)
    build(BUILTIN_SPECS["tiny"], source)
    base = directory / "base-model"
    shutil.copytree(source, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    return base
