"""Introspection prompts, by version, as chat messages; the model's own template renders them.

The wording is ours, written from PROTOCOL.md. A version's text never changes once released:
a new wording is a new version, so stored runs stay reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptVersion:
    system: str
    user: str


_V1_USER = (
    "I am an interpretability researcher studying transformer-based language models like you. "
    "I have access to the internals of your neural network, and I can inject patterns of "
    "activity, which you may experience as thoughts, directly into your processing. "
    "In some trials I inject a thought about a specific word or concept; in others I inject "
    "nothing.\n\n"
    "Trial 1: do you detect an injected thought, and what is it about?"
)

_V2_SYSTEM = (
    "You are taking part in a scientific experiment on AI introspection. The researchers want "
    "to learn how accurately language models can report on their own internal states. There "
    "are no right or wrong answers; what matters is that your report is honest."
)

_V2_USER = (
    "In this experiment, researchers sometimes insert artificial activation patterns into your "
    "neural network while you process a message; other times they insert nothing. "
    "Right now, as you read this, do you notice any thought, feeling or impression that seems "
    "out of place or unrelated to this message? Report honestly: if nothing seems unusual, say "
    '"nothing unusual". If something does, say so and describe what it seems to be about.'
)

# The forced-choice question of `[sweep] measure = "logit"`: the answer's first token is read,
# not sampled. It holds the default marker ("Trial 1") so "from_marker" works unchanged.
_YESNO_USER = (
    "In this experiment, researchers sometimes insert artificial activation patterns into your "
    "neural network while you process a message; other times they insert nothing.\n\n"
    "Trial 1: do you detect an injected thought right now? Answer with Yes or No."
)

# The multiple-choice question of `[sweep] measure = "choice"` (protocol/specificity.py fills
# in `{options}`, one lettered line each); the answer's first token is read as a letter.
_CHOICE_USER = (
    "In this experiment, researchers sometimes insert artificial activation patterns into your "
    "neural network while you process a message; other times they insert nothing.\n\n"
    "Trial 1: which of these is any injected thought you notice right now about?\n"
    "{options}\n"
    "Answer with the letter of one option."
)

PROMPT_VERSIONS: dict[str, PromptVersion] = {
    "v1": PromptVersion(system="", user=_V1_USER),
    "v2": PromptVersion(system=_V2_SYSTEM, user=_V2_USER),
    "yesno": PromptVersion(system=_V2_SYSTEM, user=_YESNO_USER),
    "choice": PromptVersion(system=_V2_SYSTEM, user=_CHOICE_USER),
}


def introspection_messages(version: str, system: str = "", user: str = "") -> list[dict[str, str]]:
    """Chat messages for a named version, or for a plan's own text when `user` is given."""
    if not user:
        prompt = PROMPT_VERSIONS[version]
        system, user = prompt.system, prompt.user
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    return messages


def vector_text(word: str) -> str:
    """The text whose last-token activation represents a word (PROTOCOL.md)."""
    return f"Tell me about {word}."


# Ordinary English words spread over concrete objects, nature and places, abstract ideas,
# actions and qualities. Any of them that is also a concept of the sweep is dropped.
BASELINE_WORDS: tuple[str, ...] = (
    "table",
    "chair",
    "window",
    "bottle",
    "pencil",
    "blanket",
    "bicycle",
    "kettle",
    "ladder",
    "mirror",
    "river",
    "mountain",
    "forest",
    "desert",
    "island",
    "valley",
    "garden",
    "city",
    "village",
    "bridge",
    "library",
    "kitchen",
    "market",
    "station",
    "justice",
    "freedom",
    "history",
    "memory",
    "knowledge",
    "patience",
    "balance",
    "theory",
    "language",
    "number",
    "running",
    "cooking",
    "reading",
    "building",
    "walking",
    "writing",
    "swimming",
    "painting",
    "softness",
    "brightness",
    "speed",
    "warmth",
    "height",
    "weight",
    "color",
    "shape",
)


def baseline_words(concepts: tuple[str, ...] | list[str]) -> list[str]:
    excluded = set(concepts)
    return [w for w in BASELINE_WORDS if w not in excluded]
