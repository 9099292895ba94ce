"""CPU benchmark: the sampler against the Gumbel-max sampler it replaced, beside the lm_head.

For B in {64, 256} rows and V in {49,152 (SmolLM2), 151,936 (Qwen2.5), 262,144 (Gemma 3)}
tokens: ms per decode step of `introspectd.generate.sampling.sample` (T = 1, the protocol's
temperature, and T = 0.7, which adds a division pass), of the old sampler (hashed int64 noise
over the whole [B, V], copied below from commit 0636d19 for this comparison only), and of the
float32 lm_head matmul [B, h] @ [h, V] at h = 576 (SmolLM2-135M) and h = 2048 (Qwen2.5-3B);
each sampler as a % of each matmul. Median of `--repeats` timed calls after one warm-up.

A decode step costs more than its lm_head: at least the matmul FLOPs of every weight. The
last lines turn that into a bound for the two real (h, V) pairs: sampler % of a decode step
<= sampler % of lm_head × lm_head params / all matmul params.

    .venv/bin/python bench/sampler.py [--repeats 3] [--out sampler.json]
    .venv/bin/python bench/sampler.py --batches 8 --vocabs 1000 --repeats 1   # checks the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from introspectd.generate.sampling import sample

_M32 = 0xFFFFFFFF
BATCHES = (64, 256)
VOCABS = (49_152, 151_936, 262_144)
HIDDEN = (576, 2048)
# (name, hidden, layers, intermediate, heads, kv heads, vocab): the real models' shapes.
MODELS = [
    ("SmolLM2-135M", 576, 30, 1536, 9, 3, 49_152),
    ("Qwen2.5-3B", 2048, 36, 11008, 16, 2, 151_936),
]


# --- the old sampler (commit 0636d19), for comparison only -------------------------------


def _old_mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def old_sample(
    logits: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor, temperature: float
) -> torch.Tensor:
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    keys = _old_mix32(lo ^ _old_mix32(hi ^ _old_mix32((steps * 0x9E3779B9) & _M32)))
    token = torch.arange(logits.shape[-1], dtype=torch.int64, device=logits.device)
    x = _old_mix32((keys[:, None] + token[None, :] * 0x61C88647) & _M32)
    x = _old_mix32(x ^ 0x5BD1E995)
    u = ((x >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))
    return (logits.float() / temperature - torch.log(-torch.log(u))).argmax(dim=-1)


# --- timing --------------------------------------------------------------------------------


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


def sampler_ms(batch: int, vocab: int, repeats: int, gen: torch.Generator) -> dict[str, float]:
    logits = torch.randn(batch, vocab, generator=gen) * 3
    seeds = torch.randint(0, 2**62, (batch,), generator=gen)
    steps = torch.randint(0, 200, (batch,), generator=gen)
    return {
        "new_ms": median_ms(partial(sample, logits, seeds, steps, 1.0), repeats),
        "new_t07_ms": median_ms(partial(sample, logits, seeds, steps, 0.7), repeats),
        "old_ms": median_ms(partial(old_sample, logits, seeds, steps, 1.0), repeats),
    }


def lm_head_ms(batch: int, vocab: int, hidden: int, repeats: int, gen: torch.Generator) -> float:
    weight = torch.randn(vocab, hidden, generator=gen) / hidden**0.5
    states = torch.randn(batch, hidden, generator=gen)
    return median_ms(partial(torch.nn.functional.linear, states, weight), repeats)


def one_shape(batch: int, vocab: int, repeats: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    row: dict[str, Any] = {"B": batch, "V": vocab, **sampler_ms(batch, vocab, repeats, gen)}
    for hidden in HIDDEN:
        lm_head = lm_head_ms(batch, vocab, hidden, repeats, gen)
        row[f"lm_head_{hidden}_ms"] = lm_head
        row[f"new_pct_{hidden}"] = round(100 * row["new_ms"] / lm_head, 1)
        row[f"old_pct_{hidden}"] = round(100 * row["old_ms"] / lm_head, 1)
    return row


def matmul_params(hidden: int, layers: int, inter: int, heads: int, kv: int, vocab: int) -> int:
    head_dim = hidden // heads
    attention = hidden * (2 * hidden + 2 * kv * head_dim)  # q and o, k and v
    return layers * (attention + 3 * hidden * inter) + hidden * vocab


def step_bounds(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for name, hidden, layers, inter, heads, kv, vocab in MODELS:
        share = hidden * vocab / matmul_params(hidden, layers, inter, heads, kv, vocab)
        for row in rows:
            if row["V"] == vocab:
                pct = row[f"new_pct_{hidden}"] * share
                lines.append(
                    f"{name}, B={row['B']}: lm_head is {share:.1%} of the matmul FLOPs, so the "
                    f"sampler is <= {pct:.1f}% of a decode step (old: "
                    f"{row[f'old_pct_{hidden}'] * share:.0f}%)"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    parser.add_argument("--vocabs", type=int, nargs="+", default=VOCABS)
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    head = "| B | V | old ms | new ms (T=1) | new ms (T=0.7) | speed-up |"
    head += "".join(f" lm_head h={h} ms | new % | old % |" for h in HIDDEN)
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rows = []
    for batch in args.batches:
        for vocab in args.vocabs:
            row = one_shape(batch, vocab, args.repeats)
            rows.append(row)
            cells = [batch, f"{vocab:,}", row["old_ms"], row["new_ms"], row["new_t07_ms"]]
            cells.append(f"{row['old_ms'] / row['new_ms']:.0f}×")
            for h in HIDDEN:
                cells += [row[f"lm_head_{h}_ms"], row[f"new_pct_{h}"], row[f"old_pct_{h}"]]
            print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    for line in step_bounds(rows):
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
