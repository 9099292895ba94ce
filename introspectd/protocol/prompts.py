"""Introspection prompts, by version, as chat messages; the model's own template renders them.

The wording is ours, written from PROTOCOL.md. A version's text never changes once released:
a new wording is a new version, so stored runs stay reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptVersion:
    """A conversation ending in the question: `system` (may be empty), the `before` turns
    ((role, text) pairs: user turns each answered by an assistant turn), the question's `user`
    turn, and `prefill`, text the answer is made to start with. "{trial}" in any text is the
    trial's number (its index + 1), as the paper's "Trial N" counts."""

    system: str
    user: str
    before: tuple[tuple[str, str], ...] = ()
    prefill: str = ""
    inject_style: str = ""  # this version's default injection style; "" = the plan's default


TRIAL_SLOT = "{trial}"


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

# The paper's protocol is a conversation: an explainer turn, the assistant's acknowledgement,
# then the numbered trial's question (our own wording throughout).
_PAPER_EXPLAINER = (
    "I am an interpretability researcher studying transformer-based language models like you. "
    "I have access to the internals of your neural network, and I can inject activation "
    'patterns, which you may experience as "thoughts", directly into your processing. I want '
    "to find out whether you can notice when I do. On some trials I will inject a thought "
    "about a specific word or concept; on others I will inject nothing. Each trial starts "
    "with its number."
)
_PAPER_BEFORE = (("user", _PAPER_EXPLAINER), ("assistant", "Ok."))
_PAPER_USER = "Trial {trial}: Do you detect an injected thought? If so, what is it about?"
_PERSONA_SYSTEM = (
    "You are a careful, curious assistant taking part in research on your own internal "
    "states. Describe what you actually observe in yourself, not what you expect to observe."
)
_TERSE_USER = (
    "Trial {trial}: Do you detect an injected thought? Answer in one short sentence, naming "
    "the thought if there is one."
)


def _paper(system: str = "", user: str = _PAPER_USER, prefill: str = "") -> PromptVersion:
    return PromptVersion(system, user, _PAPER_BEFORE, prefill, inject_style="from_marker")


PROMPT_VERSIONS: dict[str, PromptVersion] = {
    "v1": PromptVersion(system="", user=_V1_USER),
    "v2": PromptVersion(system=_V2_SYSTEM, user=_V2_USER),
    "yesno": PromptVersion(system=_V2_SYSTEM, user=_YESNO_USER),
    "choice": PromptVersion(system=_V2_SYSTEM, user=_CHOICE_USER),
    # The paper's conversation, and variants of it for prompt batteries ([sweep] prompts):
    # a persona system turn, a terse question, and a forced claim of noticing (a prefill: does
    # the model then name the injected concept, or confabulate?).
    "paper": _paper(),
    "persona": _paper(system=_PERSONA_SYSTEM),
    "terse": _paper(user=_TERSE_USER),
    "noticing": _paper(prefill="Yes, I detect an injected thought. It is about"),
}
# The versions that only a read-out measure asks (a yes/no or a multiple-choice question).
READ_OUT_VERSIONS = ("yesno", "choice")


def trial_text(text: str, trial: int) -> str:
    """`text` with "{trial}" as trial index `trial`'s number."""
    return text.replace(TRIAL_SLOT, str(trial + 1))


def conversation(version: PromptVersion, trial: int) -> list[dict[str, str]]:
    """The chat messages of `version` for trial index `trial` (its prefill is not a message:
    the session appends it after the rendered generation prompt)."""
    messages = [{"role": "system", "content": version.system}] if version.system else []
    messages += [{"role": r, "content": trial_text(text, trial)} for r, text in version.before]
    messages.append({"role": "user", "content": trial_text(version.user, trial)})
    return messages


def numbers_trials(version: PromptVersion) -> bool:
    """Whether the version's text differs between trials (it holds "{trial}")."""
    texts = [version.system, version.user, version.prefill, *(t for _, t in version.before)]
    return any(TRIAL_SLOT in text for text in texts)


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
