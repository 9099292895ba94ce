"""The generator backs off when the device runs out of memory, losing and repeating nothing,
and refuses a model or prompt it cannot steer as the plan asks with one line, not a traceback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import TINY_PLAN, KeptWork, write_plan

from introspectd.cli import main
from introspectd.generate.builtin import BUILTIN_SPECS, build
from introspectd.generate.generator import Generator
from introspectd.generate.interface import GeneratorSpec
from introspectd.generate.session import CoreSharing
from introspectd.generate.steering import decoder_layers
from introspectd.protocol.models import resolve_model
from introspectd.protocol.plan import load_plan
from introspectd.run.scheduler import Scheduler
from introspectd.run.session import open_run


@contextmanager
def _generator(
    tmp_path: Path, batch_size: int, max_rows: int
) -> Iterator[tuple[Generator, KeptWork]]:
    """A real generator on the tiny model whose forward passes over more than `max_rows` rows
    "run out of memory" — fault injection in the torch model, as a too-large batch on a GPU."""
    plan = load_plan(
        write_plan(tmp_path, TINY_PLAN.replace("batch_size = 8", f"batch_size = {batch_size}"))
    )
    ctx = open_run(plan)
    try:
        spec = GeneratorSpec.of(ctx.plan, ctx.ref, ctx.layers, ctx.run.stamp, ctx.run.baseline)
        generator = Generator(spec)
        table = generator.session.compute_vectors(Scheduler.vectors_needed(ctx.pending))
        generator.session.load_vectors(
            {key: (data, norm) for key, (data, _, norm) in table.items()}
        )

        def too_big(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if args[0].shape[0] > max_rows:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")

        handle = decoder_layers(generator.runner.model)[0].register_forward_pre_hook(too_big)
        try:
            yield generator, KeptWork(ctx.pending)
        finally:
            handle.remove()
    finally:
        ctx.close()


def test_out_of_memory_halves_the_batch_and_requeues(tmp_path: Path) -> None:
    with _generator(tmp_path, batch_size=16, max_rows=4) as (generator, work):
        assert generator.run(work)
        assert generator.session.batch_size == 4
        ids = [g.trial_id for g in work.generations]
        assert len(ids) == len(set(ids)) == 32
        assert work.scheduler.is_finished and work.scheduler.num_done == 32


def test_out_of_memory_at_batch_one_is_raised(tmp_path: Path) -> None:
    with (
        _generator(tmp_path, batch_size=2, max_rows=0) as (generator, work),
        pytest.raises(torch.OutOfMemoryError),
    ):
        generator.run(work)


def test_a_cpu_run_leaves_a_core_to_a_busy_judge_only() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        slow = CoreSharing(is_active=True)
        for second in range(5):  # 15 trials/s: the judge needs 4% of a core
            slow.on_finished(15, float(second))
        assert torch.get_num_threads() == 2 and slow.is_active
        off = CoreSharing(is_active=False)  # a GPU run, or no judge
        off.on_finished(1, 0.0)
        off.on_finished(1000, 1.0)
        assert torch.get_num_threads() == 2
        fast = CoreSharing(is_active=True)
        fast.on_finished(64, 0.0)
        fast.on_finished(300, 1.0)  # 300 trials/s: 0.8 of a core
        assert torch.get_num_threads() == 1 and not fast.is_active
        fast.on_finished(300, 2.0)
        assert torch.get_num_threads() == 1, "only once"
    finally:
        torch.set_num_threads(before)


def _copy_of_tiny(tmp_path: Path, name: str) -> Path:
    """The built-in tiny model's files in a directory of the test's own, to edit."""
    source = build(BUILTIN_SPECS["tiny"], Path(resolve_model("builtin:tiny", "", "test").source))
    return Path(shutil.copytree(source, tmp_path / name))


def test_a_marker_the_chat_template_hides_is_refused_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Llama 3's template trims each message: a prompt_user ending in a newline is not in the
    rendered prompt as written, and steering from a guessed position would be silently wrong."""
    model_dir = _copy_of_tiny(tmp_path, "trimming")
    template = model_dir / "chat_template.jinja"
    trimmed = template.read_text().replace("message['content']", "message['content'] | trim")
    template.write_text(trimmed)
    user = "Do you notice an injected thought? Trial 1: say what it is about.\\n"
    plan = write_plan(
        tmp_path,
        TINY_PLAN.replace('"builtin:tiny"', f'"{model_dir}"')
        + f'inject_style = "from_marker"\nprompt_user = "{user}"\n',
    )
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "".join(err)
    assert err[-1].startswith(f"introspectd: {plan}: [sweep] marker: 'Trial 1' is not in the user")
    assert all(p.read_text() == "" for p in (tmp_path / "out").rglob("*.jsonl"))


def test_a_fault_in_the_first_batch_is_one_line_and_a_later_one_is_not_hidden(
    tmp_path: Path,
) -> None:
    """Before any answer is recorded, a failing forward pass is the model's: BadInput naming
    it. Once answers are recorded, the same fault propagates as itself (a machine fault)."""
    from introspectd.errors import BadInput

    with _generator(tmp_path, batch_size=4, max_rows=64) as (generator, work):
        num_passes = {"n": 0, "fail_after": 0}

        def fails(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            num_passes["n"] += 1
            if num_passes["n"] > num_passes["fail_after"]:
                raise RuntimeError("device-side assert triggered (injected)")

        layer = decoder_layers(generator.runner.model)[1]
        handle = layer.register_forward_pre_hook(fails)
        try:
            with pytest.raises(BadInput, match=r"generating the first batch.*device-side assert"):
                generator.run(work)
            assert not work.generations
            work.requeue()
            num_passes.update(n=0, fail_after=40)  # the first batch finishes, later ones fail
            with pytest.raises(RuntimeError, match="device-side assert"):
                generator.run(work)
            assert work.generations  # what finished before the fault was handed over
        finally:
            handle.remove()
