"""Shard selection: partitions of a plan's trials, and the `--shard`/Batch-variable parsing."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from introspectd.errors import BadInput
from introspectd.protocol.trials import Arm, TrialSpec, expand_trials, resolve_layers
from introspectd.run.shard import (
    Shard,
    diagonal_position,
    parse_shard,
    select_shard,
    shard_from_env,
    split_shards,
)

CONCEPTS = ("celebration", "ocean", "fear", "silence", "bread", "music", "anger")
# No example database: hypothesis would otherwise leave a .hypothesis/ folder in the repo.
PROPERTY = settings(max_examples=200, deadline=None, database=None)


@st.composite
def plan_and_count(draw: st.DrawFn) -> tuple[list[TrialSpec], tuple[int, int, int], int]:
    n_concepts = draw(st.integers(1, len(CONCEPTS)))
    n_layers = draw(st.integers(1, 6))
    n_strengths = draw(st.integers(1, 6))
    n_trials = draw(st.integers(1, 12))
    trials = expand_trials(
        CONCEPTS[:n_concepts],
        list(range(3, 3 + 2 * n_layers, 2)),
        [1.0 + 0.5 * i for i in range(n_strengths)],
        n_trials,
    )
    # Counts past the plan's size too (empty shards); capped so a run takes seconds.
    count = draw(st.one_of(st.integers(1, 40), st.integers(1, min(len(trials) + 5, 400))))
    return trials, (n_concepts, n_layers, n_strengths), count


def all_shares(trials: list[TrialSpec], count: int) -> list[list[TrialSpec]]:
    shares = split_shards(trials, count)
    for index in {0, count // 2, count - 1}:  # select_shard is the same split, one at a time
        assert select_shard(trials, Shard(index, count)) == shares[index]
    return shares


@PROPERTY
@given(plan_and_count())
def test_shards_partition_the_plan_in_balanced_shares(case: tuple) -> None:
    trials, _, count = case
    shares = all_shares(trials, count)
    flat = [t for share in shares for t in share]
    assert len(flat) == len(trials)  # no trial twice...
    assert set(flat) == set(trials)  # ...and none missing
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1
    where = {t: i for i, t in enumerate(trials)}
    for share in shares:  # each share keeps the plan's order
        positions = [where[t] for t in share]
        assert positions == sorted(positions)


@PROPERTY
@given(plan_and_count())
def test_every_shard_mixes_kinds_concepts_layers_and_strengths(case: tuple) -> None:
    trials, (n_concepts, n_layers, n_strengths), count = case
    cycle = 2 * n_concepts * n_layers * n_strengths
    for share in all_shares(trials, count):
        arms = Counter(t.arm for t in share)
        assert abs(arms[Arm.INJECTION] - arms[Arm.CONTROL]) <= 1
        if len(share) >= 2 * n_concepts:
            pairs = Counter((t.arm, t.concept) for t in share)
            assert len(pairs) == 2 * n_concepts
            assert max(pairs.values()) - min(pairs.values()) <= 1
        if len(share) >= 2 * n_concepts * n_layers:
            assert len({t.layer for t in share}) == n_layers
        if len(share) >= cycle:
            combos = Counter((t.arm, t.concept, t.layer, t.strength) for t in share)
            assert len(combos) == cycle
            assert max(combos.values()) - min(combos.values()) <= 1


@PROPERTY
@given(st.data())
def test_any_list_of_trials_is_partitioned(data: st.DataObject) -> None:
    """Narrowed or reordered lists (not a full grid) still split disjointly and evenly."""
    grid = expand_trials(CONCEPTS[:3], [2, 4, 6], [1.0, 2.0], 5)
    trials = data.draw(st.lists(st.sampled_from(grid), max_size=120))  # repeats allowed
    count = data.draw(st.integers(1, 20))
    shares = all_shares(trials, count)
    assert Counter(t for share in shares for t in share) == Counter(trials)
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1


def test_selection_is_deterministic_and_independent_of_the_list_object() -> None:
    trials = expand_trials(CONCEPTS[:4], [6, 12, 18], [1.0, 2.0], 4)
    first = select_shard(trials, Shard(2, 5))
    assert select_shard(list(trials), Shard(2, 5)) == first
    assert trials == expand_trials(CONCEPTS[:4], [6, 12, 18], [1.0, 2.0], 4)  # not mutated


def test_seed_sweep_over_eight_tasks_gives_each_the_same_mix() -> None:
    """11,520 trials over 8 tasks: 1,440 each, every combination exactly 5 times."""
    trials = expand_trials(
        CONCEPTS[:4], resolve_layers("default", 36), (1.0, 1.5, 2.0, 2.5, 3.0, 4.0), 40
    )
    assert len(trials) == 11_520
    for share in all_shares(trials, 8):
        assert len(share) == 1_440
        combos = Counter((t.arm, t.concept, t.layer, t.strength) for t in share)
        assert set(combos.values()) == {5} and len(combos) == 288


@pytest.mark.parametrize("count", [3, 50, 100, 200, 500])
def test_seed_sweep_shards_of_two_dozen_trials_still_see_every_value(count: int) -> None:
    """The diagonal order's point: a nested order would give a 23-trial shard one strength."""
    trials = expand_trials(
        CONCEPTS[:4], resolve_layers("default", 36), (1.0, 1.5, 2.0, 2.5, 3.0, 4.0), 40
    )
    for share in split_shards(trials, count):
        assert len({t.concept for t in share}) == 4
        assert len({t.layer for t in share}) == 6
        assert len({t.strength for t in share}) == 6
        assert len({t.arm for t in share}) == 2


def test_one_shard_is_the_whole_plan() -> None:
    trials = expand_trials(CONCEPTS[:2], [1, 2], [1.0], 3)
    assert select_shard(trials, Shard(0, 1)) == trials
    assert select_shard([], Shard(0, 3)) == []


def test_diagonal_order_is_a_bijection() -> None:
    radices = (2, 3, 4, 5)
    positions = {
        diagonal_position((a, b, c, d), radices)
        for a in range(2)
        for b in range(3)
        for c in range(4)
        for d in range(5)
    }
    assert positions == set(range(2 * 3 * 4 * 5))


@pytest.mark.parametrize(
    ("text", "index", "count"), [("0/1", 0, 1), ("2/3", 2, 3), (" 7/8 ", 7, 8), ("09/10", 9, 10)]
)
def test_parse_shard(text: str, index: int, count: int) -> None:
    shard = parse_shard(text)
    assert shard == Shard(index, count)
    assert str(shard) == f"{index}/{count}"


def test_shard_dirname() -> None:
    assert parse_shard("2/8").dirname == "shard-2-of-8"


@pytest.mark.parametrize(
    "text",
    [
        "3/3",
        "4/3",
        "-1/3",
        "1/0",
        "0/0",
        "a/b",
        "1/",
        "/2",
        "",
        "1/2/3",
        "1.0/2",
        "+1/2",
        "1 / 2",
        "½/2",
        "1",
    ],
)
def test_parse_shard_rejects_malformed(text: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_shard(text)
    assert str(err.value) == f"--shard: expected I/N with 0 <= I < N, got {text!r}"


def test_parse_shard_message_is_the_documented_one() -> None:
    with pytest.raises(BadInput, match=r"^--shard: expected I/N with 0 <= I < N, got '3/3'$"):
        parse_shard("3/3")


def test_shard_from_env() -> None:
    assert shard_from_env({}) is None
    assert shard_from_env({"BATCH_TASK_INDEX": "", "BATCH_TASK_COUNT": ""}) is None
    assert shard_from_env({"BATCH_TASK_INDEX": "3", "BATCH_TASK_COUNT": "8"}) == Shard(3, 8)
    assert shard_from_env({"BATCH_TASK_INDEX": "0", "BATCH_TASK_COUNT": "1"}) == Shard(0, 1)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BATCH_TASK_INDEX": "1"}, "BATCH_TASK_COUNT"),
        ({"BATCH_TASK_COUNT": "4"}, "BATCH_TASK_INDEX"),
        ({"BATCH_TASK_INDEX": "x", "BATCH_TASK_COUNT": "4"}, "BATCH_TASK_INDEX"),
        ({"BATCH_TASK_INDEX": "-1", "BATCH_TASK_COUNT": "4"}, "BATCH_TASK_INDEX"),
        ({"BATCH_TASK_INDEX": "1", "BATCH_TASK_COUNT": "zero"}, "BATCH_TASK_COUNT"),
        ({"BATCH_TASK_INDEX": "0", "BATCH_TASK_COUNT": "0"}, "BATCH_TASK_COUNT"),
        ({"BATCH_TASK_INDEX": "4", "BATCH_TASK_COUNT": "4"}, "BATCH_TASK_INDEX"),
    ],
)
def test_shard_from_env_rejects_bad_values(env: dict[str, str], named: str) -> None:
    with pytest.raises(BadInput) as err:
        shard_from_env(env)
    message = str(err.value)
    assert message.startswith(named + ":") and "\n" not in message


def test_shard_rejects_impossible_index() -> None:
    with pytest.raises(BadInput):
        Shard(2, 2)
    with pytest.raises(BadInput):
        split_shards([], 0)
