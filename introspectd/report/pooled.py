"""Pooled controls in the report (`[sweep] controls = "pooled"`, docs/protocols.md).

A pooled control belongs to no cell: its record has no concept, layer or strength and says
`config.controls = "pooled"`. The report takes the pool out before grouping, and every grouping
(a cell, a concept, a layer × strength, a model, overall) counts the pool of its models as its
controls: a cell's false-positive rate is the pool's, and its net detection is its injection
pass rate − the pool's FP rate. The pool is keyed by model and prompt (one prompt per run for
now: `_prompt` is where a prompt key of the records goes once prompts are a sweep dimension).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from introspectd.protocol.results import Record
from introspectd.report.metrics import compute_metrics

PoolKey = tuple[str, str]  # (model, prompt)
Pools = dict[PoolKey, list[Record]]


def is_pooled_object(obj: Mapping[str, Any]) -> bool:
    """A JSON record of a pooled control (writer.parse_record reads it without a cell)."""
    config = obj.get("config")
    return isinstance(config, Mapping) and config.get("controls") == "pooled"


def _prompt(record: Mapping[str, Any]) -> str:
    """The pool a record draws from within its model: its prompt's (one per battery prompt)."""
    return str(record.get("prompt") or "")


def _key(record: Mapping[str, Any]) -> PoolKey:
    return str(record["model"]), _prompt(record)


def split_pooled(records: Iterable[Record]) -> tuple[Pools, list[Record]]:
    """(the pooled controls by model and prompt, every other record)."""
    pools: Pools = {}
    rest: list[Record] = []
    for record in records:
        if record.get("pooled"):
            pools.setdefault(_key(record), []).append(record)
        else:
            rest.append(record)
    return pools, rest


def with_pool(members: list[Record], pools: Pools) -> list[Record]:
    """`members` and, once each, the pools of the models and prompts among them: a grouping's
    controls when they are pooled."""
    if not pools:
        return members
    keys = sorted({_key(r) for r in members})
    return members + [r for key in keys for r in pools.get(key, [])]


def into_cells(records: list[Record], pools: Pools) -> list[Record]:
    """For the figures, which group by cell only: a copy of the pool in every (concept, layer,
    strength) cell of its model. Rates per cell are the pool's; counts over several cells
    repeat it, so nothing but a rate is read from these."""
    if not pools:
        return records
    cells = sorted({(_key(r), r["concept"], r["layer"], r["strength"]) for r in records})
    copies = [
        {**control, "concept": concept, "layer": layer, "strength": strength}
        for key, concept, layer, strength in cells
        for control in pools.get(key, [])
    ]
    return records + copies


def pooled_summary(pools: Pools) -> dict[str, Any] | None:
    """summary.json's `pooled_controls`: each pool's size and rates (control FP among them)."""
    if not pools:
        return None
    return {
        "note": "every cell's control FP rate and net detection use this pool; the pool is "
        "shared by all cells, so their intervals are not independent of one another",
        "pools": [
            {"model": model, "prompt": prompt or None, **compute_metrics(members)}
            for (model, prompt), members in sorted(pools.items())
        ],
    }


def pooled_markdown(summary: Mapping[str, Any] | None) -> list[str]:
    """report.md's paragraph on the pool, placed before the tables that use it."""
    if not summary:
        return []
    lines = ["## Pooled controls", ""]
    for pool in summary["pools"]:
        fp, ci = pool["control_fp_rate"], pool["control_fp_rate_ci"]
        rate = "n/a" if fp is None else f"{100 * fp:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        total, judged = pool["n_control"] + pool["n_unjudged"], pool["n_control"]
        lines.append(
            f"- `{pool['model']}`: {total} pooled control trials ({judged} judged), FP {rate}"
        )
    lines += [
        "",
        "Controls are pooled: every cell's control FP rate and net detection below use this "
        "pool (net detection = the cell's injection pass rate − the pool's FP rate). The pool "
        "is shared by all cells, so the cells' Newcombe intervals, computed as if each had "
        "the pool for its own, move together: a pool that runs high lowers every cell at once.",
    ]
    return lines
