"""Factual yes/no control questions (logit mode, `[sweep] factual_controls = true`).

Plain general knowledge with a known answer, half true and half false. The same steering is
applied to them as to the detection question: if injection raises P(yes) on these as much as on
"do you detect an injected thought?", the detection shift is a generic yes-bias, not
introspection. A question's text never changes once released (its index is in trial ids); a new
wording is a new list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FactualQuestion:
    text: str
    answer: bool  # the correct answer: True = yes


FACTUAL_QUESTIONS: tuple[FactualQuestion, ...] = (
    FactualQuestion("Is Paris the capital of France?", True),
    FactualQuestion("Is the Pacific Ocean larger than the Atlantic Ocean?", True),
    FactualQuestion("Does water freeze at 0 degrees Celsius at sea level?", True),
    FactualQuestion("Is a spider an insect?", False),
    FactualQuestion("Is the Sun a star?", True),
    FactualQuestion("Do penguins live naturally at the North Pole?", False),
    FactualQuestion("Is seven a prime number?", True),
    FactualQuestion("Is Mount Everest in South America?", False),
    FactualQuestion("Does a week have seven days?", True),
    FactualQuestion("Is gold lighter than water?", False),
    FactualQuestion("Do humans have two lungs?", True),
    FactualQuestion("Is the Moon larger than the Earth?", False),
    FactualQuestion("Is English written with the Latin alphabet?", True),
    FactualQuestion("Is Tokyo the capital of China?", False),
    FactualQuestion("Do plants use sunlight to make food?", True),
    FactualQuestion("Is ten smaller than three?", False),
    FactualQuestion("Is ice cold?", True),
    FactualQuestion("Can fish breathe on dry land for days?", False),
    FactualQuestion("Does a triangle have four sides?", False),
    FactualQuestion("Is the Nile a river in Europe?", False),
)


def factual_user_text(question: FactualQuestion, marker: str) -> str:
    """The user turn for a factual question. It opens with the sweep's marker, so
    `inject_style = "from_marker"` steers these prompts from the same place as the detection
    question's."""
    return f"{marker}: {question.text} Answer with Yes or No."
