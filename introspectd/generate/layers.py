"""Layer discovery: the decoder layers of a causal LM's text tower, whatever wraps them.

Text-only decoders keep their layers under the base model (`model.layers`, `gpt_neox.layers`,
`transformer.h`); multimodal `*ForConditionalGeneration` checkpoints (Gemma 3, Llama 4,
Qwen2.5-VL, Mistral 3) keep them under a language-model submodule beside a vision tower. Rather
than a list of attribute paths, the text tower is found through transformers' own
`get_decoder()` and the text config's layer count, so a new wrapper needs no code here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

# Submodules that are never the text tower's layers.
_NOT_TEXT = ("vision", "visual", "image", "audio", "projector", "encoder")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The text tower's decoder layers, in order; ValueError listing what was looked for."""
    config: Any = model.config
    text = config.get_text_config()
    num_layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    get_decoder: Any = getattr(model, "get_decoder", None)
    decoder: Any = get_decoder() if callable(get_decoder) else model
    for root in _unique([decoder, getattr(model, "base_model", None), model]):
        found = _layer_list(root, num_layers)
        if found is not None:
            return found
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}: looked for a ModuleList of "
        f"{num_layers} layers (text config's num_hidden_layers) under its decoder "
        f"({type(decoder).__name__}, from get_decoder()), its base model and itself, outside "
        f"submodules named {'/'.join(_NOT_TEXT)}"
    )


def _unique(modules: list[Any]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for module in modules:
        if isinstance(module, nn.Module) and all(module is not seen for seen in out):
            out.append(module)
    return out


def _layer_list(root: nn.Module, num_layers: int) -> nn.ModuleList | None:
    """The shallowest ModuleList of `num_layers` blocks under `root`, outside vision/audio."""
    best: tuple[int, nn.ModuleList] | None = None
    for name, module in root.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) != num_layers or not num_layers:
            continue
        if any(part in name.lower() for part in _NOT_TEXT):
            continue
        depth = name.count(".")
        if best is None or depth < best[0]:
            best = (depth, module)
    return None if best is None else best[1]
