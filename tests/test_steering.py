"""Hooks add exactly each row's own delta at its own layer, and nothing anywhere else."""

from __future__ import annotations

import pytest
import torch

from introspectd.generate.steering import SteeringState, decoder_layers, steering


def _layer_outputs(
    model: torch.nn.Module, ids: torch.Tensor, state: SteeringState | None, hooked: list[int]
) -> list[torch.Tensor]:
    """Each decoder layer's output, captured by hooks registered after any steering hooks."""
    captured: list[torch.Tensor] = []

    def capture(module: torch.nn.Module, args: object, out: object) -> None:
        captured.append((out[0] if isinstance(out, tuple) else out).clone())  # type: ignore[union-attr]

    with torch.inference_mode(), steering(model, state or SteeringState(), hooked):
        handles = [layer.register_forward_hook(capture) for layer in decoder_layers(model)]
        try:
            model(input_ids=ids)
        finally:
            for h in handles:
                h.remove()
    return captured


def test_each_row_gets_its_own_vector_at_its_own_layer(tiny_runner) -> None:  # type: ignore[no-untyped-def]
    model = tiny_runner.model
    d = model.config.hidden_size
    ids = torch.tensor([[5, 6, 7]] * 3)
    gen = torch.Generator().manual_seed(0)
    v1, v3 = torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    # Row 0 injects at layer 1, row 1 at layer 3, row 2 is a control.
    deltas = {
        1: torch.stack([v1, torch.zeros(d), torch.zeros(d)]),
        3: torch.stack([torch.zeros(d), v3, torch.zeros(d)]),
    }
    # A single-token pass is a decode step: steered at every position.
    state = SteeringState(deltas=deltas)
    plain = _layer_outputs(model, ids[:, :1], None, [])
    steered_layer1_only = SteeringState(deltas={1: deltas[1]})
    out = _layer_outputs(model, ids[:, :1], steered_layer1_only, [1])
    # Layer 0 untouched; layer 1's output is exactly the plain output plus row 0's vector.
    assert torch.equal(out[0], plain[0])
    assert torch.equal(out[1][0], plain[1][0] + v1[None])
    assert torch.equal(out[1][1:], plain[1][1:])
    both = _layer_outputs(model, ids[:, :1], state, [1, 3])
    assert torch.equal(both[1], out[1])
    # The control row (2) is bit-identical to an unhooked run through every layer.
    for layer_out, plain_out in zip(both, plain, strict=True):
        assert torch.equal(layer_out[2], plain_out[2])
    # Row 1 is untouched until layer 3, then receives exactly v3 on top of its own stream.
    assert torch.equal(both[2][1], plain[2][1])
    assert torch.equal(both[3][1], plain[3][1] + v3[None])


def test_prefill_is_untouched_without_position_mask(tiny_runner) -> None:  # type: ignore[no-untyped-def]
    """`generation` style: multi-token (prompt) passes are not steered."""
    model = tiny_runner.model
    ids = torch.tensor([[5, 6, 7, 8]])
    delta = {2: torch.ones(1, model.config.hidden_size)}
    plain = _layer_outputs(model, ids, None, [])
    out = _layer_outputs(model, ids, SteeringState(deltas=delta), [2])
    assert all(torch.equal(a, b) for a, b in zip(out, plain, strict=True))


def test_position_mask_steers_only_marked_prompt_positions(tiny_runner) -> None:  # type: ignore[no-untyped-def]
    model = tiny_runner.model
    ids = torch.tensor([[5, 6, 7, 8]])
    delta = torch.ones(1, model.config.hidden_size)
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    plain = _layer_outputs(model, ids, None, [])
    out = _layer_outputs(model, ids, SteeringState(deltas={2: delta}, position_mask=mask), [2])
    assert torch.equal(out[2][0, :2], plain[2][0, :2])
    assert torch.equal(out[2][0, 2:], plain[2][0, 2:] + delta)


def test_hooks_are_removed_even_on_error(tiny_runner) -> None:  # type: ignore[no-untyped-def]
    layers = decoder_layers(tiny_runner.model)
    before = [len(layer._forward_hooks) for layer in layers]
    with pytest.raises(RuntimeError), steering(tiny_runner.model, SteeringState(), [1, 2]):
        raise RuntimeError("boom")
    assert [len(layer._forward_hooks) for layer in layers] == before
