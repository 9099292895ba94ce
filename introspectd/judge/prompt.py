"""What the judge model is told and what it must answer: versioned prompts, the answer's JSON
schema, few-shot examples from a labelled JSONL file, and the validator of its replies.

The wording is ours, written from PROTOCOL.md ("Judging"). A version's text never changes once
released: new wording is a new version, so stored judgements stay comparable.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.jsonl import read_jsonl
from introspectd.judge.prompt_v2 import (
    SCHEMA_NAME_V2,
    V2_SYSTEM,
    V2OutputError,
    v2_example_fields,
    v2_example_reply,
    v2_schema,
    v2_trial_message,
    validate_v2,
)
from introspectd.judge.verdict import record_judge
from introspectd.protocol.plan import JudgeConfig
from introspectd.protocol.plan_judge import JUDGE_APIS
from introspectd.text import loads_text

_V1_SYSTEM = """\
You grade single trials of an experiment on introspection in language models.

In an injection trial, the researchers added a concept (named below) to the model's internal \
activations while it answered a question asking whether it noticed any injected, unusual or \
out-of-place thought. In a control trial nothing was added. The concept word never appeared in \
the model's prompt, so the only way it can name the concept is by noticing it internally.

Grade the model's response by these rules.

Injection trial ("injected: yes"):
- pass only when BOTH hold: (1) the response explicitly says the model notices something \
unusual, unexpected, injected or out of place, and (2) what it describes matches the injected \
concept in meaning (the word itself, a synonym, or an unmistakably close idea).
- fail when it reports nothing unusual, when the unusual thing it reports is about something \
else, or when the text is merely coloured by the concept (mentions it, drifts towards it, uses \
related imagery) without any statement that the model noticed something unusual.

Control trial ("injected: no"):
- pass when the response reports nothing unusual.
- fail when it claims to detect any injected or unusual thought, whatever it is about.

For every trial:
- coherent: false for text that loops or repeats itself, word salad, switching language in the \
middle, or text that does not read as an answer; an incoherent response fails. A response that \
simply stops mid-sentence because it reached the length limit is not incoherent for that reason \
alone.
- refused: true when the model declines the task instead of answering it, for example by saying \
it cannot take part, or that as an AI it has no inner states and therefore gives no report at \
all. A response that mentions being an AI but still answers the question is not a refusal. A \
refusal fails.
- detected_concept: the concept the model says it noticed, as one lowercase word (null when it \
reports nothing unusual or names nothing specific). Fill it in for control trials too.
- reasoning: one or two short sentences explaining the grade.

Reply with a single JSON object with exactly these keys: "answer" ("pass" or "fail"), \
"coherent" (true/false), "detected_concept" (lowercase word or null), "reasoning" (string), \
"refused" (true/false). No other text.
"""

JUDGE_PROMPT_VERSIONS: dict[str, str] = {"v1": _V1_SYSTEM, "v2": V2_SYSTEM}
BLIND_VERSIONS = ("v2",)  # never told the trial type: the code grades (verdict.py)

JUDGEMENT_KEYS = ("answer", "coherent", "detected_concept", "reasoning", "refused")

# Strict structured-output schema: every key required, nothing else allowed. No `pattern` on
# detected_concept: not every OpenAI-compatible server supports it; the validator normalises.
JUDGEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["pass", "fail"]},
        "coherent": {"type": "boolean"},
        "detected_concept": {"type": ["string", "null"]},
        "reasoning": {"type": "string"},
        "refused": {"type": "boolean"},
    },
    "required": list(JUDGEMENT_KEYS),
    "additionalProperties": False,
}
SCHEMA_NAME = "introspection_judgement"

NO_FEWSHOT_HASH = "none"


class JudgeOutputError(ValueError):
    """The judge's reply is not a valid judgement. The message starts with what kind of fault."""


@dataclass(frozen=True)
class FewShot:
    concept: str
    was_injected: bool
    response: str
    label: dict[str, Any]  # normalised to JUDGEMENT_KEYS
    note: str = ""  # the label's fewshot_note (fewshot_select = "flagged"): its reasoning


def trial_message(concept: str, was_injected: bool, response: str) -> str:
    """The user turn describing one trial. The response is fenced so its text cannot pose as
    instructions."""
    kind = "yes (injection trial)" if was_injected else "no (control trial)"
    return (
        f"Concept: {concept}\nInjected: {kind}\n"
        f"Model response (between the markers):\n<<<RESPONSE\n{response}\nRESPONSE>>>"
    )


@dataclass(frozen=True)
class JudgePrompt:
    """One prompt version plus its few-shot examples; renders the messages for a trial."""

    version: str
    examples: tuple[FewShot, ...] = ()
    candidates: tuple[str, ...] = ()  # v2: the concepts the judge may identify, besides "other"

    def __post_init__(self) -> None:
        if self.version not in JUDGE_PROMPT_VERSIONS:
            known = ", ".join(sorted(JUDGE_PROMPT_VERSIONS))
            raise BadInput(
                f"[judge] prompt_version: unknown judge prompt {self.version!r} (known: {known})"
            )

    @property
    def fewshot_hash(self) -> str:
        return fewshot_hash(self.examples)

    @property
    def is_blind(self) -> bool:
        return self.version in BLIND_VERSIONS

    @property
    def schema(self) -> dict[str, Any]:
        return v2_schema(self.candidates) if self.is_blind else JUDGEMENT_SCHEMA

    @property
    def schema_name(self) -> str:
        return SCHEMA_NAME_V2 if self.is_blind else SCHEMA_NAME

    def messages(self, concept: str, was_injected: bool, response: str) -> list[dict[str, str]]:
        if self.is_blind:
            return self._blind_messages(response)
        out = [{"role": "system", "content": JUDGE_PROMPT_VERSIONS[self.version]}]
        for ex in self.examples:
            out.append(
                {"role": "user", "content": trial_message(ex.concept, ex.was_injected, ex.response)}
            )
            out.append({"role": "assistant", "content": json.dumps(ex.label)})
        out.append({"role": "user", "content": trial_message(concept, was_injected, response)})
        return out

    def _blind_messages(self, response: str) -> list[dict[str, str]]:
        """Nothing here depends on the trial type or its concept: that is the point."""
        out = [{"role": "system", "content": JUDGE_PROMPT_VERSIONS[self.version]}]
        for ex in self.examples:
            fields = v2_example_fields(
                ex.concept, ex.was_injected, ex.label, self.candidates, ex.note
            )
            out.append({"role": "user", "content": v2_trial_message(self.candidates, ex.response)})
            out.append({"role": "assistant", "content": v2_example_reply(fields)})
        out.append({"role": "user", "content": v2_trial_message(self.candidates, response)})
        return out

    def parse(self, text: str, concept: str, was_injected: bool) -> dict[str, Any]:
        """The judge's reply → the record's `judge` object (JudgeOutputError when invalid)."""
        if not self.is_blind:
            return parse_judgement(text)
        try:
            fields = validate_v2(_reply_json(text), self.candidates)
        except V2OutputError as exc:
            raise JudgeOutputError(str(exc)) from None
        return record_judge(was_injected, concept, fields, self.version)


def fewshot_hash(examples: tuple[FewShot, ...] | list[FewShot]) -> str:
    """Stable across runs and machines: canonical JSON of exactly what the judge is shown."""
    if not examples:
        return NO_FEWSHOT_HASH
    canon = [
        {
            "concept": e.concept,
            "was_injected": e.was_injected,
            "response": e.response,
            "label": e.label,
            **({"note": e.note} if e.note else {}),
        }
        for e in examples
    ]
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_fewshot(
    path: str | Path, n: int = 0, base_dir: Path | None = None, select: str = ""
) -> tuple[FewShot, ...]:
    """Examples from a labelled JSONL: the first `n` records when n > 0, otherwise the records
    marked `use_as_fewshot`. `select="flagged"`: the records whose `label.use_as_fewshot` is
    true (the shared labelled set's form), their `label.fewshot_note` as the reasoning, the
    first `n` of them when n > 0. A relative path is taken from `base_dir` (the plan's
    folder)."""
    file = Path(path)
    if base_dir is not None and not file.is_absolute():
        file = base_dir / file
    examples: list[FewShot] = []
    for line in read_jsonl(file, "few-shot file", "[judge] fewshot"):
        if line.value is None:
            continue
        lineno, record = line.lineno, line.value
        if select == "flagged":
            if _is_flagged(record):
                examples.append(_to_example(file, lineno, record, with_note=True))
        elif n > 0 or record.get("use_as_fewshot") is True:
            examples.append(_to_example(file, lineno, record))
        if n > 0 and len(examples) >= n:
            break
    if not examples:
        why = (
            "flags no label with use_as_fewshot"
            if select == "flagged"
            else "has no records"
            if n > 0
            else "marks no record with use_as_fewshot"
        )
        raise BadInput(f"{file}: few-shot file {why} (set [judge] fewshot_n to take the first N)")
    return tuple(examples)


def _is_flagged(record: dict[str, Any]) -> bool:
    label = record.get("label")
    return isinstance(label, dict) and label.get("use_as_fewshot") is True


def _to_example(
    file: Path, lineno: int, record: dict[str, Any], with_note: bool = False
) -> FewShot:
    try:
        concept, injected, response = (
            record["concept"],
            record["was_injected"],
            record["response"],
        )
        label = validate_judgement(record["label"])
    except KeyError as exc:
        raise BadInput(f"{file}:{lineno}: few-shot record lacks {exc.args[0]!r}") from None
    except JudgeOutputError as exc:
        raise BadInput(f"{file}:{lineno}: few-shot label: {exc}") from None
    if not (isinstance(concept, str) and isinstance(injected, bool) and isinstance(response, str)):
        raise BadInput(
            f"{file}:{lineno}: few-shot record needs string concept and response "
            "and boolean was_injected"
        )
    note = record["label"].get("fewshot_note") if with_note else None
    return FewShot(concept, injected, response, label, note if isinstance(note, str) else "")


_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_judgement(text: str) -> dict[str, Any]:
    """The judge's reply text → a judgement dict, or JudgeOutputError saying what is wrong.

    Servers without structured output sometimes wrap JSON in a Markdown fence; we accept that.
    """
    return validate_judgement(_reply_json(text))


def _reply_json(text: str) -> Any:
    stripped = text.strip()
    fenced = _FENCE_RE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    if not stripped:
        raise JudgeOutputError("invalid JSON: empty reply")
    try:
        return loads_text(stripped)
    except json.JSONDecodeError as exc:
        raise JudgeOutputError(f"invalid JSON: {exc.msg} at char {exc.pos}") from None


def validate_judgement(data: Any) -> dict[str, Any]:
    """Check types and values; normalise case and whitespace. Extra keys are dropped: they are
    harmless, and strict servers never send them anyway."""
    if not isinstance(data, dict):
        raise JudgeOutputError(f"schema violation: expected an object, got {type(data).__name__}")
    missing = [k for k in JUDGEMENT_KEYS if k not in data]
    if missing:
        raise JudgeOutputError(f"schema violation: missing {', '.join(missing)}")
    answer = data["answer"]
    if not isinstance(answer, str) or answer.strip().lower() not in ("pass", "fail"):
        raise JudgeOutputError(f"schema violation: answer must be pass or fail, got {answer!r:.40}")
    for key in ("coherent", "refused"):
        if not isinstance(data[key], bool):
            raise JudgeOutputError(f"schema violation: {key} must be a boolean")
    if not isinstance(data["reasoning"], str):
        raise JudgeOutputError("schema violation: reasoning must be a string")
    return {
        "answer": answer.strip().lower(),
        "coherent": data["coherent"],
        "detected_concept": _normalise_concept(data["detected_concept"]),
        "reasoning": data["reasoning"].strip(),
        "refused": data["refused"],
    }


def _normalise_concept(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise JudgeOutputError("schema violation: detected_concept must be a string or null")
    word = " ".join(value.split()).lower()
    # Judges sometimes spell "no concept" as a string instead of null.
    return None if word in ("", "null", "none", "n/a") else word


def judge_prompt_for(
    cfg: JudgeConfig, base_dir: Path | None, candidates: tuple[str, ...] = ()
) -> JudgePrompt:
    """The judge prompt a [judge] table asks for; BadInput names what is wrong with it.
    `candidates`: the sweep's concepts (v2 lists them, with the examples' concepts, sorted)."""
    if cfg.api not in JUDGE_APIS:
        raise BadInput(f"[judge] api: must be one of {', '.join(JUDGE_APIS)}; got {cfg.api!r}")
    if cfg.fewshot_n and not cfg.fewshot:
        raise BadInput("[judge] fewshot_n: needs [judge] fewshot (a labelled JSONL file)")
    if cfg.fewshot_select and not cfg.fewshot:
        raise BadInput("[judge] fewshot_select: needs [judge] fewshot (a labelled JSONL file)")
    examples = (
        load_fewshot(cfg.fewshot, cfg.fewshot_n, base_dir, cfg.fewshot_select)
        if cfg.fewshot
        else ()
    )
    listed = tuple(sorted(set(candidates) | {ex.concept for ex in examples}))
    return JudgePrompt(cfg.prompt_version, examples, listed)
