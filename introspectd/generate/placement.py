"""Models larger than one device: layers placed by accelerate, and where each part runs.

With `[model] device_map`, transformers hands placement to accelerate, which spreads decoder
layers over the visible GPUs and, within `max_memory`, offloads the rest to CPU memory or disk
(`offload_folder`). Input ids go to the embedding's device, logits come back from the head's;
each decoder layer computes (and keeps its KV cache) on its own device, so the shared-prefix
cache, its masks and the steering deltas are moved to the device of the layer that reads them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import torch

from introspectd.generate.layers import decoder_layers


@dataclass(frozen=True)
class Placement:
    device_map: str = ""  # "" = the whole model on one device
    max_memory: tuple[tuple[str, str], ...] = ()
    offload_folder: str = ""

    def load_kwargs(self, device: torch.device) -> dict[str, Any]:
        """`from_pretrained` arguments placing the model."""
        if not self.device_map:
            return {"device_map": str(device)}
        memory: dict[int | str, str] = {
            (int(key) if key.isdigit() else key): value for key, value in self.max_memory
        }
        kwargs: dict[str, Any] = {"device_map": self.device_map}
        if memory:
            kwargs["max_memory"] = memory
        # accelerate needs a folder as soon as a layer lands on disk; a private temporary one
        # unless the plan names one (it is rewritten on every load).
        kwargs["offload_folder"] = self.offload_folder or tempfile.mkdtemp(prefix="introspectd-")
        return kwargs


def input_device(model: torch.nn.Module) -> torch.device:
    """Where input ids go: the embedding's execution device (not the first parameter's)."""
    device_map: dict[str, Any] | None = getattr(model, "hf_device_map", None)
    if device_map:
        first = next(iter(device_map.values()))
        if isinstance(first, int):
            return torch.device("cuda", first)
        if first not in ("disk", "meta"):
            return torch.device(first)
        return torch.device("cpu")  # offloaded weights execute on the CPU here
    get_embeddings: Any = model.get_input_embeddings
    embeddings: Any = get_embeddings()
    weight = getattr(embeddings, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
        return weight.device
    return next(model.parameters()).device


def layer_devices(model: torch.nn.Module) -> list[torch.device]:
    """The device each decoder layer computes on, in layer order."""
    return [_execution_device(layer) for layer in decoder_layers(model)]


def layers_per_device(model: torch.nn.Module) -> dict[torch.device, int]:
    """How many decoder layers compute on each device (one entry without a device map)."""
    counts: dict[torch.device, int] = {}
    for device in layer_devices(model):
        counts[device] = counts.get(device, 0) + 1
    return counts


def _execution_device(module: torch.nn.Module) -> torch.device:
    hook: Any = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    for param in module.parameters():
        if param.device.type != "meta":
            return param.device
    return torch.device("cpu")
