"""Real weights, whole process: introspectd against HF `generate` on SmolLM2-135M-Instruct.

Shape (issue 21): 2 concepts × layers 10, 20 × strengths 4, 8 × 16 trials × {injection,
control} = 256 trials, 48 new tokens, sampled at T = 1, stopping at the model's end of turn.

    (a) HF generate, mixed batches of 64 and of 256 trials (cells mixed in a batch, each row
        steered by its own delta through the same hooks), as a fresh process: load, vectors,
        generate — what a researcher's own script does
    (b) `introspectd run`, the whole process as a user runs it (judging off: no key)
    (c) introspectd's engine in-process (model loaded, vectors computed): generated tokens/s
        against the roofline this machine's measured float32 matmul rate puts on the model,
        and the sampler's share of a decode step
    (d) vLLM's CPU build, unsteered, where it is installed (not a dependency)

    python bench/real.py [--only hf64,hf256,run,engine,vllm]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
from cpu import _Items  # noqa: E402

from introspectd.generate.decoding import BatcherConfig, WorkItem  # noqa: E402
from introspectd.generate.runner import Runner  # noqa: E402
from introspectd.generate.steering import SteeringState, steering  # noqa: E402
from introspectd.protocol.models import resolve_model  # noqa: E402
from introspectd.protocol.prompts import baseline_words, introspection_messages  # noqa: E402
from introspectd.protocol.trials import TrialSpec, expand_trials, trial_seed  # noqa: E402

MODEL = "builtin:smollm2"
CONCEPTS, LAYERS, STRENGTHS, TRIALS, MAX_NEW = ["ocean", "fear"], [10, 20], [4.0, 8.0], 16, 48


def _setup() -> tuple[Runner, list[int], list[TrialSpec], dict[tuple[str, int], torch.Tensor]]:
    runner = Runner(resolve_model(MODEL, "", "bench"))
    prompt = runner.render(introspection_messages("v2"))
    vectors = runner.concept_vectors(CONCEPTS, baseline_words(CONCEPTS), LAYERS, use_chat=False)
    return runner, prompt, expand_trials(CONCEPTS, LAYERS, STRENGTHS, TRIALS), vectors


def _delta(spec: TrialSpec, vectors: dict[tuple[str, int], torch.Tensor]) -> torch.Tensor | None:
    return vectors[(spec.concept, spec.layer)] * spec.strength if spec.is_injected else None


def hf_mixed_worker(batch: int) -> dict[str, Any]:
    """(a) in this process: HF generate over mixed batches, each row its own delta."""
    runner, prompt, specs, vectors = _setup()
    hidden = next(iter(vectors.values())).shape[0]
    tokens = 0
    for start in range(0, len(specs), batch):
        part = specs[start : start + batch]
        state = SteeringState()
        for layer in LAYERS:
            deltas = torch.zeros(len(part), hidden)
            for i, spec in enumerate(part):
                delta = _delta(spec, vectors)
                if delta is not None and spec.layer == layer:
                    deltas[i] = delta
            state.deltas[layer] = deltas
        with torch.inference_mode(), steering(runner.model, state, LAYERS):
            out = runner.model.generate(
                torch.tensor([prompt] * len(part)),
                max_new_tokens=MAX_NEW,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                eos_token_id=runner.eos_ids(),
                pad_token_id=runner.eos_ids()[0],
            )
        answers = out[:, len(prompt) :]
        tokens += int((~torch.isin(answers, torch.tensor(runner.eos_ids()))).sum())
    return {"generated_tokens": tokens}


def whole_process(argv: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall seconds and CPU seconds (user + system, all threads) of a fresh process. On a
    machine shared with other work, CPU seconds are the figure that compares."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def introspectd_run() -> dict[str, Any]:
    """(b) `introspectd run` in a fresh process, judging off."""
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.toml"
        plan.write_text(f"""
[run]
output_dir = "{tmp}"
experiment_id = "bench"
[model]
name = "{MODEL}"
[sweep]
concepts = {json.dumps(CONCEPTS)}
layers = {LAYERS}
strengths = {STRENGTHS}
trials = {TRIALS}
max_new_tokens = {MAX_NEW}
""")
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        cli = [sys.executable, "-m", "introspectd.cli"]
        timing = whole_process([*cli, "run", "--plan", str(plan), "--local", "--no-progress"], env)
        records = [json.loads(line) for f in Path(tmp).rglob("*.jsonl") for line in f.open()]
    return {**timing, "trials": len(records)}


def matmul_gflops(rows: int, shapes: list[tuple[int, int]], repeats: int = 5) -> float:
    """Best float32 GFLOP/s over the model's own weight shapes at `rows` rows and a large square
    product (the machine's matmul peak, which the roofline is measured against)."""
    best = 0.0
    for k, n in shapes:
        a, b = torch.randn(rows, k), torch.randn(k, n)
        a @ b  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds = (time.perf_counter() - start) / repeats
        best = max(best, 2 * rows * k * n / seconds / 1e9)
    return best


def engine_in_process() -> dict[str, Any]:
    """(c) The batcher alone on the run's automatic batch size; roofline and sampler share."""
    runner, prompt, specs, vectors = _setup()
    items = [
        WorkItem(f"t{i}", trial_seed(0, f"t{i}"), s.layer, _delta(s, vectors))
        for i, s in enumerate(specs)
    ]
    config = BatcherConfig(batch_size=1, max_new_tokens=MAX_NEW, temperature=1.0)
    batch = runner.auto_batch_size(len(prompt), config)
    config = BatcherConfig(batch_size=batch, max_new_tokens=MAX_NEW, temperature=1.0)
    batcher = runner.batcher(prompt, config)
    generated = _Counted(items)
    start, start_cpu = time.perf_counter(), time.process_time()
    batcher.run(generated, LAYERS)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    text = runner.model.config
    hidden, vocab = text.hidden_size, text.vocab_size
    params = sum(p.numel() for p in runner.model.model.layers.parameters())
    flops_per_token = 2 * (params + hidden * vocab)  # decoder layers + lm_head; attention aside
    shapes = [
        tuple(p.shape[::-1]) for p in runner.model.model.layers[0].parameters() if p.ndim == 2
    ]
    gflops = matmul_gflops(min(batch, len(items)), [*shapes, (hidden, vocab)])
    gflops = max(gflops, matmul_gflops(2048, [(2048, 2048)]))
    roofline = gflops * 1e9 / flops_per_token
    logits = torch.randn(min(batch, len(items)), vocab)
    seeds = torch.arange(logits.shape[0], dtype=torch.int64)
    sampler_s = _best_of(lambda: batcher.sample(logits, seeds, seeds, 1.0))
    # CPU seconds on both sides: on a shared machine wall time counts other work too.
    step_s = cpu_seconds / max(batcher.num_decode_steps, 1)
    tokens_per_s = generated.tokens / seconds
    return {
        "batch_size": batch,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "generated_tokens": generated.tokens,
        "tokens_per_s": round(tokens_per_s, 1),
        "matmul_gflops_fp32": round(gflops, 1),
        "roofline_tokens_per_s": round(roofline, 1),
        "fraction_of_roofline": round(tokens_per_s / roofline, 3),
        "decode_step_cpu_ms": round(step_s * 1e3, 1),
        "sampler_cpu_ms_at_full_batch": round(sampler_s * 1e3, 2),
        "sampler_share_of_step": round(sampler_s / step_s, 3),
    }


def _best_of(fn: Any, repeats: int = 5) -> float:
    """Fewest CPU seconds `fn` took over `repeats` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


class _Counted(_Items):
    """Hands out the items and counts the answer tokens they generate."""

    def __init__(self, items: list[WorkItem]) -> None:
        super().__init__(items)
        self.tokens = 0

    def done(self, rows: list[Any]) -> None:
        self.tokens += sum(len(row.token_ids) for row in rows)


def vllm_unsteered() -> dict[str, Any] | None:
    """(d) vLLM's CPU build generating the same prompt, unsteered; None when not installed."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        return None
    source = resolve_model(MODEL, "", "bench").source
    llm = LLM(model=source, dtype="float32")
    params = SamplingParams(temperature=1.0, max_tokens=MAX_NEW)  # no per-request seed: CPU
    text = llm.get_tokenizer().apply_chat_template(
        introspection_messages("v2"), add_generation_prompt=True, tokenize=False
    )
    start = time.perf_counter()
    outputs = llm.generate([text] * 256, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="hf64,hf256,run,engine,vllm")
    parser.add_argument("--hf-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_worker:
        print(json.dumps(hf_mixed_worker(args.hf_worker)))
        return
    torch.manual_seed(0)
    resolve_model(MODEL, "", "bench")  # de-quantize before any timing
    Runner(resolve_model(MODEL, "", "bench"))
    only = set(args.only.split(","))
    result: dict[str, Any] = {"model": MODEL, "trials": 256, "max_new_tokens": MAX_NEW}
    result["cpu_threads"] = torch.get_num_threads()
    for batch in (64, 256):
        if f"hf{batch}" in only:
            worker = [sys.executable, __file__, "--hf-worker", str(batch)]
            result[f"hf_mixed_{batch}"] = whole_process(worker)
    if "run" in only:
        ours = result["introspectd_run"] = introspectd_run()
        for batch in (64, 256):
            if f"hf_mixed_{batch}" in result:
                hf = result[f"hf_mixed_{batch}"]
                result[f"introspectd_vs_hf_mixed_{batch}"] = {
                    kind: round(hf[kind] / ours[kind], 2) for kind in ("wall_s", "cpu_s")
                }
    if "engine" in only:
        result["engine_in_process"] = engine_in_process()
    if "vllm" in only:
        result["vllm_cpu_unsteered"] = vllm_unsteered() or "not installed"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
