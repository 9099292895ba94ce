"""Pooled controls and residual strength units (issue 24, items 4 and 5): real runs on the
tiny model, a real scripted judge server, the report read back from its files."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TINY_PLAN, run_cli, write_plan
from judge_server import JudgeServer, Recorded, ok
from test_engine import _records

from introspectd.cli import main
from introspectd.errors import BadInput
from introspectd.generate.arms import arm_delta
from introspectd.protocol.plan import parse_plan, spec_hash
from introspectd.protocol.trials import Arm, TrialSpec

POOLED = '\ncontrols = "pooled"\ncontrol_trials = 6\n'


def _v2(claims: bool) -> dict[str, Any]:
    return {
        "reasoning": "r",
        "claims_detection": claims,
        "identified_concept": "ocean" if claims else None,
        "detection_before_mention": True if claims else None,
        "coherent": True,
        "refused": False,
    }


def _alternating_judge() -> JudgeServer:
    """Every other answer claims a detection (of ocean), whatever the arm: the blind judge."""
    counter, lock = itertools.count(), threading.Lock()

    def respond(rec: Recorded) -> object:
        with lock:
            n = next(counter)
        return ok(_v2(n % 2 == 0))

    return JudgeServer(responder=respond)  # type: ignore[arg-type]


def _judged_plan(tmp_path: Path, server: JudgeServer, sweep_extra: str) -> Path:
    judge = f'\n[judge]\nbase_url = "{server.base_url}"\napi_key_env = "TEST_JUDGE_KEY"\n'
    return write_plan(tmp_path, TINY_PLAN + sweep_extra + judge + "concurrency = 4\n")


def test_pooled_controls_are_every_cells_controls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    with _alternating_judge() as server:
        plan = _judged_plan(tmp_path, server, POOLED)
        assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
        assert len(server.requests) == 16 + 6  # 2 concepts x 2 layers x 2 strengths x 2 + pool
    out = tmp_path / "out" / "exp" / "tiny"
    records = _records(out)
    pool = [r for r in records if r["config"].get("controls") == "pooled"]
    stamp = pool[0]["id"].split("_control_pooled_")[0]
    assert sorted(r["id"] for r in pool) == [f"{stamp}_control_pooled_t{i}" for i in range(6)]
    assert all(r["concept"] is None and r["config"]["layer"] is None for r in pool)
    assert not [r for r in records if not r["was_injected"] and r not in pool], "no cell controls"
    assert len(records) == 22
    assert len((out / "controls_pooled.jsonl").read_text().splitlines()) == 6

    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    fp = sum(r["judge"]["answer"] == "fail" for r in pool)
    (entry,) = summary["pooled_controls"]["pools"]
    assert entry["counts"]["control_fp_rate"] == [fp, 6]
    assert len(summary["groups"]) == 8
    for group in [*summary["groups"], *summary["by_model_layer_strength"], summary["overall"]]:
        assert group["counts"]["control_fp_rate"] == [fp, 6]
        assert group["control_fp_rate"] == pytest.approx(fp / 6, abs=1e-6)  # rounded to 6 places
        k, n = group["counts"]["injection_pass_rate"]
        assert group["net_detection"] == pytest.approx(k / n - fp / 6, abs=1e-6)
    assert "## Pooled controls" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (POOLED + '[judge]\nprompt_version = "v1"\n', '[sweep] controls: "pooled" needs the blind'),
        ('\ncontrols = "pooled"\n', '[sweep] control_trials: controls = "pooled" needs'),
        ("\ncontrol_trials = 5\n", '[sweep] control_trials: needs controls = "pooled"'),
        ('\ncontrols = "shared"\n', "[sweep] controls: must be one of per_cell, pooled"),
        ('\nstrength_unit = "norm"\n', "[sweep] strength_unit: must be one of raw, residual"),
        (POOLED + "[adaptive]\nenabled = true\n", '[sweep] controls: "pooled" cannot run with'),
        (POOLED + 'arms = ["injection"]\n', '"pooled" pools the control arm'),
    ],
)
def test_bad_pooling_and_unit_keys_are_one_line(extra: str, message: str) -> None:
    data = tomllib.loads(TINY_PLAN + extra)
    with pytest.raises(BadInput) as caught:
        parse_plan(data, "p.toml")
    assert str(caught.value).startswith("p.toml: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_v1_judge_with_pooled_controls_exits_2_before_any_work(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, TINY_PLAN + POOLED + '[judge]\nprompt_version = "v1"\n')
    result = run_cli("run", "--plan", str(plan), "--no-progress")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"{plan}: [sweep] controls:" in line and "v1 judge sees the concept" in line
    assert not (tmp_path / "out").exists()


def test_defaults_keep_the_plan_hash() -> None:
    data = tomllib.loads(TINY_PLAN)
    plain = parse_plan(data, "p.toml").generation_spec()
    explicit = {**data["sweep"], "controls": "per_cell", "control_trials": 0}
    spelled = parse_plan({**data, "sweep": {**explicit, "strength_unit": "raw"}}, "p.toml")
    assert spec_hash(spelled.generation_spec()) == spec_hash(plain)
    assert not {"controls", "control_trials", "strength_unit"} & plain["sweep"].keys()


def test_residual_strengths_scale_by_the_stored_residual_norm(tmp_path: Path) -> None:
    extra = '\nstrength_unit = "residual"\narms = ["injection", "control", "random"]\n'
    plan = write_plan(tmp_path, TINY_PLAN + extra)
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    out = tmp_path / "out" / "exp" / "tiny"
    with sqlite3.connect(out / "state.sqlite") as conn:
        stored = dict(conn.execute("SELECT layer, norm FROM residual_norms").fetchall())
        vectors = {
            (c, layer): torch.frombuffer(bytearray(data), dtype=torch.float32)
            for c, layer, data in conn.execute("SELECT concept, layer, data FROM vectors")
        }
    assert sorted(stored) == [1, 3] and all(norm > 0 for norm in stored.values())
    records = _records(out)
    assert len(records) == 2 * 2 * 2 * 2 * 3
    for r in records:
        config = r["config"]
        assert config["residual_norm"] == stored[config["layer"]]
        assert config["magnitude"] == config["strength"] * config["residual_norm"]
        # Exact: the plan's strengths (2 and 4) are powers of two, so the product divides back.
        assert config["magnitude"] / config["residual_norm"] == config["strength"]
    for arm, layer, strength in itertools.product((Arm.INJECTION, Arm.RANDOM), (1, 3), (2.0, 4.0)):
        spec = TrialSpec("fear", arm, layer, strength, 0)
        delta = arm_delta(spec, vectors, seed=7, residual_norms=stored)
        assert delta is not None
        magnitude = strength * stored[layer]
        assert float(delta.double().norm()) == pytest.approx(magnitude, rel=1e-6)
        if arm is Arm.INJECTION:  # the concept's own direction, only rescaled
            direction = vectors[("fear", layer)] / vectors[("fear", layer)].norm()
            assert torch.allclose(delta / magnitude, direction, atol=1e-6)
    # A resumed run keeps the first norms: the store never replaces them.
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    assert _records(out) == records


def test_switching_units_on_a_run_is_refused(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, TINY_PLAN.replace("trials = 2", "trials = 1"))
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    text = plan.read_text().replace("trials = 1", 'trials = 1\nstrength_unit = "residual"')
    plan.write_text(text)
    result = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert result.returncode == 2, result.stderr
    assert "sweep.strength_unit: 'raw' → 'residual'" in result.stderr
