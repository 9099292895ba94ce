"""A real run stores what made it (introspectd, torch, transformers, CUDA, devices, the model's
file hash, the judge's fingerprint), and `status --json`, `status` and the report show it."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from pathlib import Path

import pytest
import torch
from helpers import TINY_PLAN, write_plan

import introspectd
from introspectd.cli import main
from introspectd.judge.prompt import NO_FEWSHOT_HASH
from introspectd.judge.provenance import judge_fingerprint
from introspectd.protocol.models import resolve_model
from introspectd.protocol.plan import load_plan
from introspectd.run.db import Store


def test_a_run_stores_its_provenance_and_every_view_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(tmp_path, TINY_PLAN)
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    out = tmp_path / "out" / "exp" / "tiny"
    store = Store(out / "state.sqlite", read_only=True)
    rows = store.provenance.all()
    store.close()
    assert len(rows) == 1
    facts = rows[0]
    assert facts["introspectd"]["version"] == introspectd.__version__
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", facts["introspectd"]["commit"])  # a checkout
    assert facts["torch"] == torch.__version__ and facts["cuda"] == torch.version.cuda
    assert facts["transformers"] == metadata.version("transformers")
    assert [d["device"] for d in facts["devices"]] == ["cpu"] and facts["devices"][0]["name"]
    weights = Path(resolve_model("builtin:tiny", "", "t").source) / "model.safetensors"
    expected = hashlib.sha256(b"model.safetensors\0" + weights.read_bytes()).hexdigest()
    assert facts["model"] == {
        "name": "builtin:tiny",
        "kind": "builtin",
        "revision": None,
        "sha256": expected,
        "note": None,
    }
    judge = load_plan(plan).judge
    assert facts["judge"]["fingerprint"] == judge_fingerprint(judge, NO_FEWSHOT_HASH)
    assert facts["judge"]["enabled"] is False  # the tests' runs have no judge key

    capsys.readouterr()
    assert main(["status", "--plan", str(plan), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["provenance"] == facts and status["provenance_records"] == 1
    assert main(["status", "--plan", str(plan)]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("made with")]
    assert line and f"torch {torch.__version__}" in line[0] and expected[:16] in line[0]

    # A second process (a restart with more trials) adds its own row.
    more = write_plan(tmp_path, TINY_PLAN.replace("trials = 2", "trials = 3"))
    assert main(["run", "--plan", str(more), "--local", "--no-progress"]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    (run,) = summary["provenance"]
    assert run["run"] == str(out) and len(run["records"]) == 2
    assert run["records"][0]["model"]["sha256"] == expected
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Provenance" in report and f"sha256 {expected[:16]}" in report
