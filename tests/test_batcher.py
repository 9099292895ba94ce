"""The optimised engine produces the tokens of the plain one-trial-at-a-time reference path."""

from __future__ import annotations

from collections import Counter

import pytest
from helpers import hf_reference

from introspectd.generate.batcher import Batcher
from introspectd.generate.decoding import BatcherConfig, Finished, WorkItem
from introspectd.protocol.prompts import baseline_words, introspection_messages

LAYERS = [1, 3]
MAX_NEW = 20


@pytest.fixture(scope="module", params=["tiny", "tiny-llama"])
def setup(request, tiny_runner):  # type: ignore[no-untyped-def]
    """Qwen2 (biased projections, GQA) and Llama: both take the shared-prefix attention path."""
    if request.param == "tiny":
        runner = tiny_runner
    else:
        from introspectd.generate.runner import Runner
        from introspectd.protocol.models import resolve_model

        runner = Runner(resolve_model(f"builtin:{request.param}", "", "test"))
    return _setup(runner)


def _setup(tiny_runner):  # type: ignore[no-untyped-def]
    prompt = tiny_runner.render(introspection_messages("v2"))
    vectors = tiny_runner.concept_vectors(
        ["fear", "ocean"], baseline_words(["fear", "ocean"]), LAYERS, use_chat=False
    )
    items = []
    for i in range(11):
        layer = LAYERS[i % 2]
        concept = ("fear", "ocean")[i % 3 % 2]
        delta = None if i % 4 == 0 else vectors[(concept, layer)] * (1.0 + i % 3)
        items.append(WorkItem(f"t{i}", 1000 + i, layer, delta))
    # An end-of-turn token that greedy decoding actually emits, so rows finish at different
    # steps and refill/compaction are exercised.
    plain = {it.trial_id: hf_reference(tiny_runner, prompt, it, [], MAX_NEW) for it in items}
    counts = Counter(tok for toks in plain.values() for tok in toks[2:12])
    eos = [counts.most_common(1)[0][0]]
    refs = {it.trial_id: hf_reference(tiny_runner, prompt, it, eos, MAX_NEW) for it in items}
    lengths = {len(v) for v in refs.values()}
    assert len(lengths) > 2, f"want rows finishing at different steps, got {lengths}"
    return tiny_runner, prompt, items, eos, refs


def _run(
    runner,
    prompt: list[int],
    items: list[WorkItem],
    eos: list[int],  # type: ignore[no-untyped-def]
    **flags: object,
) -> dict[str, list[int]]:
    config = BatcherConfig(
        **{"batch_size": 4, "max_new_tokens": MAX_NEW, "temperature": 0.0, **flags}
    )  # type: ignore[arg-type]
    batcher = Batcher(runner.model, prompt, eos, config)
    rows = _Rows(items)
    assert batcher.run(rows, LAYERS)
    return rows.got


class _Rows:
    """A RowSource over a list: hands out `items` in order, keeps each finished row once."""

    def __init__(self, items: list[WorkItem], num_checks: int | None = None) -> None:
        self.queue = list(items)
        self.got: dict[str, list[int]] = {}
        self.checks_left = num_checks  # should_stop turns True after this many checks

    def take(self, n: int) -> list[WorkItem]:
        taken = self.queue[:n]
        del self.queue[:n]
        return taken

    def done(self, rows: list[Finished]) -> None:
        for row in rows:
            assert row.trial_id not in self.got
            self.got[row.trial_id] = row.token_ids

    def should_stop(self) -> bool:
        if self.checks_left is None:
            return False
        self.checks_left -= 1
        return self.checks_left < 0


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"share_prefix": False},
        {"compact": False},
        {"refill": False},
        {"check_every": 3},
        {"share_prefix": False, "compact": False, "refill": False},
        {"batch_size": 1},
    ],
)
def test_greedy_tokens_equalhf_reference(setup, flags: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    runner, prompt, items, eos, refs = setup
    assert _run(runner, prompt, items, eos, **flags) == refs


def test_all_style_steers_the_prompt_too(setup) -> None:  # type: ignore[no-untyped-def]
    runner, prompt, items, eos, refs = setup
    got = _run(runner, prompt, items, eos, prompt_steer_from=0)
    controls = [it.trial_id for it in items if it.delta is None]
    injected = [it.trial_id for it in items if it.delta is not None]
    assert all(got[t] == refs[t] for t in controls)
    assert any(got[t] != refs[t] for t in injected)


@pytest.mark.parametrize("steer_from", [0, 40])
def test_prompt_steering_equalshf_reference(setup, steer_from: int) -> None:  # type: ignore[no-untyped-def]
    """ "all" (0) and "from_marker" (a later position) steer the prompt from that position on."""
    runner, prompt, items, eos, _ = setup
    expected = {
        it.trial_id: hf_reference(runner, prompt, it, eos, MAX_NEW, steer_from) for it in items
    }
    assert _run(runner, prompt, items, eos, prompt_steer_from=steer_from) == expected


def test_marker_position_points_at_the_marker(tiny_runner) -> None:  # type: ignore[no-untyped-def]
    messages = introspection_messages("v1")
    ids = tiny_runner.render(messages)
    at = tiny_runner.marker_position(messages, "Trial 1")
    assert tiny_runner.tokenizer.decode(ids[at:]).lstrip().startswith("Trial 1")
    assert "Trial 1" not in tiny_runner.tokenizer.decode(ids[at + 1 :])


def test_stop_abandons_rows_without_reporting_them(setup) -> None:  # type: ignore[no-untyped-def]
    runner, prompt, items, eos, _ = setup
    batcher = Batcher(runner.model, prompt, eos, BatcherConfig(4, MAX_NEW, 0.0))
    rows = _Rows(items, num_checks=3)
    assert batcher.run(rows, LAYERS) is False
    assert len(rows.got) < len(items)


def test_sampled_tokens_do_not_depend_on_batch_mates(setup) -> None:  # type: ignore[no-untyped-def]
    runner, prompt, items, eos, _ = setup
    flags = {"temperature": 1.0, "compact": False, "refill": False, "batch_size": len(items)}
    forward = _run(runner, prompt, items, eos, **flags)
    backward = _run(runner, prompt, list(reversed(items)), eos, **flags)
    assert forward == backward
    assert len({tuple(v) for v in forward.values()}) > 1


def test_the_startup_check_passes_in_bfloat16_and_catches_a_lost_prompt(tiny_runner) -> None:  # type: ignore[no-untyped-def]
    from introspectd.generate.runner import Runner
    from introspectd.protocol.models import resolve_model

    prompt = tiny_runner.render(introspection_messages("v2"))
    config = BatcherConfig(4, MAX_NEW, 1.0)
    assert tiny_runner.batcher(prompt, config).check_against_plain_forward() < 1e-5
    half = Runner(resolve_model("builtin:tiny", "", "test"), dtype="bfloat16")
    assert half.batcher(prompt, config).check_against_plain_forward() < 0.5

    class LosesThePrompt(Batcher):
        """Fault injection: a cache that keeps only the prompt's last five positions."""

        def _new_cache(self, num_slots: int | None = None):  # type: ignore[no-untyped-def]
            cache, logits = super()._new_cache(num_slots)
            cache.prefix = [(k[:, :, -5:], v[:, :, -5:]) for k, v in cache.prefix]
            return cache, logits

    for runner in (tiny_runner, half):
        broken = LosesThePrompt(runner.model, prompt, runner.eos_ids(), config)
        with pytest.raises(ValueError, match="differ from the model's own forward pass"):
            broken.check_against_plain_forward()


@pytest.mark.parametrize("ends_by", ["fault", "stop"])
def test_a_fallback_batch_that_ends_early_leaves_no_steering_behind(setup, ends_by: str) -> None:  # type: ignore[no-untyped-def]
    """A fault inside a decode step, or a stop between two, ends the fallback's batch with its
    hooks removed and its steering state empty: no row's delta reaches a later forward pass."""
    import torch

    from introspectd.generate.fallback import CacheBatcher
    from introspectd.generate.steering import decoder_layers

    runner, prompt, items, eos, _ = setup
    config = BatcherConfig(4, MAX_NEW, 0.0, prompt_steer_from=0)
    batcher = CacheBatcher(runner.model, prompt, eos, config)
    layers = decoder_layers(runner.model)
    before = [len(layer._forward_hooks) for layer in layers]
    seen: dict[str, object] = {}
    num_passes = {"n": 0}

    def fails_in_a_decode_step(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        num_passes["n"] += 1
        if num_passes["n"] == 3:  # the prefill, one decode step, then this one
            seen["deltas"] = dict(batcher.state.deltas)
            raise RuntimeError("device-side assert triggered (injected)")

    if ends_by == "fault":
        handle = layers[0].register_forward_pre_hook(fails_in_a_decode_step)
        try:
            with pytest.raises(RuntimeError, match="injected"):
                batcher.run(_Rows(items), LAYERS)
        finally:
            handle.remove()
        assert seen["deltas"], "the rows were being steered when the fault came"
    else:
        assert batcher.run(_Rows(items, num_checks=3), LAYERS) is False
        assert batcher.num_decode_steps > 0
    assert batcher.state.deltas == {} and batcher.state.position_mask is None
    assert [len(layer._forward_hooks) for layer in layers] == before
