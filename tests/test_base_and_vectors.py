"""Real runs of the tiny model: a base model (no chat template) with `chat_template = "plain"`,
and `vectors_file` steering in place of the computed vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import TINY_PLAN, base_model_copy, run_cli, write_plan
from safetensors.numpy import save_file

from introspectd.cli import main
from introspectd.protocol.models import resolve_model
from introspectd.run.db import Store

STAMP = "20260101_000000"


def _plan(directory: Path, model: str = "", sweep: str = "", name: str = "builtin:tiny") -> Path:
    """TINY_PLAN with its output under `directory`, a fixed stamp (so two runs' trial ids
    match), and extra [model] / [sweep] lines."""
    directory.mkdir(parents=True, exist_ok=True)
    run = f'[run]\noutput_dir = "{directory / "out"}"\nexperiment_id = "exp"\nstamp = "{STAMP}"\n'
    body = TINY_PLAN.replace('"builtin:tiny"', json.dumps(name))
    body = body.replace("[model]\n", f"[model]\n{model}\n").replace(
        "[sweep]\n", f"[sweep]\n{sweep}\n"
    )
    return write_plan(directory, run + body)


def _run(directory: Path, model: str = "", sweep: str = "", name: str = "builtin:tiny") -> Any:
    """Run the plan in-process; its records by trial id."""
    plan = _plan(directory, model, sweep, name)
    assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
    records = [
        json.loads(line)
        for f in sorted((directory / "out" / "exp").glob("*/*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    return {r["id"]: r for r in records}


def test_a_base_model_runs_with_the_plain_template(tmp_path: Path) -> None:
    base = base_model_copy(tmp_path)
    records = _run(tmp_path / "plain", 'chat_template = "plain"', name=str(base))
    assert len(records) == 32 and all(isinstance(r["response"], str) for r in records.values())
    refused = _plan(tmp_path / "bare", name=str(base))
    done = run_cli("run", "--plan", str(refused), "--local", "--no-progress")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and 'chat_template = "plain"' in lines[-1], done.stderr


def test_the_plain_template_is_what_the_tokenizer_renders(tmp_path: Path) -> None:
    from introspectd.generate.runner import Runner

    ref = resolve_model(str(base_model_copy(tmp_path)), "", "test")
    runner = Runner(ref, chat_template="plain")
    ids = runner.render([{"role": "user", "content": "Is anything unusual?"}])
    assert runner.tokenizer.decode(ids) == "User: Is anything unusual?\n\nAssistant:"


def _stored_vectors(directory: Path) -> dict[str, np.ndarray]:
    store = Store(directory / "out" / "exp" / "tiny" / "state.sqlite", read_only=True)
    try:
        return {
            f"{concept}/{layer}": np.frombuffer(data, dtype="<f4").copy()
            for (concept, layer), (data, _) in store.get_vectors().items()
        }
    finally:
        store.close()


def _answers(records: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {trial_id: r["response"] for trial_id, r in records.items()}


def test_a_vectors_file_steers_in_place_of_the_computed_vectors(tmp_path: Path) -> None:
    computed = _run(tmp_path / "computed")
    vectors = _stored_vectors(tmp_path / "computed")
    assert len(vectors) == 4  # 2 concepts x 2 layers
    save_file(vectors, str(tmp_path / "same.safetensors"))
    from_file = _run(tmp_path / "same", sweep=f'vectors_file = "{tmp_path}/same.safetensors"')
    assert _answers(from_file) == _answers(computed)
    for trial_id, record in from_file.items():  # the file's norm (float64 vs torch's float32)
        norm = computed[trial_id]["config"]["vector_norm"]
        assert record["config"]["vector_norm"] == pytest.approx(norm, rel=1e-6)

    other = {"ocean": "fear", "fear": "ocean"}
    swapped = {f"{other[k.split('/')[0]]}/{k.split('/')[1]}": v for k, v in vectors.items()}
    save_file(swapped, str(tmp_path / "swapped.safetensors"))
    sweep = f'vectors_file = "{tmp_path}/swapped.safetensors"'
    steered = _answers(_run(tmp_path / "swapped", sweep=sweep))
    injected = {i for i, r in computed.items() if r["was_injected"]}
    assert any(steered[i] != computed[i]["response"] for i in injected)
    assert all(steered[i] == computed[i]["response"] for i in computed if i not in injected)


@pytest.mark.parametrize(
    ("tensor", "fault"),
    [
        (np.ones(32, np.float32), "tensor ocean/1 has 32 values; the model's hidden size is 64"),
        (np.full(64, np.inf, np.float32), "tensor ocean/1 holds values that are not finite"),
    ],
)
def test_a_wrong_vectors_file_is_one_line_exit_2(
    tmp_path: Path, tensor: np.ndarray, fault: str
) -> None:
    good = np.ones(64, np.float32)
    tensors = {"ocean/1": tensor, "ocean/3": good, "fear/1": good, "fear/3": good}
    save_file(tensors, str(tmp_path / "v.safetensors"))
    plan = _plan(tmp_path, sweep='vectors_file = "v.safetensors"')  # from the plan's directory
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"introspectd: {plan}: [sweep] vectors_file: {tmp_path}/v.safetensors: ")
    assert fault in line and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "exp" / "tiny").exists()  # refused before the run's files


def test_adding_words_to_a_concepts_file_adds_their_trials(tmp_path: Path) -> None:
    words = tmp_path / "concepts.txt"
    words.write_text("ocean\n")
    plan = _plan(tmp_path, sweep=f'concepts_file = "{words}"').read_text()
    plan = plan.replace('concepts = ["ocean", "fear"]\n', "").replace("trials = 2", "trials = 1")
    (tmp_path / "plan.toml").write_text(plan)
    assert main(["run", "--plan", str(tmp_path / "plan.toml"), "--local", "--no-progress"]) == 0
    words.write_text("ocean\nfear\n")
    done = run_cli("run", "--plan", str(tmp_path / "plan.toml"), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "added 8 new trials to the run" in done.stderr
    assert len(_records_in(tmp_path)) == 16  # 2 concepts x 2 layers x 2 strengths x 2 arms


def _records_in(directory: Path) -> list[str]:
    return [
        line
        for f in sorted((directory / "out" / "exp").glob("*/*.jsonl"))
        for line in f.read_text().splitlines()
    ]
