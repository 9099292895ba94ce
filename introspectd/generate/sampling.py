"""Counter-based sampling: each row's randomness depends only on (trial seed, step, token).

Gumbel-max over hashed noise draws exactly from softmax(logits / T), on device, for a whole
batch in one pass, and a trial's tokens do not depend on which other trials share its batch
(where its logits are bit-identical). No per-row generator objects, no host round trip.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # Chris Wellons' "lowbias32" finaliser on 32-bit values held in int64; wrapped int64
    # products keep the correct low 32 bits, which the mask extracts.
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per row from a 63-bit seed and the decode step: `[B]` int64."""
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    return _mix32(lo ^ _mix32(hi ^ _mix32((steps * 0x9E3779B9) & _M32)))


def uniform_noise(keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """`[B, V]` uniforms in (0, 1), one per (row key, token)."""
    token = torch.arange(vocab_size, device=keys.device, dtype=torch.int64)
    x = _mix32((keys[:, None] + token[None, :] * 0x61C88647) & _M32)
    x = _mix32(x ^ 0x5BD1E995)
    return ((x >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def sample(
    logits: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Next token per row: `[B]` int64. Temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    u = uniform_noise(row_keys(seeds, steps), logits.shape[-1])
    gumbel = -torch.log(-torch.log(u))
    return (logits.float() / temperature + gumbel).argmax(dim=-1)


class DeviceSampler:
    """`sample`, fused into one kernel by torch.compile on CUDA (eager elsewhere).

    Eager hashing of a [B, V] noise tensor streams several GB per step through HBM at Qwen's
    vocabulary size; fused, it reads the logits once. Falls back to eager if compilation fails.
    """

    def __init__(self, device: torch.device) -> None:
        self._fn = sample
        if device.type == "cuda":
            self._fn = torch.compile(sample, dynamic=True)

    def __call__(
        self, logits: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        try:
            return self._fn(logits, seeds, steps, temperature)
        except Exception:  # a compiler problem must not stop a sweep; eager is exact too
            if self._fn is sample:
                raise
            self._fn = sample
            return sample(logits, seeds, steps, temperature)
