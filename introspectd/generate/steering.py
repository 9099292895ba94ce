"""Per-row residual-stream injection through forward hooks on decoder layers.

One batch may mix concepts, layers, strengths and controls: each hooked layer holds a `[B, d]`
delta whose row i is row i's `strength × concept_vector` when row i injects at that layer, and
zeros otherwise. The hooks read the live `SteeringState`, so the batcher can change rows between
forward passes without re-registering anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from introspectd.generate.layers import decoder_layers


@dataclass
class SteeringState:
    """What the hooks add on the next forward pass.

    `deltas[layer]` is `[B, d]`; `position_mask`, when set, is `[B, S]` (1.0 where a prompt
    position is steered) and applies to a multi-token (prefill) pass; single-token decode passes
    are always steered.
    """

    deltas: dict[int, torch.Tensor] = field(default_factory=dict)
    position_mask: torch.Tensor | None = None


def _make_hook(layer: int, state: SteeringState) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        delta = state.deltas.get(layer)
        if delta is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        # `.to` is free on one device; across several the delta follows this layer's.
        add = delta[:, None, :].to(hidden.device, hidden.dtype)
        if hidden.shape[1] > 1:
            if state.position_mask is None:
                return None
            add = add * state.position_mask[:, :, None].to(hidden.device, hidden.dtype)
        hidden = hidden + add
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    return hook


@contextmanager
def steering(model: nn.Module, state: SteeringState, layers: list[int]) -> Iterator[SteeringState]:
    """Hook `layers` for the duration of the block; hooks are removed even on error."""
    modules = decoder_layers(model)
    handles = [modules[layer].register_forward_hook(_make_hook(layer, state)) for layer in layers]
    try:
        yield state
    finally:
        for handle in handles:
            handle.remove()
