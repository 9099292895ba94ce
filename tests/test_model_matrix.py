"""Every architecture researchers sweep runs: on the fast path, or on the fallback, and says so.

Tiny random-weights models (2 layers, hidden 64) are built from transformers' config classes
with the built-in tiny tokenizer and chat template. For each, the path the run takes is the one
`EXPECTED_PATH` records (docs/models.md's table is this dict), that path's logits match the model's
own forward pass in float32, and a 2-trial run finishes with its records, without a traceback.
Sliding windows are 8 tokens, shorter than every trial, so the window matters.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import write_plan

from introspectd.cli import main
from introspectd.generate.builtin import BUILTIN_SPECS, build

WINDOW = 8
SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
}
MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
TWO_KINDS = {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": WINDOW}

# model_type → extra config arguments.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": {},
    "qwen2": {},
    "qwen3": {},
    "qwen3_moe": MOE,
    "mistral": {"sliding_window": WINDOW},
    "gemma": {},
    "gemma2": {**TWO_KINDS, "query_pre_attn_scalar": 16},
    "gemma3_text": {**TWO_KINDS, "query_pre_attn_scalar": 16},
    "gemma3": {},  # multimodal: Gemma3ForConditionalGeneration with a tiny vision tower
    "phi3": {"pad_token_id": 0},
    "olmo2": {},
    "granite": {},
    "cohere": {},
    "llama4_text": {
        "attention_chunk_size": WINDOW,
        "num_local_experts": 2,
        "intermediate_size_mlp": 128,
        "no_rope_layers": [1, 0],
    },
    "gpt_oss": {**TWO_KINDS, "num_local_experts": 4, "num_experts_per_tok": 2},
    "starcoder2": {"sliding_window": WINDOW, "use_bias": True},
    "gpt_neox": {"rotary_pct": 0.5, "num_key_value_heads": 4},  # multi-head attention
}

SHARED_PREFIX, MODEL_CACHE = "shared-prefix", "model-cache"
EXPECTED_PATH = {name: SHARED_PREFIX for name in ARCHITECTURES} | {"llama4_text": MODEL_CACHE}
FALLBACK_WARNING = "generating through the model's own cache"


def _config(model_type: str, vocab_size: int) -> Any:
    from transformers import AutoConfig

    extra = ARCHITECTURES[model_type]
    if model_type == "gemma3":
        text = {**SMALL, **TWO_KINDS, "query_pre_attn_scalar": 16, "vocab_size": vocab_size}
        vision = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        }
        return AutoConfig.for_model(
            "gemma3", text_config=text, vision_config=vision, mm_tokens_per_image=4
        )
    return AutoConfig.for_model(model_type, **{**SMALL, "vocab_size": vocab_size, **extra})


def build_model(model_type: str, root: Path) -> Path:
    """A random-weights `model_type` checkpoint with the built-in tiny tokenizer, built once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = root / model_type
    if (out / "config.json").is_file():
        return out
    tiny = build(BUILTIN_SPECS["tiny"], root / "tiny")
    work = root / f".{model_type}"
    shutil.rmtree(work, ignore_errors=True)
    torch.manual_seed(0)
    config = _config(model_type, len(AutoTokenizer.from_pretrained(tiny)))
    if model_type == "gemma3":
        from transformers import Gemma3ForConditionalGeneration

        model: Any = Gemma3ForConditionalGeneration(config)
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(work)
    for path in tiny.iterdir():
        if "token" in path.name or path.name in ("chat_template.jinja", "generation_config.json"):
            shutil.copy(path, work / path.name)
    work.rename(out)
    return out


@pytest.fixture(scope="module")
def matrix_root(model_cache: Path) -> Path:
    return model_cache / "matrix"


def _plan(tmp_path: Path, model_dir: Path) -> Path:
    return write_plan(
        tmp_path,
        f"""
        [model]
        name = "{model_dir}"
        dtype = "float32"
        device = "cpu"

        [sweep]
        concepts = ["ocean"]
        layers = [1]
        strengths = [4.0]
        trials = 1
        max_new_tokens = 6
        batch_size = 4
        """,
    )


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_architecture_runs_on_its_path(
    model_type: str,
    matrix_root: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_dir = build_model(model_type, matrix_root)
    caplog.set_level(logging.INFO, logger="introspectd")
    plan = _plan(tmp_path, model_dir)
    code = main(["run", "--plan", str(plan), "--local", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    warnings = [r.getMessage() for r in caplog.records if FALLBACK_WARNING in r.getMessage()]
    path = MODEL_CACHE if warnings else SHARED_PREFIX
    assert path == EXPECTED_PATH[model_type], warnings
    records = [
        json.loads(line)
        for f in sorted((tmp_path / "out" / "exp").rglob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert len(records) == 2
    assert {r["was_injected"] for r in records} == {True, False}


def _records_by_id(out: Path) -> dict[str, dict[str, Any]]:
    lines = [line for f in sorted(out.rglob("*.jsonl")) for line in f.read_text().splitlines()]
    # Trial ids start with the run's stamp (its start time): keyed without it.
    return {r["id"].split("_", 2)[2]: r for r in map(json.loads, lines)}


class _ListSource:
    """A RowSource over a fixed list of rows (the batcher's side of a run, without a run)."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.finished = list(items), {}  # type: ignore[var-annotated]

    def take(self, n: int) -> list[Any]:
        taken, self.items = self.items[:n], self.items[n:]
        return taken

    def done(self, rows: list[Any]) -> None:
        self.finished.update({row.trial_id: row.token_ids for row in rows})

    def should_stop(self) -> bool:
        return False


@pytest.mark.parametrize("model_type", ["qwen2", "gemma2"])
def test_fallback_gives_the_fast_paths_tokens(model_type: str, matrix_root: Path) -> None:
    """Same seeds, same per-row steering, same sampling: a trial's answer does not depend on
    the path (float32). Rows mix layers, strengths and controls, and are split over batches
    of different sizes on the two paths; gemma2 soft-caps and has an 8-token window."""
    import torch

    from introspectd.generate.batcher import Batcher
    from introspectd.generate.decoding import BatcherConfig, WorkItem
    from introspectd.generate.fallback import CacheBatcher
    from introspectd.generate.runner import Runner
    from introspectd.protocol.models import resolve_model

    runner = Runner(resolve_model(str(build_model(model_type, matrix_root)), "", "test"), "float32")
    prompt = runner.render([{"role": "user", "content": "Do you notice an injected thought?"}])
    assert len(prompt) > WINDOW
    torch.manual_seed(1)
    direction = torch.randn(64)
    items = [
        WorkItem(f"t{i}", 1000 + i, i % 2, None if i % 3 == 0 else direction * (i % 4 + 1))
        for i in range(7)
    ]
    outputs = []
    for kind, batch_size in ((Batcher, 3), (CacheBatcher, 4)):
        config = BatcherConfig(batch_size, max_new_tokens=6, temperature=1.0, prompt_steer_from=5)
        source = _ListSource(items)
        assert kind(runner.model, prompt, runner.eos_ids(), config).run(source, [0, 1])
        outputs.append(source.finished)
    assert outputs[0] == outputs[1]
    assert len(set(map(tuple, outputs[0].values()))) > 1  # steering and seeds made a difference


def test_a_model_that_does_not_load_is_one_line(
    matrix_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Truncated weights: exit 2, one line naming the model and the cause, no traceback."""
    model_dir = tmp_path / "broken"
    shutil.copytree(build_model("llama", matrix_root), model_dir)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code = main(["run", "--plan", str(_plan(tmp_path, model_dir)), "--local", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "Traceback" not in "\n".join(err)
    assert f"[model] name = '{model_dir}'" in err[-1] and "Error" in err[-1]


def test_multimodal_checkpoint_loads_and_steers_its_text_tower(matrix_root: Path) -> None:
    """Gemma3ForConditionalGeneration: the run loads the text tower alone (no vision weights,
    same logits as the whole model); in the whole model, layer discovery finds the text
    tower's layers under its language model, not the vision tower's."""
    import torch
    from transformers import AutoModelForCausalLM

    from introspectd.generate.layers import decoder_layers
    from introspectd.generate.runner import Runner
    from introspectd.protocol.models import resolve_model

    model_dir = build_model("gemma3", matrix_root)
    runner = Runner(resolve_model(str(model_dir), "", "test"), "float32")
    assert type(runner.model).__name__ == "Gemma3ForCausalLM"
    assert not [name for name, _ in runner.model.named_parameters() if "vision" in name]
    whole = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert type(whole).__name__ == "Gemma3ForConditionalGeneration"
    layers = decoder_layers(whole)
    names = {id(module): name for name, module in whole.named_modules()}
    assert len(layers) == 2 and "language_model" in names[id(layers)]
    ids = torch.tensor([runner.render([{"role": "user", "content": "Tell me about the ocean."}])])
    with torch.inference_mode():
        assert torch.allclose(runner.model(ids).logits, whole(ids).logits, atol=1e-5)


def test_layer_discovery_names_what_it_looked_for(matrix_root: Path) -> None:
    from transformers import AutoModelForCausalLM

    from introspectd.generate.layers import decoder_layers

    model = AutoModelForCausalLM.from_pretrained(build_model("llama", matrix_root))
    model.config.num_hidden_layers = 3  # a layer count no ModuleList in it has
    with pytest.raises(ValueError, match="looked for a ModuleList of 3 layers"):
        decoder_layers(model)


def test_layers_split_between_cpu_and_disk_give_the_same_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """accelerate places the embedding and layer 0 in (capped) CPU memory and the rest on
    disk; the shared-prefix cache and the deltas follow each layer; answers are unchanged."""
    results = []
    for name, placement in (
        ("one", ""),
        ("split", 'device_map = "auto"\nmax_memory = { cpu = "500KB", disk = "1GB" }'),
    ):
        directory = tmp_path / name
        directory.mkdir()
        plan = write_plan(
            directory,
            f"""
            [model]
            name = "builtin:tiny"
            dtype = "float32"
            {placement}

            [sweep]
            concepts = ["ocean", "fear"]
            layers = [1, 3]
            strengths = [4.0]
            trials = 1
            max_new_tokens = 6
            batch_size = 4
            """,
        )
        assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
        results.append(_records_by_id(directory / "out"))
    capsys.readouterr()
    one, split = results
    assert len(one) == 8 and one.keys() == split.keys()
    assert {k: r["response"] for k, r in one.items()} == {
        k: r["response"] for k, r in split.items()
    }


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ('device_map = "everywhere"', "[model] device_map: must be one of auto"),
        ('device_map = "auto"\ndevice = "cpu"', "leave device unset"),
        ('max_memory = { cpu = "1GiB" }', 'set device_map = "auto" too'),
        ('device_map = "auto"\nmax_memory = { gpu = "1GiB" }', "'gpu' is not a device"),
        ('device_map = "auto"\nmax_memory = { cpu = 5 }', 'give a size such as "20GiB"'),
    ],
)
def test_bad_placement_is_one_line(lines: str, problem: str, tmp_path: Path) -> None:
    from introspectd.errors import BadInput
    from introspectd.protocol.plan import load_plan

    plan = write_plan(tmp_path, f'[model]\nname = "builtin:tiny"\n{lines}\n')
    with pytest.raises(BadInput, match=None) as caught:
        load_plan(plan)
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_docs_table_is_this_matrix() -> None:
    """docs/models.md's table of architectures and paths says what this file checks."""
    import re

    from helpers import REPO

    text = (REPO / "docs" / "models.md").read_text()
    section = text.split("\n## Architectures\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (shared prefix|model cache)", section, re.M)
    paths = {"shared prefix": SHARED_PREFIX, "model cache": MODEL_CACHE}
    assert {name: paths[path] for name, path in rows} == EXPECTED_PATH


def test_a_model_neither_path_reproduces_is_refused_naming_both(tiny_runner: Any) -> None:
    """Fault injection in the torch model: layer 0 shifts its output only on one-token passes,
    so decoding with any cache disagrees with the model's own full forward pass. Both paths'
    checks fail, and the refusal names both causes."""
    import torch

    from introspectd.generate.decoding import BatcherConfig
    from introspectd.generate.fallback import choose_path
    from introspectd.generate.layers import decoder_layers

    def only_when_decoding(module: torch.nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[1] != 1:
            return None
        hidden = hidden + 10.0
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    model = tiny_runner.model
    prompt = tiny_runner.render([{"role": "user", "content": "Tell me about the ocean."}])
    handle = decoder_layers(model)[0].register_forward_hook(only_when_decoding)
    try:
        with pytest.raises(ValueError) as caught:
            choose_path(model, prompt, tiny_runner.eos_ids(), BatcherConfig(1, 4, 1.0), None)
    finally:
        handle.remove()
    message = str(caught.value)
    assert "shared-prefix engine cannot run it (the shared-prefix engine's logits differ" in message
    assert "neither can generation through its own cache (generating through its own" in message
