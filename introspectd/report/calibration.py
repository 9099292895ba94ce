"""A judge calibration (the JSON `introspectd calibrate` writes) read for the report.

Only what the correction needs is checked: `overall` with whole-number counts `tp`, `fn`, `tn`,
`fp` and at least one human-pass and one human-fail label (else TPR or TNR is undefined).
Positive class = the judge's "pass". Every problem is one line naming the file (exit 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.report.corrections import JudgeErrorRates
from introspectd.text import loads_text

COUNT_KEYS = ("tp", "fn", "tn", "fp")


@dataclass(frozen=True)
class Calibration:
    source: str  # the file, or "run database"
    judge: dict[str, Any]  # model, api, prompt_version, fewshot_hash, fingerprint (as given)
    labels: dict[str, Any]  # path, sha256, split, n (as given)
    error_rates: JudgeErrorRates

    def info(self) -> dict[str, Any]:
        return {"source": self.source, "judge": self.judge, "labels": self.labels}


def load_calibration_file(path: Path) -> Calibration:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"--calibration: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"--calibration: {path}: cannot read it ({e})") from None
    try:
        data = loads_text(text)
    except json.JSONDecodeError as e:
        raise BadInput(
            f"--calibration: {path}: malformed JSON ({e.msg}, line {e.lineno})"
        ) from None
    return parse_calibration(data, f"--calibration: {path}", str(path))


def parse_calibration(data: Any, where: str, source: str) -> Calibration:
    """A calibration dict (from a file or the run database) → Calibration; BadInput if unusable."""
    if not isinstance(data, dict) or not isinstance(data.get("overall"), dict):
        raise BadInput(
            f"{where}: not a calibration (no 'overall' object; write one with "
            "`introspectd calibrate`)"
        )
    overall = data["overall"]
    counts = {}
    for key in COUNT_KEYS:
        value = overall.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadInput(f"{where}: overall.{key} missing or not a whole number >= 0")
        counts[key] = value
    rates = JudgeErrorRates(**counts)
    if rates.num_pos == 0 or rates.num_neg == 0:
        kind = "pass" if rates.num_pos == 0 else "fail"
        raise BadInput(
            f"{where}: no human-{kind} labels (tp+fn={rates.num_pos}, "
            f"tn+fp={rates.num_neg}): the judge's TPR/TNR are undefined"
        )
    judge, labels = data.get("judge"), data.get("labels")
    return Calibration(
        source,
        judge if isinstance(judge, dict) else {},
        labels if isinstance(labels, dict) else {},
        rates,
    )
