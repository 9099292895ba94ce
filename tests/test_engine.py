"""End to end on tiny real models: records, resume after SIGKILL, plan changes, status/export."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers import TINY_PLAN, run_cli, start_run, write_plan

from introspectd.cli import main
from introspectd.generate.builtin import BUILTIN_SPECS, build
from introspectd.protocol.trials import expand_trials

RECORD_KEYS = {
    "id",
    "timestamp",
    "concept",
    "was_injected",
    "response",
    "config",
    "judge",
    "judge_error",
    "arm",  # issue 14: injection | control | random
    "mention",  # issue 25: where a generated answer first mentions its concept
}
CONFIG_KEYS = {
    "model",
    "layer",
    "strength",
    "magnitude",
    "vector_norm",
    "prompt_version",
    "inject_style",
    "trial",
    "direction",  # issue 14: concept | random | null (control)
}


def _records(out: Path) -> list[dict]:  # type: ignore[type-arg]
    lines = [line for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()]
    return [json.loads(line) for line in lines]


def _planned_ids(
    stamp: str, concepts: list[str], layers: list[int], strengths: list[float], trials: int
) -> set[str]:
    return {s.trial_id(stamp) for s in expand_trials(concepts, layers, strengths, trials)}


def _stamp(out: Path) -> str:
    with sqlite3.connect(out / "state.sqlite") as conn:
        return str(conn.execute("SELECT stamp FROM run").fetchone()[0])


def test_run_writes_seed_format_records(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, TINY_PLAN)
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    out = tmp_path / "out" / "exp" / "tiny"
    records = _records(out)
    stamp = _stamp(out)
    assert {r["id"] for r in records} == _planned_ids(
        stamp, ["ocean", "fear"], [1, 3], [2.0, 4.0], 2
    )
    assert len(records) == 32
    for r in records:
        assert set(r) == RECORD_KEYS and set(r["config"]) == CONFIG_KEYS
        cfg = r["config"]
        assert r["id"] == (
            f"{stamp}_{r['concept']}_{'injection' if r['was_injected'] else 'control'}"
            f"_L{cfg['layer']}_S{cfg['strength']}_t{cfg['trial']}"
        )
        assert cfg["magnitude"] == pytest.approx(cfg["strength"] * cfg["vector_norm"])
        assert cfg["vector_norm"] > 0 and cfg["model"] == "builtin:tiny"
        assert r["judge"] is None and "judging not configured" in r["judge_error"]
        assert isinstance(r["response"], str)
    # Vector norms are per (concept, layer), shared by injection and control records.
    norms = {(r["concept"], r["config"]["layer"]): set() for r in records}
    for r in records:
        norms[(r["concept"], r["config"]["layer"])].add(r["config"]["vector_norm"])
    assert all(len(v) == 1 for v in norms.values())
    # Results are for sharing: the user's umask decides their mode, not mkstemp's 0600.
    umask = os.umask(0o022)
    os.umask(umask)
    assert {f.stat().st_mode & 0o777 for f in out.glob("*.jsonl")} == {0o666 & ~umask}
    # A second run has nothing to do and changes nothing.
    before = {f.name: f.read_bytes() for f in out.glob("*.jsonl")}
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    assert {f.name: f.read_bytes() for f in out.glob("*.jsonl")} == before


def test_status_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = write_plan(tmp_path, TINY_PLAN)
    assert (
        main(
            [
                "run",
                "--plan",
                str(plan),
                "--local",
                "--no-progress",
                "--concept",
                "fear",
                "--trials",
                "1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["status", "--plan", str(plan), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == 32 and summary["finished"] == 8
    assert summary["by_concept"]["fear"] == {"judge_failed": 8, "pending": 8}
    assert summary["by_concept"]["ocean"] == {"pending": 16}
    assert summary["is_complete"] is False
    assert main(["export", "--plan", str(plan), "--out", str(tmp_path / "copy")]) == 0
    exported = _records(tmp_path / "copy")
    assert len(exported) == 8 and {r["concept"] for r in exported} == {"fear"}
    assert {r["config"]["trial"] for r in exported} == {0}


def test_status_without_a_run_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_plan(tmp_path, TINY_PLAN)
    assert main(["status", "--plan", str(plan)]) == 2
    assert "no run found" in capsys.readouterr().err


def test_llama_directory_with_its_own_template_and_stop_token(tmp_path: Path) -> None:
    model_dir = build(BUILTIN_SPECS["tiny-llama"], tmp_path / "tiny-llama")
    assert "<|eot_id|>" in (model_dir / "chat_template.jinja").read_text()
    plan = write_plan(tmp_path, TINY_PLAN.replace('"builtin:tiny"', f'"{model_dir}"'))
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    records = _records(tmp_path / "out" / "exp" / "tiny-llama")
    assert len(records) == 32
    assert all(r["config"]["model"] == str(model_dir.resolve()) for r in records)


def test_a_sliding_window_shorter_than_a_trial_runs_on_the_fast_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The shared-prefix engine masks keys outside the window (the startup check compares it
    with the model's own forward pass); no hand-off to the slower fallback."""
    caplog.set_level(logging.INFO, logger="introspectd")
    model_dir = build(BUILTIN_SPECS["tiny"], tmp_path / "windowed")
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    layers = config["num_hidden_layers"]
    config.update(
        use_sliding_window=True,
        sliding_window=16,
        max_window_layers=0,
        layer_types=["sliding_attention"] * layers,
    )
    config_path.write_text(json.dumps(config))
    plan = write_plan(tmp_path, TINY_PLAN.replace('"builtin:tiny"', f'"{model_dir}"'))
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    assert not [r for r in caplog.records if "model's own cache" in r.getMessage()]
    assert len(_records(tmp_path / "out" / "exp" / "windowed")) == 32


def test_a_soft_capped_model_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Gemma 2 soft-caps attention logits; the shared-prefix engine applies the cap."""
    caplog.set_level(logging.INFO, logger="introspectd")
    import shutil

    from transformers import AutoModelForCausalLM, Gemma2Config

    tiny = build(BUILTIN_SPECS["tiny"], tmp_path / "tiny")
    model_dir = tmp_path / "gemma2"
    config = Gemma2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=512,
        query_pre_attn_scalar=16,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    for path in tiny.iterdir():
        if "token" in path.name or path.name == "chat_template.jinja":
            shutil.copy(path, model_dir / path.name)
    plan = write_plan(tmp_path, TINY_PLAN.replace('"builtin:tiny"', f'"{model_dir}"'))
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    assert not [r for r in caplog.records if "model's own cache" in r.getMessage()]
    assert len(_records(tmp_path / "out" / "exp" / "gemma2")) == 32


def test_changed_plan_is_refused_and_extension_is_added(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="introspectd")
    plan = write_plan(tmp_path, TINY_PLAN)
    assert main(["run", "--plan", str(plan), "--local", "--no-progress", "--trials", "1"]) == 0
    out = tmp_path / "out" / "exp" / "tiny"
    changed = write_plan(tmp_path, TINY_PLAN.replace("max_new_tokens = 8", "max_new_tokens = 9"))
    capsys.readouterr()
    assert main(["run", "--plan", str(changed), "--local", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "different plan (sweep.max_new_tokens: 8 → 9)" in err and len(err.splitlines()) == 1
    extended = write_plan(
        tmp_path,
        TINY_PLAN.replace('["ocean", "fear"]', '["ocean", "fear", "joy"]').replace(
            "trials = 2", "trials = 3"
        ),
    )
    capsys.readouterr()
    assert main(["status", "--plan", str(extended), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 32, "status never changes the plan"
    assert main(["run", "--plan", str(extended), "--local", "--no-progress"]) == 0
    assert "extends the stored run" in caplog.text
    stamp = _stamp(out)
    assert {r["id"] for r in _records(out)} == _planned_ids(
        stamp, ["ocean", "fear", "joy"], [1, 3], [2.0, 4.0], 3
    )


KILL_PLAN = TINY_PLAN.replace("trials = 2", "trials = 8").replace(
    "max_new_tokens = 8", "max_new_tokens = 24"
)


def _wait_for_progress(
    db: Path,
    target: int,
    proc: subprocess.Popen,  # type: ignore[type-arg]
    rng: random.Random,
) -> None:
    """Return once `target` trials are generated (or at a random moment of start-up)."""
    if target == 0:
        time.sleep(rng.uniform(0.2, 2.0))
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    done = conn.execute(
                        "SELECT COUNT(*) FROM trials WHERE status != 'pending'"
                    ).fetchone()[0]
                if done >= target:
                    return
            except sqlite3.OperationalError:
                pass  # the table may not exist yet
        time.sleep(0.02)


def test_sigkill_at_random_points_then_resume(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, KILL_PLAN)
    out = tmp_path / "out" / "exp" / "tiny"
    rng = random.Random(7)
    seen: dict[str, str] = {}
    total = 128
    # Kill once during start-up, then at growing progress points chosen at random.
    targets = [0, *sorted(rng.sample(range(5, total - 5), 9))]
    for target in targets:
        proc = start_run(plan, "--local", stderr=subprocess.DEVNULL)
        _wait_for_progress(out / "state.sqlite", target, proc, rng)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for r in _records(out) if out.exists() else []:
            # A trial already written keeps its answer and timestamp across restarts.
            assert seen.setdefault(r["id"], r["timestamp"]) == r["timestamp"]
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    lines = [line for f in out.glob("*.jsonl") for line in f.read_text().splitlines()]
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)), "no duplicate lines"
    assert set(ids) == _planned_ids(_stamp(out), ["ocean", "fear"], [1, 3], [2.0, 4.0], 8)
    assert 0 < len(seen) < len(ids), "the kills should land mid-run"
    assert proc.returncode == -signal.SIGKILL
    final = {r["id"]: r["timestamp"] for r in _records(out)}
    assert all(final[i] == ts for i, ts in seen.items())


def test_from_marker_style_runs_end_to_end(tmp_path: Path) -> None:
    body = TINY_PLAN.replace(
        "trials = 2", 'trials = 1\nprompt_version = "v1"\ninject_style = "from_marker"'
    )
    plan = write_plan(tmp_path, body)
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    records = _records(tmp_path / "out" / "exp" / "tiny")
    assert len(records) == 16
    assert {r["config"]["inject_style"] for r in records} == {"from_marker"}
    assert {r["config"]["prompt_version"] for r in records} == {"v1"}
