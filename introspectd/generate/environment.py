"""What the run's model ran on, as plain facts: torch's version and build, CUDA, and the name
of every device holding the model's weights (app/provenance.py stores them)."""

from __future__ import annotations

import platform
from typing import Any

import torch


def torch_environment(model: torch.nn.Module) -> dict[str, Any]:
    devices = sorted({str(p.device) for p in model.parameters()})
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,  # None for a CPU build
        "devices": [{"device": d, "name": device_name(torch.device(d))} for d in devices],
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    if device.type == "cpu":
        return platform.processor() or platform.machine() or "cpu"
    return device.type
