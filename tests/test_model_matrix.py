"""Every architecture researchers sweep runs: on the fast path, or on the fallback, and says so.

Tiny random-weights models (2 layers, hidden 64) are built from transformers' config classes
with the built-in tiny tokenizer and chat template. For each, the path the run takes is the one
`EXPECTED_PATH` records (the README's table is this dict), that path's logits match the model's
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
