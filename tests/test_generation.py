"""The generator backs off when the device runs out of memory, losing and repeating nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY_PLAN, write_plan

from introspectd.generation import Generator
from introspectd.plan import load_plan
from introspectd.scheduler import Scheduler
from introspectd.session import open_run
from introspectd.steering import decoder_layers
from introspectd.store import Generation


def test_out_of_memory_halves_the_batch_and_requeues(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path, TINY_PLAN.replace("batch_size = 8", "batch_size = 16")))
    ctx = open_run(plan)
    try:
        generator = Generator(ctx)
        generator.load_vectors(
            {
                k: (v[0], v[2])
                for k, v in generator.compute_vectors(Scheduler.vectors_needed(ctx.tickets)).items()
            }
        )
        scheduler = Scheduler(ctx.tickets)

        # Fault injection in the torch model itself: any pass over more than 4 rows "runs out
        # of memory", as a too-large batch would on a GPU.
        def too_big(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if args[0].shape[0] > 4:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")

        handle = decoder_layers(generator.runner.model)[0].register_forward_pre_hook(too_big)
        done: list[Generation] = []

        def sink(rows: list[Generation]) -> None:
            done.extend(rows)
            scheduler.complete([g.trial_id for g in rows])

        try:
            assert generator.run(scheduler.take, sink, lambda: False, scheduler.requeue_in_flight)
        finally:
            handle.remove()
        assert generator.batch_size == 4
        ids = [g.trial_id for g in done]
        assert len(ids) == len(set(ids)) == 32
        assert scheduler.is_finished and scheduler.num_done == 32
    finally:
        ctx.close()


def test_out_of_memory_at_batch_one_is_raised(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path, TINY_PLAN.replace("batch_size = 8", "batch_size = 2")))
    ctx = open_run(plan)
    try:
        generator = Generator(ctx)
        generator.load_vectors(
            {
                k: (v[0], v[2])
                for k, v in generator.compute_vectors(Scheduler.vectors_needed(ctx.tickets)).items()
            }
        )
        scheduler = Scheduler(ctx.tickets)

        def always(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

        handle = decoder_layers(generator.runner.model)[0].register_forward_pre_hook(always)
        try:
            with pytest.raises(torch.OutOfMemoryError):
                generator.run(
                    scheduler.take, lambda rows: None, lambda: False, scheduler.requeue_in_flight
                )
        finally:
            handle.remove()
    finally:
        ctx.close()
