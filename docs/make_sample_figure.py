"""Regenerate docs/sample-heatmap.png, the README's sample figure, from the shared labelled data.

    .venv/bin/python docs/make_sample_figure.py [LABELLED.jsonl]

It draws the figure `introspectd report` writes as `figures/<model>_injection_pass.png`, for the
model with the most records in `shared/data/labelled_responses.jsonl` (Qwen2.5-14B). The labelled
set is a calibration sample, not a sweep, so most layer × strength cells are empty; the injection
pass rate is shown because it has the most filled cells and so shows the layout best.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # run from a checkout without installing

from introspectd.report.figures import DPI, model_heatmap  # noqa: E402
from introspectd.report.writer import load_inputs  # noqa: E402

DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "labelled_responses.jsonl"
OUTPUT = ROOT / "docs" / "sample-heatmap.png"


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_INPUT
    records = load_inputs([source]).records
    model, _ = Counter(r["model"] for r in records).most_common(1)[0]
    mine = [r for r in records if r["model"] == model]
    model_heatmap(model, mine, "injection_pass_rate").savefig(OUTPUT, dpi=DPI)
    print(f"wrote {OUTPUT} ({model}, {len(mine)} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
