"""The plan's `[mentions]` table: per concept, the words that count as an answer mentioning it,
replacing the built-in list (protocol/lexicon.py has the lists and the matcher).

    [mentions]
    ocean = ["ocean", "sea", "wave*"]

It decides no trial, so it is left out of the plan hash: adding or changing it on a run that
exists is allowed and changes no id. The report reads it from the plan stored with the run.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from introspectd.protocol import plan_checks as rules
from introspectd.protocol.lexicon import Lexicon, entry_problem
from introspectd.protocol.plan_table import Table

# A hand-written list is tens of words; thousands are a pasted dictionary, and every answer of
# the report is matched against the list.
MAX_WORDS = 500


@dataclass(frozen=True)
class MentionsConfig:
    """`[mentions]`: (concept, words) pairs in the plan's order; empty = the built-in lists."""

    words: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        """The table as the plan wrote it (how the stored plan JSON holds it)."""
        return {concept: list(words) for concept, words in self.words}

    def lexicon(self) -> Lexicon:
        return Lexicon(dict(self.words))


def read_mentions(t: Table, concepts: Collection[str] | None) -> MentionsConfig:
    """Every key of `t` is a concept of `concepts` (any concept name when None: a stored plan)
    with a non-empty list of lexicon entries."""
    pairs = []
    for concept in list(t.data):
        _check_concept(t, concept, concepts)
        words = t.array(concept, [])
        if not words:
            t.fail(concept, "must list at least one word (leave the concept out for the built-in)")
        if len(words) > MAX_WORDS:
            t.fail(concept, f"must list at most {MAX_WORDS} words, got {len(words)}")
        for word in words:
            if not isinstance(word, str):
                t.fail(concept, f"each word must be a string, got {word!r}")
            problem = entry_problem(word)
            if problem is not None:
                t.fail(concept, problem)
        pairs.append((concept, tuple(words)))
    return MentionsConfig(tuple(pairs))


def _check_concept(t: Table, concept: str, concepts: Collection[str] | None) -> None:
    # The key goes into the message quoted: it is not checked yet, and a newline in it would
    # break the one-line rule.
    if concepts is not None and concept not in concepts:
        t.fail("", f"{concept!r} is not one of [sweep] concepts ({', '.join(concepts)})")
    problem = rules.name_problem(concept, rules.CONCEPT_RE, "a concept (a lowercase word)")
    if problem is not None:
        t.fail("", f"{concept!r}: {problem}")


def mentions_from_stored(stored: Mapping[str, Any], where: str) -> MentionsConfig:
    """The `mentions` of a stored plan JSON (absent in runs made before it existed), checked as
    the plan's table is; `where` names the source in a BadInput."""
    return read_mentions(Table(where, "mentions", stored.get("mentions", {})), None)
