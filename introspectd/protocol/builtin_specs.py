"""The built-in random-weights models' shapes and chat formats: plain data, no torch.

The plan needs them to resolve `builtin:*` names and read a model's config before any weights
load; generate/builtin.py builds the models from them.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    def chat_template(self) -> str:
        return QWEN_TEMPLATE if self.arch == "qwen2" else LLAMA_TEMPLATE

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
