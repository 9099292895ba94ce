"""CPU benchmark: the seed's algorithm vs HF generate per configuration vs `introspectd run`.

Shape: 2 concepts × 2 layers × 2 strengths × N trials × {injection, control}, 48 new tokens,
on a built-in random-weights model (`tiny`, or the ~40M-parameter `small`). A local judge
server answers every request after 0.3 s, like a hosted judge's latency.

    (a) seed: one trial at a time — HF generate with a hook, then a blocking judge call
    (b) HF generate batched per configuration: all trials of a cell in one call, no judge
    (c) introspectd run: the whole process as a user runs it, judged by the same server

    python bench/cpu.py [--model tiny|small] [--trials 10] [--seed-trials 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from judge_server import JudgeServer  # noqa: E402

from introspectd.generate.decoding import BatcherConfig, Finished, WorkItem  # noqa: E402
from introspectd.generate.runner import Runner  # noqa: E402
from introspectd.generate.steering import SteeringState, steering  # noqa: E402
from introspectd.protocol.models import resolve_model  # noqa: E402
from introspectd.protocol.prompts import baseline_words, introspection_messages  # noqa: E402
from introspectd.protocol.trials import TrialSpec, expand_trials, trial_seed  # noqa: E402

CONCEPTS, LAYERS, STRENGTHS, MAX_NEW = ["ocean", "fear"], [1, 3], [2.0, 4.0], 48
JUDGE_LATENCY_S = 0.3


def generate_cell(
    runner: Runner,
    prompt: list[int],
    spec: TrialSpec,
    num_rows: int,
    vectors: dict[tuple[str, int], torch.Tensor],
) -> torch.Tensor:
    """HF generate for `num_rows` copies of one cell, steered by a hook as the seed did."""
    state = SteeringState()
    if spec.is_injected:
        delta = vectors[(spec.concept, spec.layer)] * spec.strength
        state.deltas = {spec.layer: delta[None].expand(num_rows, -1)}
    with torch.inference_mode(), steering(runner.model, state, [spec.layer]):
        out = runner.model.generate(
            torch.tensor([prompt] * num_rows),
            max_new_tokens=MAX_NEW,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            eos_token_id=runner.eos_ids(),
            pad_token_id=0,
        )
    return out[:, len(prompt) :]


def seed_algorithm(
    runner: Runner,
    prompt: list[int],
    specs: list[TrialSpec],
    vectors: dict[tuple[str, int], torch.Tensor],
    judge_url: str,
) -> float:
    """One trial at a time, generate then judge, as the seed did. Returns trials/s."""
    client = openai.OpenAI(base_url=judge_url, api_key="bench", max_retries=0)
    start = time.perf_counter()
    for spec in specs:
        answer = runner.decode(generate_cell(runner, prompt, spec, 1, vectors)[0].tolist())
        client.chat.completions.create(
            model="judge", messages=[{"role": "user", "content": f"Grade: {answer}"}]
        )
    return len(specs) / (time.perf_counter() - start)


def hf_batched_per_config(
    runner: Runner,
    prompt: list[int],
    specs: list[TrialSpec],
    vectors: dict[tuple[str, int], torch.Tensor],
) -> float:
    """All trials of one (concept, layer, strength, kind) cell in one generate call."""
    cells: dict[tuple[str, int, float, str], list[TrialSpec]] = {}
    for spec in specs:
        key = (spec.concept, spec.layer, spec.strength, spec.arm.value)
        cells.setdefault(key, []).append(spec)
    start = time.perf_counter()
    for cell in cells.values():
        generate_cell(runner, prompt, cell[0], len(cell), vectors)
    return len(specs) / (time.perf_counter() - start)


def engine_in_process(
    runner: Runner,
    prompt: list[int],
    specs: list[TrialSpec],
    vectors: dict[tuple[str, int], torch.Tensor],
) -> float:
    """introspectd's batcher alone, like (b): model loaded, no judge, the run's automatic
    batch size."""
    items = [
        WorkItem(
            f"t{i}",
            trial_seed(0, f"t{i}"),
            s.layer,
            vectors[(s.concept, s.layer)] * s.strength if s.is_injected else None,
        )
        for i, s in enumerate(specs)
    ]
    config = BatcherConfig(batch_size=1, max_new_tokens=MAX_NEW, temperature=1.0)
    config = dataclasses.replace(config, batch_size=runner.auto_batch_size(len(prompt), config))
    batcher = runner.batcher(prompt, config)
    start = time.perf_counter()
    batcher.run(_Items(items), LAYERS)
    return len(specs) / (time.perf_counter() - start)


class _Items:
    """A RowSource that hands out `items` in order and drops what they generate."""

    def __init__(self, items: list[WorkItem]) -> None:
        self.items = items

    def take(self, n: int) -> list[WorkItem]:
        taken, self.items = self.items[:n], self.items[n:]
        return taken

    def done(self, rows: list[Finished]) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def introspectd_run(
    model: str, trials: int, judge_url: str, batch_size: str, judge_concurrency: int
) -> tuple[float, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.toml"
        plan.write_text(f"""
[run]
output_dir = "{tmp}"
experiment_id = "bench"
[model]
name = "builtin:{model}"
[sweep]
concepts = {json.dumps(CONCEPTS)}
layers = {LAYERS}
strengths = {STRENGTHS}
trials = {trials}
max_new_tokens = {MAX_NEW}
batch_size = {batch_size}
[judge]
base_url = "{judge_url}"
api_key_env = "BENCH_JUDGE_KEY"
concurrency = {judge_concurrency}
""")
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "introspectd.cli",
                "run",
                "--plan",
                str(plan),
                "--local",
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "BENCH_JUDGE_KEY": "bench"},
            cwd=REPO,
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        status = subprocess.run(
            [sys.executable, "-m", "introspectd.cli", "status", "--plan", str(plan), "--json"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        summary = json.loads(status.stdout)
        return summary["total"] / seconds, summary["by_status"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument(
        "--batch-size",
        default='"auto"',
        help='introspectd\'s [sweep] batch_size (TOML: "auto" or an integer)',
    )
    parser.add_argument(
        "--judge-concurrency",
        type=int,
        default=64,
        help="introspectd's [judge] concurrency; with 0.3 s per answer it caps judged trials/s "
        "at concurrency / 0.3",
    )
    parser.add_argument(
        "--seed-trials",
        type=int,
        default=16,
        help="how many trials to time the one-at-a-time seed algorithm on",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    runner = Runner(resolve_model(f"builtin:{args.model}", "", "bench"))
    params = sum(p.numel() for p in runner.model.parameters())
    prompt = runner.render(introspection_messages("v2"))
    vectors = runner.concept_vectors(CONCEPTS, baseline_words(CONCEPTS), LAYERS, use_chat=False)
    specs = expand_trials(CONCEPTS, LAYERS, STRENGTHS, args.trials)
    with JudgeServer(latency_s=JUDGE_LATENCY_S) as server:
        seed = seed_algorithm(runner, prompt, specs[: args.seed_trials], vectors, server.base_url)
        hf = hf_batched_per_config(runner, prompt, specs, vectors)
        engine = engine_in_process(runner, prompt, specs, vectors)
        ours, by_status = introspectd_run(
            args.model, args.trials, server.base_url, args.batch_size, args.judge_concurrency
        )
    result = {
        "model": f"builtin:{args.model}",
        "params": params,
        "trials": len(specs),
        "max_new_tokens": MAX_NEW,
        "introspectd_batch_size": args.batch_size,
        "judge_concurrency": args.judge_concurrency,
        "cpu_threads": torch.get_num_threads(),
        "trials_per_s": {
            "seed": round(seed, 3),
            "hf_batched_per_config": round(hf, 2),
            "introspectd_engine_in_process": round(engine, 2),
            "introspectd_run": round(ours, 2),
        },
        "introspectd_vs_seed": round(ours / seed, 1),
        "introspectd_vs_hf_batched": round(ours / hf, 2),
        "engine_vs_hf_batched": round(engine / hf, 2),
        "introspectd_status": by_status,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
