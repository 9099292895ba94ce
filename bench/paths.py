"""The cost of the fallback: trials/s of the shared-prefix engine and of generation through the
model's own cache, on the same model, rows and seeds, in-process (model loaded, no judge).

    python bench/paths.py [--model builtin:tiny] [--trials 128] [--batch-size 32] [--tokens 16]

Prints one JSON line: each path's trials/s, their ratio, and whether the answers are equal.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from introspectd.generate.batcher import Batcher
from introspectd.generate.decoding import BatcherConfig, WorkItem
from introspectd.generate.fallback import CacheBatcher
from introspectd.generate.runner import Runner
from introspectd.protocol.models import resolve_model
from introspectd.protocol.prompts import introspection_messages


class Source:
    def __init__(self, items: list[WorkItem]) -> None:
        self.items, self.finished = list(items), {}  # type: ignore[var-annotated]

    def take(self, n: int) -> list[WorkItem]:
        taken, self.items = self.items[:n], self.items[n:]
        return taken

    def done(self, rows: list[Any]) -> None:
        self.finished.update({r.trial_id: r.token_ids for r in rows})

    def should_stop(self) -> bool:
        return False


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="builtin:tiny")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--trials", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tokens", type=int, default=16)
    args = p.parse_args()
    runner = Runner(resolve_model(args.model, "", "bench"), args.dtype)
    prompt = runner.render(introspection_messages("v2"))
    hidden = int(runner.model.config.get_text_config().hidden_size)
    torch.manual_seed(0)
    direction = torch.randn(hidden)
    items = [
        WorkItem(f"t{i}", i, 1, None if i % 2 else direction * 4.0) for i in range(args.trials)
    ]
    config = BatcherConfig(args.batch_size, args.tokens, 1.0, None, ignore_eos=True)
    result: dict[str, Any] = {"model": args.model, "prompt_tokens": len(prompt), **vars(args)}
    answers = []
    for name, kind in (("shared_prefix", Batcher), ("model_cache", CacheBatcher)):
        source = Source(items)
        start = time.perf_counter()
        kind(runner.model, prompt, runner.eos_ids(), config).run(source, [1])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        result[f"{name}_trials_per_s"] = round(args.trials / (time.perf_counter() - start), 2)
        answers.append(source.finished)
    result["fast_over_fallback"] = round(
        result["shared_prefix_trials_per_s"] / result["model_cache_trials_per_s"], 2
    )
    result["same_answers"] = answers[0] == answers[1]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
