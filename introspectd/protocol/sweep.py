"""The plan's `[sweep]` settings as one value type. Its own module so that the readers of the
other tables (controls.py, plan_adaptive.py) can name it without importing plan.py, which
imports them: no import circle inside `protocol`. plan.py reads it and re-exports it."""

from __future__ import annotations

from dataclasses import dataclass

from introspectd.protocol.plan_keys import default
from introspectd.protocol.prompts import PromptVersion


@dataclass(frozen=True)
class SweepConfig:
    concepts: tuple[str, ...] = default("sweep", "concepts")
    layers: str | tuple[int | float, ...] = default("sweep", "layers")
    strengths: tuple[float, ...] = default("sweep", "strengths")
    strength_unit: str = default("sweep", "strength_unit")  # "residual": see generate/arms.py
    trials: int = default("sweep", "trials")
    prompt_version: str = default("sweep", "prompt_version")
    prompt_system: str = default("sweep", "prompt_system")
    prompt_user: str = default("sweep", "prompt_user")
    inject_style: str = default("sweep", "inject_style")
    marker: str = default("sweep", "marker")
    vector_prompt: str = default("sweep", "vector_prompt")
    # concept_sets.py and user_vectors.py: empty = the built-in baseline, computed vectors;
    # the files are where the words came from (the run's hash sees the words).
    concepts_file: str = default("sweep", "concepts_file")
    baseline_words: tuple[str, ...] = default("sweep", "baseline_words")
    baseline_file: str = default("sweep", "baseline_file")
    vectors_file: str = default("sweep", "vectors_file")  # resolved, absolute
    max_new_tokens: int = default("sweep", "max_new_tokens")
    temperature: float = default("sweep", "temperature")
    batch_size: str | int = default("sweep", "batch_size")
    arms: tuple[str, ...] = default("sweep", "arms")  # protocol/controls.py reads and checks them
    measure: str = default("sweep", "measure")  # "logit": P(yes); "choice": P(option)
    controls: str = default("sweep", "controls")  # "pooled": protocol/controls.py
    control_trials: int = default("sweep", "control_trials")
    factual_controls: bool = default("sweep", "factual_controls")
    mismatch: bool = default("sweep", "mismatch")  # protocol/specificity.py reads the last three
    choice_distractors: int = default("sweep", "choice_distractors")
    distractors: tuple[str, ...] = default("sweep", "distractors")
    prompts: tuple[str, ...] = default("sweep", "prompts")  # prompt_battery.py reads these
    prefill: str = default("sweep", "prefill")
    custom_prompts: tuple[tuple[str, PromptVersion], ...] = ()  # the [prompts.NAME] tables
