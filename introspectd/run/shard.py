"""Sharded runs: which share of a plan's trials one process (one Cloud Batch task) runs.

A shard is "I/N": process I of N (0-based, as Cloud Batch numbers its tasks). `select_shard`
gives every shard a contiguous window of one fixed interleaving of the plan:

* trial number is the slowest key, so a window of `C` consecutive trials (C = arms × concepts
  × layers × strengths, one "cycle") holds every (concept, layer, strength, kind) exactly once;
* within a cycle the combinations follow a *diagonal* order: with mixed-radix digits
  (a0, a1, a2, a3) of the position (kind fastest), kind = a0, concept = a0+a1, layer = a0+a1+a2,
  strength = a0+a1+a2+a3 (each modulo its count). Every dimension then changes almost every
  step, where a plain nested order would change the outer ones only once per block.

What this guarantees for a full plan grid (`expand_trials`), whatever N is:

* shards are disjoint, cover the plan, and their sizes differ by at most one;
* injection and control alternate along the order, so in every shard their counts differ by at
  most one; any 2·concepts consecutive trials hold every (kind, concept) pair once, so a shard of
  at least that size has every concept, each pair within one of the others;
* a shard of at least 2·concepts·layers trials has every layer, and one of at least a cycle has
  every combination, each within one of the others.

The diagonal makes it mix well below those sizes too: split over 500 tasks, each 23-trial shard
of the seed's sweep has every concept, layer and strength (a nested order would give it one or
two strengths).

So every shard needs about the same GPU time, fills its batches with a mix like the whole plan's,
and a shard that dies early leaves a gap spread thin over the plan rather than a missing concept.

Shares depend on the whole plan and on N: extending a sharded plan (more trials, say) moves some
trials between shards. Export de-duplicates by id, so nothing breaks, but some trials are then
generated twice; the cheap way to extend a sharded sweep is a new job for the new trials.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from introspectd.errors import BadInput
from introspectd.protocol.trials import TrialSpec

ENV_TASK_INDEX = "BATCH_TASK_INDEX"
ENV_TASK_COUNT = "BATCH_TASK_COUNT"
_SHARD_RE = re.compile(r"^([0-9]+)/([0-9]+)$")
_INT_RE = re.compile(r"^[0-9]+$")
MAX_SHARDS = 100_000  # far beyond any real job; bounds the numbers in a shard's directory name


@dataclass(frozen=True)
class Shard:
    """Process `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise BadInput(f"shard: expected 0 <= I < N, got {self.index}/{self.count}")
        if self.count > MAX_SHARDS:
            raise BadInput(f"shard: at most {MAX_SHARDS} shards, got N = {self.count}")

    @property
    def dirname(self) -> str:
        """The directory this shard's database and JSONL live in, locally and in GCS."""
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`--shard I/N` → Shard; anything else is one clear BadInput line."""
    match = _SHARD_RE.match(text.strip())
    if match is not None:
        index, count = int(match.group(1)), int(match.group(2))
        if 0 <= index < count <= MAX_SHARDS:
            return Shard(index, count)
        if count > MAX_SHARDS:
            raise BadInput(f"--shard: at most {MAX_SHARDS} shards, got N = {count}")
    raise BadInput(f"--shard: expected I/N with 0 <= I < N, got {text!r}")


def shard_from_env(env: Mapping[str, str]) -> Shard | None:
    """The shard Cloud Batch gives this task, or None when not running as a Batch task.

    Batch sets both variables in every task; one without the other is a broken environment, so
    it is an error rather than a silent unsharded run that would duplicate the whole plan.
    """
    raw_index = env.get(ENV_TASK_INDEX, "").strip()
    raw_count = env.get(ENV_TASK_COUNT, "").strip()
    if not raw_index and not raw_count:
        return None
    if not raw_count:
        raise BadInput(f"{ENV_TASK_COUNT}: not set, but {ENV_TASK_INDEX}={raw_index!r} is")
    if not raw_index:
        raise BadInput(f"{ENV_TASK_INDEX}: not set, but {ENV_TASK_COUNT}={raw_count!r} is")
    count = _env_int(ENV_TASK_COUNT, raw_count, minimum=1)
    index = _env_int(ENV_TASK_INDEX, raw_index, minimum=0)
    if index >= count:
        raise BadInput(f"{ENV_TASK_INDEX}: must be below {ENV_TASK_COUNT}={count}, got {index}")
    return Shard(index, count)


def _env_int(name: str, raw: str, minimum: int) -> int:
    if not _INT_RE.match(raw):
        raise BadInput(f"{name}: expected an integer >= {minimum}, got {raw!r}")
    value = int(raw)
    if value < minimum:
        raise BadInput(f"{name}: expected an integer >= {minimum}, got {raw!r}")
    return value


def select_shard(trials: list[TrialSpec], shard: Shard) -> list[TrialSpec]:
    """This shard's trials, in their original order (see the module docstring for the split)."""
    order = interleave(trials)
    start, stop = _window(len(order), shard.index, shard.count)
    return [trials[i] for i in sorted(order[start:stop])]


def split_shards(trials: list[TrialSpec], count: int) -> list[list[TrialSpec]]:
    """Every shard's trials at once: `[select_shard(trials, Shard(i, count)) for i in ...]`
    in one pass, for checking a split as a whole (tests/test_shard.py's properties)."""
    if count < 1:
        raise BadInput(f"shard count: must be >= 1, got {count}")
    order = interleave(trials)
    windows = (_window(len(order), i, count) for i in range(count))
    return [[trials[i] for i in sorted(order[start:stop])] for start, stop in windows]


def _window(total: int, index: int, count: int) -> tuple[int, int]:
    # Bounds i·L//N make sizes differ by at most one and tile [0, L) exactly.
    return index * total // count, (index + 1) * total // count


def interleave(trials: Sequence[TrialSpec]) -> list[int]:
    """Positions of `trials` in the mixing order: trial number, then the diagonal cycle."""
    arms = _ranks(t.arm for t in trials)
    concepts = _ranks(t.concept for t in trials)
    layers = _ranks(t.layer for t in trials)
    strengths = _ranks(t.strength for t in trials)
    radices = (len(arms), len(concepts), len(layers), len(strengths))

    def key(i: int) -> tuple[int, int, int]:
        t = trials[i]
        values = (arms[t.arm], concepts[t.concept], layers[t.layer], strengths[t.strength])
        # The position `i` last keeps the sort stable for repeated specs.
        return t.trial, diagonal_position(values, radices), i

    return sorted(range(len(trials)), key=key)


def diagonal_position(values: Sequence[int], radices: Sequence[int]) -> int:
    """Inverse of the diagonal order: where the combination `values` sits in one cycle.

    Forward map: digits a_j of the position (a_0 fastest) give value_j = (a_0 + … + a_j) mod r_j.
    It is a bijection because each a_j = (value_j − a_0 − … − a_{j−1}) mod r_j.
    """
    position, weight, digit_sum = 0, 1, 0
    for value, radix in zip(values, radices, strict=True):
        digit = (value - digit_sum) % radix
        digit_sum += digit
        position += digit * weight
        weight *= radix
    return position


def _ranks(values: Iterable[Hashable]) -> dict[Hashable, int]:
    """Each distinct value's index in order of first appearance (the plan's own order)."""
    ranks: dict[Hashable, int] = {}
    for value in values:
        ranks.setdefault(value, len(ranks))
    return ranks


def select_shard_by_cell(specs: Sequence[TrialSpec], shard: Shard) -> list[TrialSpec]:
    """Shard `shard`'s trials when whole cells must stay together (an adaptive sweep decides
    per cell): cell i of the plan's order goes to shard i mod N, every trial of it."""
    order: dict[tuple[str, int, float], int] = {}
    for spec in specs:
        order.setdefault(spec.cell, len(order))
    return [s for s in specs if order[s.cell] % shard.count == shard.index]
