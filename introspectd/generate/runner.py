"""The model owner: loads weights and tokenizer, renders prompts, extracts concept vectors.

Nothing outside `generate/` touches torch; within it, `session` loads this runner for either
engine (`generator`, `logit`), which bridge it to the run loop.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, GenerationConfig
from transformers.utils import logging as hf_logging

from introspectd.generate.batcher import Batcher, attention_shape, tokens_per_row
from introspectd.generate.builtin import BUILTIN_SPECS, build
from introspectd.generate.decoding import BatcherConfig
from introspectd.generate.gguf import dequantize_once
from introspectd.generate.layers import decoder_layers
from introspectd.generate.loading import load_causal_lm
from introspectd.generate.placement import Placement, input_device, layers_per_device
from introspectd.protocol.chat_templates import adds_special_tokens, template_text
from introspectd.protocol.models import ModelRef
from introspectd.protocol.prompts import vector_text

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MAX_CPU_BATCH_SIZE = 256
MAX_GPU_BATCH_SIZE = 1024


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def available_ram() -> int:
    """Bytes the kernel reports as available (Linux), else a conservative 4 GiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def batch_size_for(model: torch.nn.Module, row_tokens: int) -> int:
    """Rows whose own KV slots (`row_tokens` positions each) and sampling temporaries fit in 60%
    of free GPU memory, or a quarter of available RAM on CPU (at most 256 rows there: a CPU
    gains little from more, and results would reach the judge later). With layers on several
    devices, each holds the KV of its own layers: the device that fills first decides."""
    param = next(model.parameters())
    _, kv_heads, head_dim, _ = attention_shape(model)
    config: Any = model.config
    vocab_size = int(config.get_text_config().vocab_size)
    layer_kv_bytes = 2 * kv_heads * head_dim * row_tokens * param.element_size()
    sampling_device = input_device(model)
    fits = []
    for device, num_layers in layers_per_device(model).items():
        per_row = num_layers * layer_kv_bytes
        # Sampling holds at most two float32 [B, V] temporaries (logits / T and their softmax);
        # 16 bytes a token leaves room for the model's own float32 logits beside them.
        per_row += 16 * vocab_size if device == sampling_device else 0
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget, cap = free * 0.6, MAX_GPU_BATCH_SIZE
        else:
            budget, cap = available_ram() * 0.25, MAX_CPU_BATCH_SIZE
        fits.append(min(cap, int(budget) // max(per_row, 1)))
    return max(1, min(fits))


class Runner:
    def __init__(
        self,
        ref: ModelRef,
        dtype: str = "auto",
        device: str = "auto",
        placement: Placement | None = None,
        chat_template: str = "",
    ) -> None:
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        if ref.builtin is not None:
            build(BUILTIN_SPECS[ref.builtin], Path(ref.source))
        if ref.gguf is not None:
            dequantize_once(ref)
        placement = placement or Placement()
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(ref.source)
        if chat_template:  # the plan's, in place of the model's own (chat_templates.py)
            self.tokenizer.chat_template = template_text(chat_template)
        self.add_special_tokens = adds_special_tokens(chat_template)
        if not self.tokenizer.chat_template:
            # ValueError: the generator words it as one line naming the plan and the model.
            raise ValueError(
                "the tokenizer has no chat template: introspectd asks its questions as a "
                'conversation; for a base model set [model] chat_template = "plain"'
            )
        self.model = load_causal_lm(ref.source, self.dtype, placement.load_kwargs(self.device))
        self.model.eval()
        self.device = input_device(self.model)
        self.num_layers = len(decoder_layers(self.model))

    # --- prompts and stop tokens -----------------------------------------------------------

    def render(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True, prefill: str = ""
    ) -> list[int]:
        """The prompt's token ids; `prefill` is the start of the answer, after the generation
        prompt (tokenized with it, as the model would have written it)."""
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )
        text = str(text) + prefill
        # The template already wrote any BOS; adding special tokens again would double it
        # (except for the plain template, which writes none).
        encoded = self.tokenizer(text, add_special_tokens=self.add_special_tokens)
        return list(encoded["input_ids"])

    def marker_position(self, messages: list[dict[str, str]], marker: str) -> int | None:
        """Index (in `render(messages)`) of the first token of the user turn's `marker`; None
        when the rendered prompt does not hold the user's text as given (a template that
        rewrites it) with the marker in it."""
        text = str(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )
        user_at = text.find(messages[-1]["content"])
        start = text.find(marker, user_at) if user_at >= 0 else -1
        if start < 0:
            return None
        encoded = self.tokenizer(
            text, add_special_tokens=self.add_special_tokens, return_offsets_mapping=True
        )
        for index, (_, end) in enumerate(encoded["offset_mapping"]):
            if end > start:
                return index
        return None

    def eos_ids(self) -> list[int]:
        """End-of-turn tokens from the generation config and tokenizer, never hard-coded."""
        ids: set[int] = set()
        gen: GenerationConfig | None = getattr(self.model, "generation_config", None)
        for source in (gen.eos_token_id if gen else None, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if (
                isinstance(token_id, int)
                and token_id != self.tokenizer.unk_token_id
                and token in self.tokenizer.get_vocab()
            ):
                ids.add(token_id)
        return sorted(ids)

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True)).strip()

    # --- concept vectors -------------------------------------------------------------------

    @torch.inference_mode()
    def last_token_activations(
        self, words: list[str], layers: list[int], use_chat: bool, chunk: int = 64
    ) -> dict[int, torch.Tensor]:
        """`{layer: [len(words), d]}` float32: the output of decoder layer L at the last token."""
        texts = [vector_text(w) for w in words]
        if use_chat:
            encoded = [self.render([{"role": "user", "content": t}]) for t in texts]
        else:
            encoded = [list(self.tokenizer(t)["input_ids"]) for t in texts]
        out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.eos_ids()[0] if self.eos_ids() else 0
        for start in range(0, len(encoded), chunk):
            part = encoded[start : start + chunk]
            width = max(len(ids) for ids in part)
            # Right padding: causal attention keeps each text's last real token unaffected.
            ids = torch.full((len(part), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for i, row in enumerate(part):
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
            hidden = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                output_hidden_states=True,
            ).hidden_states
            last = (mask.sum(dim=1) - 1).to(self.device)
            rows = torch.arange(len(part), device=self.device)
            for layer in layers:
                states = hidden[layer + 1]  # on its layer's device when placed across several
                picked = states[rows.to(states.device), last.to(states.device)]
                out[layer].append(picked.float().cpu())
        return {layer: torch.cat(chunks) for layer, chunks in out.items()}

    def concept_vectors(
        self, concepts: list[str], baseline: list[str], layers: list[int], use_chat: bool
    ) -> dict[tuple[str, int], torch.Tensor]:
        """PROTOCOL.md: act(concept, L) − mean over baseline words of act(word, L)."""
        acts = self.last_token_activations(list(concepts) + list(baseline), layers, use_chat)
        vectors = {}
        for layer, matrix in acts.items():
            mean = matrix[len(concepts) :].mean(dim=0)
            for i, concept in enumerate(concepts):
                vectors[(concept, layer)] = matrix[i] - mean
        return vectors

    def residual_norms(
        self, words: list[str], layers: list[int], use_chat: bool
    ) -> dict[int, float]:
        """Each layer's mean ‖h_L‖ at the last token of the vector prompts of `words` (the
        baseline words: fixed for a run, so adding concepts later changes no layer's value)."""
        acts = self.last_token_activations(list(words), layers, use_chat)
        return {layer: float(matrix.norm(dim=1).mean()) for layer, matrix in acts.items()}

    # --- generation ------------------------------------------------------------------------

    def auto_batch_size(self, prompt_len: int, config: BatcherConfig) -> int:
        return batch_size_for(self.model, tokens_per_row(prompt_len, config))

    def batch_size_for_tokens(self, row_tokens: int) -> int:
        return batch_size_for(self.model, row_tokens)

    def batcher(self, prompt_ids: list[int], config: BatcherConfig) -> Batcher:
        return Batcher(self.model, prompt_ids, self.eos_ids(), config)
