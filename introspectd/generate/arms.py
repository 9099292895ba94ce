"""What each arm adds to the residual stream: the concept's vector, nothing, or a random
direction with the concept vector's norm."""

from __future__ import annotations

import torch

from introspectd.protocol.trials import Arm, TrialSpec


def random_direction(seed: int, norm: float, dim: int) -> torch.Tensor:
    """A direction uniform on the sphere of radius `norm` in `dim` dimensions, float32 on the
    CPU. Drawn from its own generator seeded by the trial's seed, so it depends on that trial
    alone: not on the device, the batch it runs in, or what ran before."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    direction = torch.randn(dim, generator=generator, dtype=torch.float32)
    return direction * (norm / direction.norm())


def arm_delta(
    spec: TrialSpec,
    vectors: dict[tuple[str, int], torch.Tensor],
    seed: int,
    residual_norms: dict[int, float] | None = None,
) -> torch.Tensor | None:
    """What the trial's arm adds (float32, CPU); None for a control trial.

    Raw units (`residual_norms` None): strength × the concept's vector, or × a random direction
    of the vector's norm. Residual units: strength × the layer's mean residual norm × the
    vector's direction, so ‖delta‖ = strength × residual norm (the record's `magnitude`); the
    random arm's direction gets that same norm."""
    if spec.arm is Arm.CONTROL:
        return None
    vector = vectors[(spec.concept, spec.layer)]
    norm = float(vector.norm()) if residual_norms is None else residual_norms[spec.layer]
    if spec.arm is Arm.RANDOM:
        vector = random_direction(seed, norm, vector.numel())
    elif residual_norms is not None:
        vector = vector * (norm / float(vector.norm()))
    return vector * spec.strength
