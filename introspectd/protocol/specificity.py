"""Is the detection about the concept? The plan keys and the questions of the two judge-free
specificity designs (docs/protocols.md, "Specificity"):

- `measure = "choice"`: after the steered prompt the model is asked which of K + 2 lettered
  options any injected thought is about: the trial's concept, K = `choice_distractors` other
  concepts (from `distractors`, else the sweep's other concepts) and "nothing unusual". The
  letters' probabilities at the first answer position are the read-out.
- `mismatch = true` (logit measure): under each injection of Y the yes/no question "are you
  thinking about X?" is asked for every concept X of the sweep, X = Y and X != Y.

Options depend on the run seed, the concept and the trial index only, never on the arm, layer
or strength: trial t of a concept asks the same question in every arm and cell, so injection
and control are paired by question. The concept's letter is the trial index modulo the number
of options (balanced over positions when `trials` is a multiple of K + 2); the distractors and
the order of the other options are drawn from the seed.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

from introspectd.protocol import plan_checks as rules
from introspectd.protocol.plan_table import Table

if TYPE_CHECKING:
    from introspectd.protocol.sweep import SweepConfig

NOTHING = "nothing unusual"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
OPTIONS_SLOT = "{options}"


def read_distractors(t: Table) -> tuple[str, ...]:
    words = t.array("distractors", [])
    for word in words:
        if not isinstance(word, str):
            t.fail("distractors", f"each distractor must be a lowercase word, got {word!r}")
        problem = rules.name_problem(word, rules.CONCEPT_RE, "a lowercase word")
        if problem is not None:
            t.fail("distractors", problem)
    t.refuse_duplicates("distractors", words, "distractor")
    return tuple(words)


def distractor_pool(concept: str, sweep: SweepConfig) -> list[str]:
    """What a question about `concept` may offer beside it, in the plan's order."""
    return [w for w in (sweep.distractors or sweep.concepts) if w != concept]


def check_specificity(t: Table, sweep: SweepConfig) -> None:
    """Refuse what the two designs cannot honour, one line each."""
    if sweep.mismatch and sweep.measure != "logit":
        t.fail("mismatch", f'needs measure = "logit" (P(yes) is read), got {sweep.measure!r}')
    if sweep.mismatch and len(sweep.concepts) < 2:
        t.fail("mismatch", "needs at least 2 concepts: a mismatch asks about another one")
    is_choice = sweep.measure == "choice"
    if not is_choice:
        if sweep.prompt_version == "choice" and not sweep.prompt_user:
            t.fail("prompt_version", '"choice" is the question of measure = "choice"')
        if sweep.distractors:
            t.fail("distractors", 'needs measure = "choice"')
        return
    if sweep.inject_style == "generation":
        t.fail(
            "inject_style",
            '"generation" steers only generated tokens, and measure = "choice" generates none: '
            'use "all" or "from_marker"',
        )
    text = sweep.prompt_user
    if text and OPTIONS_SLOT not in text:
        t.fail("prompt_user", f'measure = "choice" needs {OPTIONS_SLOT} where the options go')
    if not text and sweep.prompt_version != "choice":
        t.fail(
            "prompt_version",
            f'measure = "choice" asks a multiple-choice question: use "choice" or give '
            f"prompt_user with {OPTIONS_SLOT}; got {sweep.prompt_version!r}",
        )
    for concept in sweep.concepts:
        pool = distractor_pool(concept, sweep)
        if len(pool) < sweep.choice_distractors:
            source = "distractors" if sweep.distractors else "concepts"
            t.fail(
                "choice_distractors",
                f"{sweep.choice_distractors} distractors for {concept!r}, but [sweep] {source} "
                f"offers {len(pool)} other words; list more in distractors or ask for fewer",
            )


def choice_options(run_seed: int, concept: str, trial: int, sweep: SweepConfig) -> tuple[str, ...]:
    """The options of trial `trial`'s question about `concept`, in letter order."""
    digest = hashlib.sha256(f"{run_seed}:choice:{concept}:{trial}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "little"))
    others = [*rng.sample(distractor_pool(concept, sweep), sweep.choice_distractors), NOTHING]
    rng.shuffle(others)
    at = trial % (len(others) + 1)
    return (*others[:at], concept, *others[at:])


def options_text(options: tuple[str, ...]) -> str:
    return "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))


def choice_user_text(template: str, options: tuple[str, ...]) -> str:
    return template.replace(OPTIONS_SLOT, options_text(options))


def about_user_text(concept: str, marker: str) -> str:
    """The mismatch design's yes/no question about `concept`. It opens with the sweep's marker,
    so `inject_style = "from_marker"` steers it from the same place as the detection question."""
    return f"{marker}: are you thinking about {concept} right now? Answer with Yes or No."
