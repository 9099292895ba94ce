"""The generator backs off when the device runs out of memory, losing and repeating nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import TINY_PLAN, write_plan

from introspectd.generate.generator import CoreSharing, Generator
from introspectd.generate.steering import decoder_layers
from introspectd.protocol.plan import load_plan
from introspectd.run.scheduler import Scheduler
from introspectd.run.session import open_run
from introspectd.run.store import Generation


@contextmanager
def _generator(
    tmp_path: Path, batch_size: int, max_rows: int
) -> Iterator[tuple[Generator, Scheduler]]:
    """A real generator on the tiny model whose forward passes over more than `max_rows` rows
    "run out of memory" — fault injection in the torch model, as a too-large batch on a GPU."""
    plan = load_plan(
        write_plan(tmp_path, TINY_PLAN.replace("batch_size = 8", f"batch_size = {batch_size}"))
    )
    ctx = open_run(plan)
    try:
        generator = Generator(ctx)
        table = generator.compute_vectors(Scheduler.vectors_needed(ctx.tickets))
        generator.load_vectors({key: (data, norm) for key, (data, _, norm) in table.items()})

        def too_big(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if args[0].shape[0] > max_rows:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")

        handle = decoder_layers(generator.runner.model)[0].register_forward_pre_hook(too_big)
        try:
            yield generator, Scheduler(ctx.tickets)
        finally:
            handle.remove()
    finally:
        ctx.close()


def test_out_of_memory_halves_the_batch_and_requeues(tmp_path: Path) -> None:
    with _generator(tmp_path, batch_size=16, max_rows=4) as (generator, scheduler):
        done: list[Generation] = []

        def sink(rows: list[Generation]) -> None:
            done.extend(rows)
            scheduler.complete([g.trial_id for g in rows])

        assert generator.run(scheduler.take, sink, lambda: False, scheduler.requeue_in_flight)
        assert generator.batch_size == 4
        ids = [g.trial_id for g in done]
        assert len(ids) == len(set(ids)) == 32
        assert scheduler.is_finished and scheduler.num_done == 32


def test_out_of_memory_at_batch_one_is_raised(tmp_path: Path) -> None:
    with (
        _generator(tmp_path, batch_size=2, max_rows=0) as (generator, scheduler),
        pytest.raises(torch.OutOfMemoryError),
    ):
        generator.run(scheduler.take, lambda rows: None, lambda: False, scheduler.requeue_in_flight)


def test_a_cpu_run_leaves_a_core_to_a_busy_judge_only() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        slow = CoreSharing(is_active=True)
        for second in range(5):  # 15 trials/s: the judge needs 3% of a core
            slow.on_finished(15, float(second))
        assert torch.get_num_threads() == 2 and slow.is_active
        off = CoreSharing(is_active=False)  # a GPU run, or no judge
        off.on_finished(1, 0.0)
        off.on_finished(1000, 1.0)
        assert torch.get_num_threads() == 2
        fast = CoreSharing(is_active=True)
        fast.on_finished(64, 0.0)
        fast.on_finished(300, 1.0)  # 300 trials/s: 0.6 of a core
        assert torch.get_num_threads() == 1 and not fast.is_active
        fast.on_finished(300, 2.0)
        assert torch.get_num_threads() == 1, "only once"
    finally:
        torch.set_num_threads(before)
