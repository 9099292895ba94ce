"""CPU benchmark: logit mode (`measure = "logit"`) against generation at 200 new tokens, on the
same plan shape: 2 concepts × 2 layers × 2 strengths × N trials × {injection, control} on the
built-in random-weights `tiny` model. Times each generator's `run` over every trial of the plan
(model load and concept vectors excluded, as both pay them alike; one warm-up batch each);
no judge. Logit passes are short, so their time is the median of `--repeats` passes, each
starting with no read-out to reuse (`LogitEngine.known` cleared).

    python bench/logit.py [--trials 16] [--model tiny]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from helpers import KeptWork, write_plan  # noqa: E402

from introspectd.generate.generator import Generator  # noqa: E402
from introspectd.generate.interface import GeneratorSpec  # noqa: E402
from introspectd.generate.logit import LogitEngine  # noqa: E402
from introspectd.protocol.plan import load_plan  # noqa: E402
from introspectd.run.scheduler import Scheduler  # noqa: E402
from introspectd.run.session import open_run  # noqa: E402

PLAN = """
[model]
name = "builtin:{model}"

[sweep]
concepts = ["ocean", "fear"]
layers = [1, 3]
strengths = [2.0, 4.0]
trials = {trials}
max_new_tokens = 200
batch_size = 64
inject_style = "all"
{extra}
"""


def timed(
    directory: Path, model: str, trials: int, extra: str, logit: bool, repeats: int = 1
) -> dict[str, float]:
    """Trials/s of one generator over every trial of the plan: the median of `repeats` passes,
    after one untimed warm-up batch (first-call allocations)."""
    body = PLAN.format(model=model, trials=trials, extra=extra)
    directory.mkdir(parents=True, exist_ok=True)
    ctx = open_run(load_plan(write_plan(directory, body)))
    try:
        spec = GeneratorSpec.of(ctx.plan, ctx.ref, ctx.layers, ctx.run.stamp, ctx.run.baseline)
        generator = LogitEngine(spec) if logit else Generator(spec)
        table = generator.session.compute_vectors(Scheduler.vectors_needed(ctx.pending))
        generator.session.load_vectors({k: (data, norm) for k, (data, _, norm) in table.items()})
        generator.run(KeptWork(list(ctx.pending)[: generator.session.batch_size]))
        times = []
        for _ in range(repeats):
            if isinstance(generator, LogitEngine):
                generator.known.clear()  # each pass starts cold: reuse only within the pass
            work = KeptWork(list(ctx.pending))
            start = time.perf_counter()
            generator.run(work)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
    finally:
        ctx.close()
    n = len(work.generations)
    tokens = sum(g.num_new_tokens for g in work.generations)
    return {
        "trials": n,
        "seconds": round(seconds, 2),
        "trials_per_s": round(n / seconds, 1),
        "mean_new_tokens": round(tokens / n, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--repeats", type=int, default=5, help="logit passes (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate = timed(Path(tmp, "g"), args.model, args.trials, "", logit=False)
        logit = timed(
            Path(tmp, "l"),
            args.model,
            args.trials,
            'measure = "logit"\nprompt_version = "yesno"',
            logit=True,
            repeats=args.repeats,
        )
    result = {
        "generate_200_tokens": generate,
        "logit": logit,
        "speedup": round(logit["trials_per_s"] / generate["trials_per_s"], 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
