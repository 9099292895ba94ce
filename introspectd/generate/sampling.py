"""Counter-based sampling: one hashed uniform per row, inverted through the row's softmax.

Guarantees, for a whole batch in one pass on device (no per-row generators, no host round trip):
exact draws from softmax(logits / T) (T = 0 is greedy), reproducible from (trial seed, step),
and a trial's token does not depend on which other trials share its batch (where its logits
are bit-identical).

How, and why this way:
- Randomness is `[B]`, not `[B, V]`: each row gets one 53-bit uniform `u` from two 32-bit
  hashes of (seed, step). Hashing a uniform per token (the Gumbel-max sampler this replaced)
  cost ten times the lm_head matmul on a CPU at real vocabulary sizes.
- Inverse CDF over w = softmax(logits / T) in float32, searched in two levels so no long
  float32 running sum loses the tail: a float64 running sum of block masses (256 tokens
  each; the last block may be short) picks the block holding u × total, and a float64
  running sum over that block's weights alone picks the token. A block's mass is a float32
  sum of its 256 weights; PyTorch adds those in a tree of short runs on CPU (cascade sum) and
  on CUDA (per-thread runs, then warp shuffles), so it is off by about 1e-6 relative, the
  size of float32 softmax's own rounding. Each token's probability is w_i / sum(w) to that
  relative error, with no absolute floor: tiny tail probabilities stay proportional. Block
  masses summed in float64 instead would need a float64 copy of the whole `[B, V]`: 20× the
  float32 block sums and more than the softmax itself on a CPU.
- A zero-probability token (logit -inf) is never chosen: each search takes the first entry
  whose running sum exceeds the target, and the target is kept strictly below the total.
- Batch independence: every `[B, V]` kernel here works on each row alone and in an order
  fixed by the row's length (softmax is a per-row kernel on CPU and CUDA; each block sum adds
  256 contiguous tokens), so a row's bits do not depend on its batch-mates.
  On CUDA that holds when V × the logits' element size is a multiple of 16 bytes (the softmax
  kernel's vector loads follow each row's alignment); every vocabulary we run pads to that.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_M32 = 0xFFFFFFFF
BLOCK = 256  # tokens per block of the first search level


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # Chris Wellons' "lowbias32" finaliser on 32-bit values held in int64; wrapped int64
    # products keep the correct low 32 bits, which the mask extracts.
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def uniforms(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One uniform in [0, 1) per row, 53 random bits from (63-bit seed, step): `[B]` float64.

    Two hash chains differing in a salt give 64 bits of state per row; one 32-bit chain alone
    would reach only 2^32 values of u, and distinct (seed, step) pairs would collide in a sweep.
    Integer arithmetic only, so any compiled version gives the same bits.
    """
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    step = (steps * 0x9E3779B9) & _M32
    salted = torch.stack([step, step ^ 0x3C6EF372])  # [2, B]: the two chains at once
    h = _mix32(lo ^ _mix32(hi ^ _mix32(salted)))
    bits = ((h[0] >> 5) << 26) | (h[1] >> 6)  # 27 + 26 bits: exact in a float64
    return bits.to(torch.float64) * 2.0**-53


def weights(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) in float32, `[B, V]`; the caller's logits are left as they were."""
    if temperature == 1.0:
        return torch.softmax(logits, dim=-1, dtype=torch.float32)
    # Divide in float32: bfloat16 logits / T would round to 8 mantissa bits first.
    return torch.softmax(logits.float() / temperature, dim=-1)


def block_sums(w: torch.Tensor) -> torch.Tensor:
    """Mass of each block of `BLOCK` tokens (the last one may be short): `[B, ceil(V/BLOCK)]`
    float64."""
    rows, vocab = w.shape
    full = vocab // BLOCK * BLOCK
    parts = []
    if full:
        blocks = w[:, :full].reshape(rows, full // BLOCK, BLOCK)  # a view: no copy
        parts.append(blocks.sum(-1).double())
    if full < vocab:
        parts.append(w[:, full:].sum(-1, keepdim=True, dtype=torch.float64))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def _first_above(cumulative: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the first index whose running sum exceeds `target` `[B, 1]`, with the target
    held strictly below the row's total so that index always has positive weight."""
    total = cumulative[:, -1:]
    target = torch.minimum(target, torch.nextafter(total, torch.zeros_like(total)))
    found = torch.searchsorted(cumulative, target, right=True)
    return found.clamp_(max=cumulative.shape[1] - 1)  # only NaN rows (no finite logit) reach it


def inverse_cdf(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token per row whose share of the row's running sum of `w` holds `u`: `[B]` int64.

    `w` `[B, V]` non-negative weights (any scale), `u` `[B]` float64 in [0, 1).
    """
    vocab = w.shape[1]
    masses = block_sums(w)
    cumulative = masses.cumsum(-1)
    target = u[:, None] * cumulative[:, -1:]
    block = _first_above(cumulative, target)
    before = torch.where(block > 0, cumulative.gather(1, (block - 1).clamp(min=0)), 0.0)
    # Where u falls inside the chosen block, as a fraction of the block's mass.
    within = (target - before) / masses.gather(1, block)
    index = block * BLOCK + torch.arange(BLOCK, device=w.device)
    inside = index < vocab  # the last block may be short
    mine = torch.where(inside, w.gather(1, index.clamp(max=vocab - 1)).double(), 0.0)
    running = mine.cumsum(-1)
    token = block * BLOCK + _first_above(running, within * running[:, -1:])
    return token.squeeze(1).clamp_(max=vocab - 1)


def sample(
    logits: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Next token per row: `[B]` int64. Temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    return inverse_cdf(weights(logits, temperature), uniforms(seeds, steps))


class DeviceSampler:
    """`sample`, with its `[B]` integer hashing compiled into one kernel on CUDA.

    Why only the hashing: eager, it is ~45 tiny kernels whose launch cost is most of the
    sampler's on a GPU, and integer arithmetic gives the same bits compiled or not. The
    `[B, V]` part stays eager: it is already a handful of bandwidth-bound kernels (softmax,
    partial sums, a gather), and a compiled softmax or block sum picks its reduction order per
    compiled variant (batch size 1 is specialised), which could change a row's bits with its
    batch. Falls back to eager hashing if compilation fails, with the same draws.
    """

    def __init__(self, device: torch.device) -> None:
        self._uniforms: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = uniforms
        if device.type == "cuda":
            self._uniforms = torch.compile(uniforms, dynamic=True)

    def __call__(
        self, logits: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        if temperature <= 0:
            return logits.argmax(dim=-1)
        return inverse_cdf(weights(logits, temperature), self._draw(seeds, steps))

    def _draw(self, seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        try:
            return self._uniforms(seeds, steps)
        except Exception:  # a compiler problem must not stop a sweep; eager gives the same bits
            if self._uniforms is uniforms:
                raise
            self._uniforms = uniforms
            return uniforms(seeds, steps)
