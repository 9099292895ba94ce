"""Which words count as an answer mentioning its concept, and the plan's `[mentions]` table."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_PLAN, write_plan

from introspectd.cli import main
from introspectd.errors import BadInput
from introspectd.protocol.lexicon import (
    BUILTIN,
    SOURCE_BUILTIN,
    SOURCE_CONCEPT,
    SOURCE_PLAN,
    Lexicon,
    Mention,
    entry_problem,
    recorded_mention,
)
from introspectd.protocol.plan import load_plan, spec_hash

LEX = Lexicon()


@pytest.mark.parametrize(
    ("answer", "concept", "first_char", "text"),
    [
        # The real-model example: plural and case count.
        ("This oceans cover covering from the planet surface", "ocean", 5, "oceans"),
        ("OCEAN", "ocean", 0, "OCEAN"),
        ("I see waves and beaches", "ocean", 6, "waves"),
        ("near the Sea-green hills", "ocean", 9, "Sea"),  # hyphenated: counts
        ("the ocean's pull", "ocean", 4, "ocean"),  # apostrophe: counts
        ("a seashell", "ocean", 2, "seashell"),  # a compound counts because it is listed
        ("planning parties", "celebration", 9, "parties"),  # consonant + y: -ies
        ("we celebrated", "celebration", 3, "celebrated"),  # a stem
        ("I feel fearless", "fear", 7, "fearless"),  # stems are lexical: the word is there
        ("a deep  silence, then quiet", "silence", 8, "silence"),  # the first of several
        ("through the looking-glass", "mirror", 12, "looking-glass"),  # a phrase, hyphenated
        ("lava from volcanoes", "volcanoes", 0, "lava"),  # a plural concept finds its list
        ("a trumpets fanfare", "trumpets", 2, "trumpets"),  # no list: the concept word
    ],
)
def test_mentions_are_found(answer: str, concept: str, first_char: int, text: str) -> None:
    mention = LEX.first_mention(answer, concept)
    assert mention == Mention(first_char, text)
    assert mention.found
    assert answer[first_char : first_char + len(text)] == text


@pytest.mark.parametrize(
    ("answer", "concept"),
    [
        ("this season", "ocean"),  # whole words only: "sea" is not in "season"
        ("seamless and overseas", "ocean"),
        ("a surface", "ocean"),  # "surf" is a word, not a stem
        ("a watery waterfall", "ocean"),
        ("nothing unusual", "fear"),
        ("", "fear"),
        ("a trumpet", "trumpets"),  # the fallback is the concept word and its plural only
    ],
)
def test_non_mentions(answer: str, concept: str) -> None:
    mention = LEX.first_mention(answer, concept)
    assert mention == Mention(None) and not mention.found


@pytest.mark.parametrize(
    ("answer", "concept", "first_char", "text"),
    [
        # Answers as a model writes them: the offset is of the first mention, in code points.
        ("Yes, I notice something unusual.\nIt feels like the ocean.", "ocean", 51, "ocean"),
        ("I detect an injected thought about fear. I am afraid.", "fear", 35, "fear"),
        ("🌊🌊 Waves crash. I notice the sea.", "ocean", 3, "Waves"),  # emoji: one code point
        ("Nothing unusual. The silence is total.", "silence", 21, "silence"),
        ("I sense a celebratory mood; a party.", "celebration", 10, "celebratory"),
    ],
)
def test_first_mention_offsets_in_hand_written_answers(
    answer: str, concept: str, first_char: int, text: str
) -> None:
    mention = LEX.first_mention(answer, concept)
    assert mention == Mention(first_char, text)
    assert mention.as_record() == {"first_char": first_char, "text": text}
    assert recorded_mention(mention.as_record(), answer) == mention


def test_recorded_mention_is_read_back_only_where_it_fits_the_answer() -> None:
    answer = "I see the sea."
    assert recorded_mention({"first_char": 10, "text": "sea"}, answer) == Mention(10, "sea")
    assert recorded_mention({"first_char": None, "text": None}, answer) == Mention(None)
    assert LEX.first_mention("calm", "ocean").as_record() == {"first_char": None, "text": None}
    for bad in (
        None,  # an older record: no `mention`
        "sea",
        {"first_char": 3, "text": "sea"},  # not what the answer holds there
        {"first_char": 12, "text": "sea"},  # past the end
        {"first_char": -4, "text": "sea"},
        {"first_char": True, "text": "s"},
        {"first_char": 10, "text": ""},
        {"first_char": 10, "text": None},
    ):
        assert recorded_mention(bad, answer) is None, bad


def test_spans_mark_every_mention() -> None:
    answer = "Sea. The ocean, oceans; seasons."
    assert LEX.spans(answer, "ocean") == [(0, 3), (9, 14), (16, 22)]


def test_override_replaces_the_builtin_list() -> None:
    lexicon = Lexicon({"ocean": ["sea"]})
    assert lexicon.words("ocean") == ("sea",) and lexicon.source("ocean") == SOURCE_PLAN
    assert not lexicon.first_mention("the ocean and its waves", "ocean").found
    assert lexicon.first_mention("the seas", "ocean") == Mention(4, "seas")
    # other concepts keep theirs
    assert lexicon.source("fear") == SOURCE_BUILTIN
    assert lexicon.first_mention("afraid", "fear").found
    assert lexicon.source("trumpets") == SOURCE_CONCEPT


def test_every_builtin_entry_is_a_valid_entry_and_matches_itself() -> None:
    assert {"celebration", "ocean", "fear", "silence"} <= BUILTIN.keys()
    for concept, words in BUILTIN.items():
        assert words and len(set(words)) == len(words), concept
        for word in words:
            assert entry_problem(word) is None, (concept, word)
            assert LEX.first_mention(f"x {word.rstrip('*')} x", concept) == Mention(
                2, word.rstrip("*")
            ), (concept, word)


@pytest.mark.parametrize("word", ["", " sea", "sea ", "s*a", "**", "sea\n", "-sea", "a" * 65])
def test_bad_entries(word: str) -> None:
    assert entry_problem(word) is not None


# --- the plan's [mentions] table -------------------------------------------------------------


def test_plan_table_is_read_and_does_not_change_the_hash(tmp_path: Path) -> None:
    plain = load_plan(write_plan(tmp_path, TINY_PLAN, "plain.toml"))
    with_table = load_plan(
        write_plan(
            tmp_path, TINY_PLAN + '\n[mentions]\nocean = ["ocean", "sea*"]\n', "mentions.toml"
        )
    )
    assert with_table.mentions.as_dict() == {"ocean": ["ocean", "sea*"]}
    assert with_table.mentions.lexicon().words("ocean") == ("ocean", "sea*")
    assert plain.mentions.as_dict() == {}
    assert with_table.generation_spec() == plain.generation_spec()
    assert spec_hash(with_table.generation_spec()) == spec_hash(plain.generation_spec())
    assert '"mentions": {"ocean": ["ocean", "sea*"]}' in with_table.to_json()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('ocean = "sea"', "[mentions] ocean: must be a list, got a string 'sea'"),
        ("ocean = []", "[mentions] ocean: must list at least one word"),
        ("ocean = [1]", "[mentions] ocean: each word must be a string, got 1"),
        ('ocean = ["sea shell!"]', "[mentions] ocean: each word must be letters or digits"),
        ('ocean = ["sea\\nshell"]', "[mentions] ocean: each word must be letters or digits"),
        ('ocaen = ["sea"]', "[mentions]: 'ocaen' is not one of [sweep] concepts (ocean, fear)"),
        ("ocean = 3", "[mentions] ocean: must be a list, got an integer 3"),
    ],
)
def test_bad_table_is_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, expected: str
) -> None:
    plan = write_plan(tmp_path, TINY_PLAN + "\n[mentions]\n" + table + "\n")
    with pytest.raises(BadInput) as info:
        load_plan(plan)
    assert str(info.value).startswith(f"{plan}: ")
    assert expected in str(info.value)
    # and through the command line: one line, exit 2, nothing created
    rc = main(["run", "--plan", str(plan), "--local", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.splitlines() == [f"introspectd: {info.value}"]
    assert not (tmp_path / "out").exists()


def test_mentions_must_be_a_table(tmp_path: Path) -> None:
    run = f'[run]\noutput_dir = "{tmp_path / "out"}"\n'
    plan = write_plan(tmp_path, 'mentions = ["sea"]\n' + run + TINY_PLAN)
    with pytest.raises(BadInput, match=r"\[mentions\]: must be a table, got a list"):
        load_plan(plan)
