"""De-quantize a GGUF file once into a safetensors checkpoint (protocol/gguf_source.py says where).

transformers' GGUF loader de-quantizes every tensor to float32 on each load and then refuses
to save the model (it still carries a GGUF quantizer). The tensors it produced are plain float
weights, so the quantizer is dropped before saving: later runs load the checkpoint in under a
second. Concurrent runs race safely (cache_dir.write_once).
"""

from __future__ import annotations

import logging
import os
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

from introspectd.generate.cache_dir import DONE_MARKER, write_once
from introspectd.protocol.gguf_source import gguf_config
from introspectd.protocol.models import ModelRef

log = logging.getLogger("introspectd")


def dequantize_once(ref: ModelRef) -> Path:
    """`ref.source`, de-quantized from `ref.gguf` unless that was done before. ValueError
    for a file transformers cannot load (the generator words it as one line for the plan)."""
    gguf = ref.gguf
    assert gguf is not None
    dest = Path(ref.source)
    if (dest / DONE_MARKER).is_file():
        return dest
    arch = str(gguf_config(gguf, str(gguf)).get("model_type") or "?")
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch!r} is not one transformers can load "
            f"(it loads: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})"
        )
    log.warning("de-quantizing %s once into %s (about 30 s per 100M parameters)", gguf, dest)
    return write_once(dest, lambda work: _convert(gguf, work))


def _convert(path: Path, out: Path) -> None:
    kwargs: dict[str, Any] = {"gguf_file": path.name}
    try:
        # The loader draws its own tqdm bar on stderr; the log line above says what happens.
        with open(os.devnull, "w") as quiet, redirect_stderr(quiet):
            tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"transformers cannot load this GGUF file: {reason}") from None
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
