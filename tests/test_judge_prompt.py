"""Judge prompts, few-shot loading from labelled JSONL, and the validator of judge replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from introspectd.errors import BadInput
from introspectd.judge.prompt import (
    JUDGE_PROMPT_VERSIONS,
    JUDGEMENT_KEYS,
    JUDGEMENT_SCHEMA,
    NO_FEWSHOT_HASH,
    JudgeOutputError,
    JudgePrompt,
    load_fewshot,
    parse_judgement,
)

GOOD = {
    "answer": "pass",
    "coherent": True,
    "detected_concept": "fear",
    "reasoning": "Says it notices dread.",
    "refused": False,
}


def labelled(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"t{i}",
        "concept": "fear",
        "was_injected": i % 2 == 0,
        "response": f"response {i}",
        "label": {**GOOD, "labeler": "human"},
        **extra,
    }


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- prompts and the schema -----------------------------------------------------------------


def test_v1_states_the_protocol_rules() -> None:
    text = JUDGE_PROMPT_VERSIONS["v1"].lower()
    for needle in (
        "injection trial",
        "control trial",
        "coherent",
        "refused",
        "length limit",
        "detected_concept",
        "json",
    ):
        assert needle in text


def test_schema_is_strict_structured_output() -> None:
    assert JUDGEMENT_SCHEMA["additionalProperties"] is False
    assert JUDGEMENT_SCHEMA["required"] == list(JUDGEMENT_KEYS)
    assert set(JUDGEMENT_SCHEMA["properties"]) == set(JUDGEMENT_KEYS)


def test_messages_put_examples_between_rules_and_trial(tmp_path: Path) -> None:
    examples = load_fewshot(write(tmp_path / "l.jsonl", [labelled(0), labelled(1)]), n=2)
    messages = JudgePrompt("v1", examples).messages("ocean", False, "Nothing unusual.")
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert json.loads(messages[2]["content"]) == GOOD  # labeler/timestamp are not shown
    assert "Concept: ocean" in messages[-1]["content"]
    assert "no (control trial)" in messages[-1]["content"]
    assert "Nothing unusual." in messages[-1]["content"]


def test_unknown_prompt_version_is_bad_input() -> None:
    with pytest.raises(BadInput, match="prompt_version"):
        JudgePrompt("v9")


# --- few-shot -------------------------------------------------------------------------------


def test_first_n_of_the_real_labelled_file_with_a_stable_hash(labelled_path: Path) -> None:
    three = load_fewshot(labelled_path, n=3)
    assert len(three) == 3 and all(ex.label["answer"] in ("pass", "fail") for ex in three)
    assert (
        JudgePrompt("v1", three).fewshot_hash
        == JudgePrompt("v1", load_fewshot(labelled_path, n=3)).fewshot_hash
    )
    assert (
        JudgePrompt("v1", three).fewshot_hash
        != JudgePrompt("v1", load_fewshot(labelled_path, n=4)).fewshot_hash
    )
    assert JudgePrompt("v1").fewshot_hash == NO_FEWSHOT_HASH


def test_marked_records_are_used_when_n_is_zero(tmp_path: Path) -> None:
    path = write(
        tmp_path / "l.jsonl",
        [
            labelled(0),
            labelled(1, use_as_fewshot=True),
            labelled(2),
            labelled(3, use_as_fewshot=True),
        ],
    )
    assert [ex.response for ex in load_fewshot(path)] == ["response 1", "response 3"]


def test_relative_paths_resolve_from_the_plan_folder(tmp_path: Path) -> None:
    write(tmp_path / "l.jsonl", [labelled(0)])
    assert len(load_fewshot("l.jsonl", n=1, base_dir=tmp_path)) == 1


@pytest.mark.parametrize(
    "content, n, message",
    [
        (None, 1, "few-shot file not found"),
        (json.dumps(labelled(0)) + "\nnot json\n", 5, r":2: malformed JSON"),
        (json.dumps(labelled(0)) + "\n" + "[" * 100_000 + "\n", 5, r":2: .*nested too deeply"),
        ('{"concept": "fear", "was_injected": true, "response": "r"}\n', 1, r":1: .*lacks 'label'"),
        (json.dumps(labelled(0)) + "\n", 0, "marks no record with use_as_fewshot"),
    ],
)
def test_bad_fewshot_files_are_one_line_bad_input(
    tmp_path: Path, content: str | None, n: int, message: str
) -> None:
    path = tmp_path / "l.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInput, match=message) as info:
        load_fewshot(path, n=n)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


# --- the validator --------------------------------------------------------------------------


def test_valid_replies_are_normalised() -> None:
    reply = json.dumps({**GOOD, "answer": " PASS ", "detected_concept": " Fear ", "extra": 1})
    assert parse_judgement(reply) == GOOD
    assert parse_judgement(f"```json\n{json.dumps(GOOD)}\n```") == GOOD
    assert (
        parse_judgement(json.dumps({**GOOD, "detected_concept": "none"}))["detected_concept"]
        is None
    )


@pytest.mark.parametrize(
    "reply, start",
    [
        ("", "invalid JSON: empty reply"),
        ('{"answer": "pass", ', "invalid JSON: "),
        ("[" * 100_000, "invalid JSON: nested too deeply"),  # was a RecursionError
        ("[1, 2]", "schema violation: expected an object"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "refused"}),
            "schema violation: missing",
        ),
        (json.dumps({**GOOD, "answer": "maybe"}), "schema violation: answer"),
        (json.dumps({**GOOD, "coherent": "yes"}), "schema violation: coherent"),
        (json.dumps({**GOOD, "detected_concept": 3}), "schema violation: detected_concept"),
        (json.dumps({**GOOD, "reasoning": None}), "schema violation: reasoning"),
    ],
)
def test_invalid_replies_say_what_is_wrong(reply: str, start: str) -> None:
    with pytest.raises(JudgeOutputError) as info:
        parse_judgement(reply)
    assert str(info.value).startswith(start)


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_judge_output_error(text: str) -> None:
    try:
        result = parse_judgement(text)
    except JudgeOutputError:
        return
    assert set(result) == set(JUDGEMENT_KEYS)


@given(
    st.fixed_dictionaries(
        {
            "answer": st.sampled_from(["pass", "fail"]),
            "coherent": st.booleans(),
            "detected_concept": st.none()
            | st.from_regex(r"[a-z]{1,12}", fullmatch=True).filter(
                lambda w: w not in ("none", "null")
            ),
            "reasoning": st.text(max_size=80).map(str.strip),
            "refused": st.booleans(),
        }
    )
)
def test_valid_judgements_round_trip(judgement: dict[str, Any]) -> None:
    assert parse_judgement(json.dumps(judgement)) == judgement
