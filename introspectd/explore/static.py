"""`report … --explorer`: explorer.html, the explorer's page with a run's records embedded, for
sharing without a server. Above MAX_RECORDS the file would be too heavy for a browser to hold
comfortably; the server (`introspectd explore`) pages instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from introspectd.explore.assets import page_html
from introspectd.explore.sources import (
    iter_jsonl_rows,
    jsonl_lexicon,
    run_seeds_beside,
    seed_of,
    trial_mention,
)
from introspectd.output.records import write_atomic
from introspectd.report.writer import natural_key
from introspectd.text import utf8

MAX_RECORDS = 20_000


@dataclass(frozen=True)
class StaticExplorer:
    path: Path | None  # None: no records, or too many; nothing written
    num_records: int

    def line(self) -> str:
        if self.path is None and self.num_records == 0:
            return "explorer.html not written: the inputs hold no records"
        if self.path is None:
            return (
                f"explorer.html not written: {self.num_records} records is more than "
                f"{MAX_RECORDS}; browse them with `introspectd explore` instead"
            )
        return f"explorer written to {self.path} ({self.num_records} records)"


def explorer_data(inputs: list[Path]) -> tuple[dict[str, Any], int]:
    """{"sources": [{model, config, rows}]} in the page's LocalBackend shape, and the count.
    A later copy of the same (model, id) replaces the earlier, as in the report. Seeds (where a
    run database sits beside the files) are strings: a browser rounds 63-bit numbers."""
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    configs: dict[str, dict[str, Any]] = {}
    run_seeds = run_seeds_beside(inputs)
    lexicon = jsonl_lexicon(inputs)
    for row, config in iter_jsonl_rows(inputs):
        model = row.pop("model")
        row.pop("generated_at", None)
        row["mention"] = trial_mention(row, row["mention"], lexicon)
        seed = seed_of(run_seeds, row["id"])
        row["seed"] = None if seed is None else str(seed)
        by_model.setdefault(model, {})[row["id"]] = row
        configs.setdefault(model, config)
    sources = []
    for model in sorted(by_model, key=natural_key):
        rows = list(by_model[model].values())
        for ordinal, row in enumerate(rows):
            row["ordinal"] = ordinal
        sources.append({"model": model, "config": configs[model], "rows": rows})
    return {"sources": sources}, sum(len(s["rows"]) for s in sources)


def write_static_explorer(inputs: list[Path], out_dir: Path) -> StaticExplorer:
    data, num_records = explorer_data(inputs)
    if num_records > MAX_RECORDS or num_records == 0:  # the page needs one record to show
        return StaticExplorer(None, num_records)
    path = out_dir / "explorer.html"
    write_atomic(path, utf8(page_html(embedded=data)))
    return StaticExplorer(path, num_records)
