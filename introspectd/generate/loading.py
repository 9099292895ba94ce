"""Loading a checkpoint as a causal LM, and only its text tower when it is multimodal.

A `*ForConditionalGeneration` checkpoint (Gemma 3, Llama 4, Qwen2.5-VL, Mistral 3) holds a
vision tower introspectd never runs. Where transformers has a text-only causal LM class for the
text config, the text tower loads alone: its weights are renamed from their place under the
language-model submodule, and the vision weights stay on disk. If that leaves any weight of the
text model unset, the whole checkpoint loads instead (layers.decoder_layers finds the text
tower's layers in it either way).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

log = logging.getLogger("introspectd")

# Where multimodal checkpoints keep their text tower's weights → the text-only class's names.
TEXT_TOWER_KEYS = {
    r"^model\.language_model\.": "model.",
    r"^language_model\.model\.": "model.",
    r"^language_model\.lm_head\.": "lm_head.",
}


def load_causal_lm(source: str, dtype: torch.dtype, placement: dict[str, Any]) -> Any:
    """The model at `source` for generation: its text tower alone where that is possible."""
    config: Any = AutoConfig.from_pretrained(source)
    text = config.get_text_config()
    if text is not config and text.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            source,
            config=text,
            dtype=dtype,
            key_mapping=TEXT_TOWER_KEYS,
            output_loading_info=True,
            **placement,
        )
        model, info = loaded
        if not info["missing_keys"] and not info["mismatched_keys"]:
            log.info("loaded the text tower of %s only (%s)", source, type(model).__name__)
            return model
        del model
    # transformers' default attention: SDPA where the model supports it. (Asking for SDPA
    # outright would refuse to load the models that need eager attention.)
    return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **placement)
