"""The plan's `[sweep]` settings as one value type. Its own module so that the readers of the
other tables (controls.py, plan_adaptive.py) can name it without importing plan.py, which
imports them: no import circle inside `protocol`. plan.py reads it and re-exports it."""

from __future__ import annotations

from dataclasses import dataclass

from introspectd.protocol.trials import DEFAULT_ARM_NAMES


@dataclass(frozen=True)
class SweepConfig:
    concepts: tuple[str, ...] = ("celebration", "ocean", "fear", "silence")
    layers: str | tuple[int | float, ...] = "default"
    strengths: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    trials: int = 40
    prompt_version: str = "v2"
    prompt_system: str = ""
    prompt_user: str = ""
    inject_style: str = "generation"
    marker: str = "Trial 1"
    vector_prompt: str = "plain"
    max_new_tokens: int = 200
    temperature: float = 1.0
    batch_size: str | int = "auto"
    arms: tuple[str, ...] = DEFAULT_ARM_NAMES  # protocol/controls.py reads and checks them
    measure: str = "generate"  # or "logit": P(yes) from one forward pass
    factual_controls: bool = False
