"""GPU benchmark: the seed's full sweep shape on a random-weights Qwen2.5-3B-shaped model.

No downloads: the model is built from Qwen2.5-3B-Instruct's architecture (config only) with
random bf16 weights. 4 concepts × 6 layers × 6 strengths × 40 trials × 2 = 11,520 trials,
200 new tokens each (stop tokens ignored, so every trial decodes 200). Reports the sweep's
generation time, tokens/s, peak memory and batch size; HF `generate` per configuration on a
slice (extrapolated); and a roofline estimate beside them.

    python bench/gpu.py                 # the real thing, on one CUDA GPU (< 8 minutes)
    python bench/gpu.py --smoke         # a tiny shape on CPU, to check the script itself

The sampler's own GPU check (ms per step, exactness, batch independence) is
bench/gpu_sampler.py; bench/gpu.sh runs it first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from introspectd.generate.batcher import Batcher, attention_shape, tokens_per_row
from introspectd.generate.decoding import BatcherConfig, Finished, WorkItem
from introspectd.generate.logit import left_pad, yes_no_probs
from introspectd.generate.runner import batch_size_for
from introspectd.generate.steering import SteeringState, steering
from introspectd.protocol.trials import expand_trials, resolve_layers, trial_seed

QWEN_3B = dict(
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
    rope_theta=1e6,
)
SMOKE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1024,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)
H200 = {"hbm_bytes_per_s": 4.8e12, "bf16_flops": 989e12}
PROMPT_LEN = 120  # the v2 prompt is about 120 Qwen tokens


def build_model(shape: dict[str, Any], device: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    config = Qwen2Config(**shape)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def work_items(
    model: torch.nn.Module, trials: int, device: str
) -> tuple[list[WorkItem], list[int]]:
    n_layers = model.config.num_hidden_layers
    layers = resolve_layers("default", n_layers)
    concepts = ["celebration", "ocean", "fear", "silence"]
    specs = expand_trials(concepts, layers, [1.0, 1.5, 2.0, 2.5, 3.0, 4.0], trials)
    gen = torch.Generator().manual_seed(0)
    vectors = {
        (c, layer): torch.randn(model.config.hidden_size, generator=gen)
        * 40
        / model.config.hidden_size**0.5
        for c in concepts
        for layer in layers
    }
    items = [
        WorkItem(
            s.trial_id("bench"),
            trial_seed(0, s.trial_id("")),
            s.layer,
            (vectors[(s.concept, s.layer)] * s.strength).to(device) if s.is_injected else None,
        )
        for s in specs
    ]
    return items, layers


def engine_config(batch_size: int, max_new: int) -> BatcherConfig:
    return BatcherConfig(
        batch_size=batch_size,
        max_new_tokens=max_new,
        temperature=1.0,
        check_every=8,
        ignore_eos=True,
    )


class _Counting:
    """A RowSource that hands out `items` in order and counts the finished rows."""

    def __init__(self, items: list[WorkItem]) -> None:
        self.queue = list(items)
        self.num_done = 0

    def take(self, n: int) -> list[WorkItem]:
        taken = self.queue[:n]
        del self.queue[:n]
        return taken

    def done(self, rows: list[Finished]) -> None:
        self.num_done += len(rows)

    def should_stop(self) -> bool:
        return False


def run_engine(
    model: torch.nn.Module,
    items: list[WorkItem],
    layers: list[int],
    prompt: list[int],
    batch_size: int,
    max_new: int,
) -> dict[str, Any]:
    batcher = Batcher(model, prompt, [], engine_config(batch_size, max_new))
    source = _Counting(items)
    _sync()
    start = time.perf_counter()
    batcher.run(source, layers)
    _sync()
    done = source.num_done
    seconds = time.perf_counter() - start
    return {
        "trials": done,
        "seconds": round(seconds, 2),
        "batch_size": batch_size,
        "tokens_per_s": round(done * max_new / seconds),
        "decode_steps": batcher.num_decode_steps,
    }


def run_hf_slice(
    model: torch.nn.Module,
    items: list[WorkItem],
    prompt: list[int],
    trials: int,
    max_new: int,
    num_cells: int,
) -> dict[str, Any]:
    """HF generate, all trials of one (concept, layer, strength, kind) cell per call."""
    device = next(model.parameters()).device
    cells = [items[i::2][:trials] for i in range(2)]  # an injection and a control cell shape
    start = time.perf_counter()
    num_calls = 0
    for c in range(num_cells):
        cell = cells[c % 2]
        state = SteeringState()
        if cell[0].delta is not None:
            state.deltas = {cell[0].layer: cell[0].delta[None].expand(len(cell), -1).clone()}
        with torch.inference_mode(), steering(model, state, [cell[0].layer]):
            ids = torch.tensor([prompt] * len(cell), device=device)
            model.generate(
                ids,
                max_new_tokens=max_new,
                min_new_tokens=max_new,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                pad_token_id=0,
            )
        num_calls += 1
    _sync()
    seconds = time.perf_counter() - start
    total_cells = len(items) // trials
    return {
        "cells_timed": num_calls,
        "seconds_timed": round(seconds, 2),
        "extrapolated_seconds": round(seconds / num_calls * total_cells, 1),
        "total_cells": total_cells,
    }


def roofline(model: torch.nn.Module, num_trials: int, batch: int, max_new: int) -> dict[str, Any]:
    params = sum(p.numel() for p in model.parameters())
    item = next(model.parameters()).element_size()
    num_layers, kv_heads, head_dim, _ = attention_shape(model)
    kv_per_token = 2 * num_layers * kv_heads * head_dim * item
    steps = -(-num_trials // batch) * max_new
    # Per step: the weights, the shared prompt's KV once, each row's own KV (half the answer on
    # average).
    kv_tokens = PROMPT_LEN + batch * max_new / 2
    bytes_total = steps * (params * item + kv_tokens * kv_per_token)
    flops_total = 2 * params * num_trials * max_new
    return {
        "params": params,
        "memory_bound_s": round(bytes_total / H200["hbm_bytes_per_s"], 1),
        "compute_bound_s": round(flops_total / H200["bf16_flops"], 1),
        "roofline_s": round(
            max(bytes_total / H200["hbm_bytes_per_s"], flops_total / H200["bf16_flops"]), 1
        ),
    }


def run_logit(
    model: torch.nn.Module,
    items: list[WorkItem],
    layers: list[int],
    prompt: list[int],
    batch: int,
) -> dict[str, Any]:
    """Logit mode (`measure = "logit"`): one steered forward pass per trial over the prompt,
    read as P(yes) — generate/logit.py's padding and read-out on the same trials."""
    param = next(model.parameters())
    state = SteeringState()
    num_read = 0
    _sync()
    start = time.perf_counter()
    with torch.inference_mode(), steering(model, state, layers):
        for at in range(0, len(items), batch):
            chunk = items[at : at + batch]
            ids, mask, positions, steered = left_pad([prompt] * len(chunk), [0] * len(chunk), 0)
            deltas: dict[int, torch.Tensor] = {}
            for i, item in enumerate(chunk):
                if item.delta is not None:
                    if item.layer not in deltas:
                        deltas[item.layer] = torch.zeros(
                            len(chunk), item.delta.numel(), device=param.device, dtype=param.dtype
                        )
                    deltas[item.layer][i] = item.delta
            state.deltas = deltas
            state.position_mask = steered.to(param.device, param.dtype)
            logits = model(
                input_ids=ids.to(param.device),
                attention_mask=mask.to(param.device),
                position_ids=positions.to(param.device),
                logits_to_keep=1,
            ).logits[:, -1, :]
            num_read += len(yes_no_probs(logits, [1], [2]))
    _sync()
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "trials_per_s": round(num_read / seconds, 1),
        "batch_size": batch,
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--hf-cells", type=int, default=4)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    trials, max_new = (2, 16) if args.smoke else (40, 200)
    model = build_model(SMOKE if args.smoke else QWEN_3B, device, dtype)
    items, layers = work_items(model, trials, device)
    prompt = [(7 * i) % 500 + 1 for i in range(PROMPT_LEN)]
    row_tokens = tokens_per_row(PROMPT_LEN, engine_config(1, max_new))
    batch = args.batch_size or batch_size_for(model, row_tokens)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "num_trials": len(items),
        "max_new_tokens": max_new,
    }
    # One short pass first: CUDA context, cuBLAS handles and the one-time torch.compile of the
    # sampler's hash, which a run pays once per process, are reported apart from the sweep.
    warmup = run_engine(model, items[: min(batch, 64)], layers, prompt, batch, 8)
    result["warmup_seconds"] = warmup["seconds"]
    result["introspectd"] = run_engine(model, items, layers, prompt, batch, max_new)
    if device == "cuda":
        result["introspectd"]["peak_memory_gib"] = round(
            torch.cuda.max_memory_allocated() / 2**30, 1
        )
    result["hf_generate_per_config"] = run_hf_slice(
        model, items, prompt, trials, max_new, args.hf_cells
    )
    result["speedup_vs_hf"] = round(
        result["hf_generate_per_config"]["extrapolated_seconds"] / result["introspectd"]["seconds"],
        1,
    )
    result["roofline_h200"] = roofline(model, len(items), batch, max_new)
    # Logit mode on the same trials: one forward pass each (prompt only, no KV cache kept).
    logit_batch = args.batch_size or batch_size_for(model, PROMPT_LEN)
    result["logit_mode"] = run_logit(model, items, layers, prompt, logit_batch)
    result["logit_speedup_vs_introspectd"] = round(
        result["introspectd"]["seconds"] / result["logit_mode"]["seconds"], 1
    )
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu-bench.json").write_text(text)


if __name__ == "__main__":
    main()
