"""The sampler's guarantees: exact draws from softmax(logits / T), never a zero-probability
token, greedy at T = 0, reproducible from (seed, step), independent of batch-mates.

Statistical tests use fixed seeds, so they are deterministic; each compares a chi-squared
statistic with the upper 0.1% point of its distribution, so a correct sampler with other
hash constants would still pass with probability 0.999 per test.
"""

from __future__ import annotations

import torch

from introspectd.generate.sampling import BLOCK, DeviceSampler, inverse_cdf, sample, uniforms

# Upper 0.1% points of chi-squared by degrees of freedom (as printed in standard tables).
CHI2_999 = {4: 18.47, 29: 58.30, 49: 85.35, 99: 148.23, 255: 330.52}

V_ODD = 50_000  # 195 full blocks and an 80-token last block
assert V_ODD % BLOCK != 0
# Likely tokens at block edges, inside the short last block, and its last token.
HEADS = [0, 255, 256, 511, 12_345, 30_001, 49_919, 49_920, 49_999]
# Impossible tokens next to them (an off-by-one at an edge would draw one), and a whole block.
ZEROS = [1, 254, 257, 510, 512, 49_918, 49_921, 49_998, *range(20 * BLOCK, 21 * BLOCK)]


def _zeros(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.int64)


def _draws(logits: torch.Tensor, n: int, temperature: float) -> torch.Tensor:
    """`n` draws from one row of logits, each with its own (seed, step)."""
    chunk, out = max(1000, 10_000_000 // logits.shape[-1]), []
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        seeds = torch.arange(start, start + k, dtype=torch.int64) * 7919 + 12345
        steps = torch.arange(start, start + k, dtype=torch.int64) % 17
        out.append(sample(logits.expand(k, -1), seeds, steps, temperature))
    return torch.cat(out)


def _chi_squared(draws: torch.Tensor, probs: torch.Tensor, bins: list[torch.Tensor]) -> float:
    counts = torch.bincount(draws, minlength=probs.numel()).double()
    stat = 0.0
    for tokens in bins:
        expected = float(probs[tokens].double().sum()) * draws.numel()
        assert expected >= 20, "bins must expect enough draws for the chi-squared to hold"
        stat += (float(counts[tokens].sum()) - expected) ** 2 / expected
    return stat


def _skewed_logits() -> torch.Tensor:
    """About half the mass on `HEADS`, half spread thinly over ~48,000 tail tokens (each
    ~1e-5), and ~2,300 tokens at -inf."""
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(V_ODD, generator=gen) - 4.0
    logits[HEADS] = torch.linspace(4.5, 6.0, len(HEADS))
    impossible = torch.randperm(V_ODD, generator=gen)[:2000]
    impossible = impossible[~torch.isin(impossible, torch.tensor(HEADS))]
    logits[impossible] = float("-inf")
    logits[ZEROS] = float("-inf")
    return logits


def test_draws_follow_a_skewed_softmax_over_a_large_vocabulary() -> None:
    logits = _skewed_logits()
    probs = torch.softmax(logits.double(), -1)
    draws = _draws(logits[None], 8000, 1.0)
    assert torch.isfinite(logits[draws]).all(), "drew a token whose logit is -inf"
    tail = torch.nonzero(torch.isfinite(logits)).squeeze(1)
    tail = tail[~torch.isin(tail, torch.tensor(HEADS))]
    bins = [torch.tensor([h]) for h in HEADS] + list(tail.tensor_split(41))  # 50 bins
    assert _chi_squared(draws, probs, bins) < CHI2_999[49]
    tail_share = float(torch.isin(draws, tail).double().mean())
    assert abs(tail_share - float(probs[tail].sum())) < 0.02


def test_temperature_scales_the_logits() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 1000, generator=gen) * 0.5
    order = logits[0].argsort(descending=True)
    bins = [order[i : i + 1] for i in range(20)] + list(order[20:].tensor_split(10))  # 30 bins
    untempered = torch.softmax(logits[0].double(), -1)
    for temperature in (0.5, 2.0):
        draws = _draws(logits, 20_000, temperature)
        tempered = torch.softmax(logits[0].double() / temperature, -1)
        assert _chi_squared(draws, tempered, bins) < CHI2_999[29]
        assert _chi_squared(draws, untempered, bins) > 10 * CHI2_999[29]


def test_bfloat16_logits_are_tempered_in_float32() -> None:
    # bf16 keeps 8 mantissa bits: 13.0 / 0.7 rounded in bf16 moves that token's odds by ~4%.
    logits = torch.tensor([[13.0, 12.25, 12.0, 11.5, 10.0]], dtype=torch.bfloat16)
    probs = torch.softmax(logits[0].double() / 0.7, -1)
    draws = _draws(logits, 40_000, 0.7)
    bins = [torch.tensor([i]) for i in range(5)]
    assert _chi_squared(draws, probs, bins) < CHI2_999[4]


def test_zero_probability_tokens_are_never_drawn() -> None:
    logits = torch.full((1, V_ODD), float("-inf"))
    possible = torch.tensor([3, 255, 49_920, 49_999])
    logits[0, possible] = torch.tensor([0.0, -20.0, 1.0, -3.0])
    for temperature in (1.0, 0.3, 5.0):
        draws = _draws(logits, 1500, temperature)
        assert torch.isin(draws, possible).all()
    assert set(draws.tolist()) == set(possible.tolist())
    only = torch.full((1, 3000), float("-inf"))
    only[0, 2999] = 0.0
    assert (_draws(only, 500, 1.0) == 2999).all()


def test_the_extreme_uniforms_land_on_the_first_and_last_possible_token() -> None:
    lowest, highest = torch.tensor([0.0], dtype=torch.float64), torch.tensor([1 - 2.0**-53])
    highest = highest.double()
    for vocab, possible in [(1000, [300, 700]), (1000, [256, 999]), (600, [513, 520])]:
        w = torch.zeros(1, vocab)
        w[0, possible] = torch.tensor([1e-30, 1e-30])  # tiny masses keep their place too
        assert int(inverse_cdf(w, lowest)) == possible[0]
        assert int(inverse_cdf(w, highest)) == possible[1]


def test_a_thin_tail_after_a_heavy_token_keeps_its_share() -> None:
    # One token of weight 1, then 149,999 of 1e-11: the tail is 1.5e-6 of the mass, about 13
    # float32 roundings of 1, so a float32 running sum over the vocabulary reaches only a
    # handful of tail tokens whichever u it is given.
    vocab, tiny, n = 150_000, 1e-11, 2000
    w = torch.full((1, vocab), tiny)
    w[0, 0] = 1.0
    tail_share = (vocab - 1) * tiny / (1 + (vocab - 1) * tiny)
    # u evenly spaced over the tail's part of [0, 1): each tenth of the tail gets a tenth.
    u = 1 - tail_share * (torch.arange(n, dtype=torch.float64) + 0.5) / n
    tokens = inverse_cdf(w.expand(n, -1), u)
    assert bool((tokens > 0).all())
    tenths = torch.bucketize(tokens, torch.linspace(1, vocab, 11)[1:-1], right=True)
    counts = torch.bincount(tenths, minlength=10)
    assert bool(((counts - n / 10).abs() <= 0.05 * n / 10).all()), counts.tolist()


def test_greedy_at_temperature_zero() -> None:
    logits = torch.randn(8, V_ODD, generator=torch.Generator().manual_seed(5))
    seeds = torch.arange(8, dtype=torch.int64)
    for temperature in (0.0, -1.0):
        assert torch.equal(sample(logits, seeds, _zeros(8), temperature), logits.argmax(-1))


def test_a_row_draws_the_same_alone_in_a_batch_and_reordered() -> None:
    gen = torch.Generator().manual_seed(11)
    for vocab in (V_ODD, 49_152):
        logits = torch.randn(24, vocab, generator=gen) * 4
        logits[:, torch.randperm(vocab, generator=gen)[:500]] = float("-inf")
        seeds = torch.randint(0, 2**63 - 1, (24,), generator=gen)
        steps = torch.randint(0, 300, (24,), generator=gen)
        for temperature in (1.0, 0.7):
            alone = [
                int(sample(logits[i : i + 1], seeds[i : i + 1], steps[i : i + 1], temperature))
                for i in range(24)
            ]
            assert sample(logits, seeds, steps, temperature).tolist() == alone
            perm = torch.randperm(24, generator=gen)
            reordered = sample(logits[perm], seeds[perm], steps[perm], temperature)
            assert reordered.tolist() == [alone[i] for i in perm.tolist()]
            # Among strangers: twice over, next to other rows with other logits.
            others = torch.randn(40, vocab, generator=gen)
            mixed = torch.cat([others[:20], logits, others[20:], logits])
            both = torch.cat([torch.arange(20), seeds, torch.arange(20, 40), seeds])
            at = torch.cat([_zeros(20), steps, _zeros(20), steps])
            drawn = sample(mixed, both, at, temperature).tolist()
            assert drawn[20:44] == alone and drawn[64:] == alone
        assert len(set(alone)) > 20


def test_the_device_sampler_draws_what_sample_draws() -> None:
    logits = torch.randn(16, 3000, generator=torch.Generator().manual_seed(2))
    seeds, steps = torch.arange(16, dtype=torch.int64), torch.arange(16, dtype=torch.int64)
    sampler = DeviceSampler(torch.device("cpu"))
    for temperature in (0.0, 1.0, 1.3):
        assert torch.equal(
            sampler(logits, seeds, steps, temperature), sample(logits, seeds, steps, temperature)
        )


def test_draws_are_reproducible_from_seed_and_step() -> None:
    flat = torch.zeros(1, V_ODD)
    seeds = torch.tensor([5, 5, 6, 5], dtype=torch.int64)
    steps = torch.tensor([0, 1, 0, 0], dtype=torch.int64)
    first = sample(flat.expand(4, -1), seeds, steps, 1.0).tolist()
    assert sample(flat.expand(4, -1), seeds, steps, 1.0).tolist() == first
    assert first[0] == first[3], "same (seed, step), same draw"
    assert len({first[0], first[1], first[2]}) == 3
    by_step = sample(flat.expand(64, -1), torch.full((64,), 5), torch.arange(64), 1.0)
    assert len(set(by_step.tolist())) >= 60, "a trial's steps must draw afresh"


def test_different_seeds_draw_differently() -> None:
    flat = torch.zeros(256, V_ODD)
    by_seed = sample(flat, torch.arange(256, dtype=torch.int64), _zeros(256), 1.0)
    # 256 uniform draws from 50,000 tokens collide less than once on average.
    assert len(set(by_seed.tolist())) >= 250


def test_uniforms_use_53_bits_spread_evenly() -> None:
    seeds = torch.arange(1000, dtype=torch.int64).repeat_interleave(200)
    steps = torch.arange(200, dtype=torch.int64).repeat(1000)
    u = uniforms(seeds, steps)
    assert u.dtype == torch.float64 and bool((u >= 0).all()) and bool((u < 1).all())
    bits = (u * 2.0**53).to(torch.int64)
    assert torch.equal(bits.double(), u * 2.0**53), "u must be a multiple of 2^-53"
    # One 32-bit hash would reach 2^32 values: ~5 of these 200,000 pairs would collide.
    assert bits.unique().numel() == u.numel()
    n = u.numel()
    for values, bins in ((torch.floor(u * 100).long(), 100), (bits & 255, 256)):
        counts = torch.bincount(values, minlength=bins).double()
        stat = float(((counts - n / bins) ** 2 / (n / bins)).sum())
        assert stat < CHI2_999[bins - 1]
    assert torch.equal(uniforms(seeds[:5], steps[:5]), u[:5])
