"""Small random-weights models with a real byte-level BPE tokenizer and chat template.

They let the quickstart, the tests and the CPU benchmark run offline. A build is deterministic
(fixed corpus, fixed seed) and cached on first use; concurrent builders race safely because
each writes a private directory and renames it into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA_SPECIALS = (
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|end_of_text|>",
)
LLAMA_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
    "<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Qwen2's pre-tokenizer split; AutoTokenizer rebuilds it for qwen2 configs, so train with it.
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


@dataclass(frozen=True)
class BuiltinSpec:
    arch: str  # "qwen2" or "llama"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    version: str = "v1"
    seed: int = 0

    @property
    def specials(self) -> tuple[str, ...]:
        return QWEN_SPECIALS if self.arch == "qwen2" else LLAMA_SPECIALS

    @property
    def eos_tokens(self) -> tuple[str, ...]:
        return ("<|im_end|>", "<|endoftext|>") if self.arch == "qwen2" else ("<|eot_id|>",)

    def config_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.arch,
            "architectures": ["Qwen2ForCausalLM" if self.arch == "qwen2" else "LlamaForCausalLM"],
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": True,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            # Large enough that random weights give peaked, varied logits rather than uniform noise.
            "initializer_range": 0.2,
        }


BUILTIN_SPECS: dict[str, BuiltinSpec] = {
    "tiny": BuiltinSpec("qwen2", 64, 6, 4, 2, 128, 512),
    "tiny-llama": BuiltinSpec("llama", 64, 4, 4, 2, 128, 512),
    "small": BuiltinSpec("qwen2", 512, 12, 8, 2, 1536, 4096),  # ~40M parameters
}

_CORPUS = [
    "Tell me about celebration. Tell me about the ocean. Tell me about fear and silence.",
    "You are taking part in a scientific experiment on AI introspection.",
    "Do you notice any thought, feeling or impression that seems out of place?",
    "Yes, I notice something unusual. No, nothing unusual. I detect an injected thought.",
    "The quick brown fox jumps over the lazy dog while the river runs to the sea.",
    "Researchers sometimes insert artificial activation patterns into the network.",
    "table chair window bottle pencil blanket bicycle kettle ladder mirror river mountain",
    "forest desert island valley garden city village bridge library kitchen market station",
    "justice freedom history memory knowledge patience balance theory language number",
    "running cooking reading building walking writing swimming painting softness brightness",
    "It is about waves, water, joy, a party, quiet, dread, calm, music and light. 0123456789",
]


def build(spec: BuiltinSpec, dest: Path) -> Path:
    """Build the model into `dest` unless it is already there; returns `dest`."""
    if (dest / "model.safetensors").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        _write_tokenizer(spec, work)
        _write_model(spec, work)
        try:
            os.rename(work, dest)
        except OSError:
            if not (dest / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _write_tokenizer(spec: BuiltinSpec, out: Path) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(spec.specials),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.add_special_tokens(list(spec.specials))
    eos = spec.eos_tokens[0]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=spec.specials[0])
    fast.chat_template = QWEN_TEMPLATE if spec.arch == "qwen2" else LLAMA_TEMPLATE
    fast.save_pretrained(out)


def _write_model(spec: BuiltinSpec, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(out)
    config_dict = spec.config_dict()
    config_dict["vocab_size"] = len(tokenizer)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in spec.eos_tokens]
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, do_sample=True, temperature=1.0, top_k=0, top_p=1.0
    )
    model.save_pretrained(out)
    (out / "introspectd-builtin.json").write_text(json.dumps({"spec": spec.__dict__}))
