"""What a run produces, as plain values shared by every part: the stored run, a trial's row,
a generation, a logit read-out, a judgement, the concept vectors. Torch- and SQLite-free, so
generate/, judge/, output/ and run/ all speak these without importing each other (the store in
run/ maps them to and from SQL; nothing else knows the schema)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from introspectd.protocol.trials import Status, TrialSpec


def now_iso() -> str:
    """The local time as every stored timestamp writes it."""
    return datetime.now().isoformat()


# (concept, layer) → (float32 little-endian bytes, dim, norm): the concept vectors of a run.
VectorTable = dict[tuple[str, int], tuple[bytes, int, float]]


@dataclass(frozen=True)
class RunRow:
    stamp: str
    experiment_id: str
    model_name: str
    plan_json: str
    spec: dict[str, Any]
    spec_hash: str
    baseline: list[str]
    created_at: str


@dataclass(frozen=True)
class Readout:
    """A logit-mode trial's answer: P(yes), P(no) at the first answer position, and
    p_yes = P(yes) / (P(yes) + P(no))."""

    p_yes: float
    prob_yes: float
    prob_no: float


@dataclass(frozen=True)
class ChoiceReadout:
    """A `measure = "choice"` trial's answer: the options in letter order and P(letter) of
    each at the first answer position, renormalised over the options (they sum to 1)."""

    options: tuple[str, ...]
    probs: tuple[float, ...]
    letter_mass: float  # P(any option's letter) before renormalising: low = not answering so

    @property
    def chosen(self) -> str:
        """The most probable option (the first of a tie)."""
        return self.options[max(range(len(self.probs)), key=self.probs.__getitem__)]

    def as_json(self) -> dict[str, Any]:
        return {"options": list(self.options), "probs": list(self.probs), "mass": self.letter_mass}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ChoiceReadout:
        probs = tuple(float(p) for p in data["probs"])
        return ChoiceReadout(tuple(data["options"]), probs, float(data["mass"]))


@dataclass(frozen=True)
class TrialRow:
    id: str
    ordinal: int
    spec: TrialSpec
    status: Status
    response: str | None
    num_new_tokens: int | None
    generated_at: str | None
    judge: dict[str, Any] | None
    judge_error: str | None
    readout: Readout | None = None  # logit mode
    choice: ChoiceReadout | None = None  # choice mode

    @property
    def is_read_out(self) -> bool:
        """Read from logits, not generated: nothing to judge."""
        return self.readout is not None or self.choice is not None


@dataclass(frozen=True)
class Generation:
    trial_id: str
    response: str
    num_new_tokens: int
    generated_at: str
    readout: Readout | None = None  # logit mode: no text, nothing to judge
    choice: ChoiceReadout | None = None  # choice mode: the same

    @property
    def is_read_out(self) -> bool:
        """Read from logits, not generated: nothing to judge."""
        return self.readout is not None or self.choice is not None


@dataclass(frozen=True)
class Judgement:
    trial_id: str
    result: dict[str, Any] | None
    error: str | None
    judge_model: str
    prompt_version: str
    fewshot_hash: str
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    judge_fingerprint: str = ""


# The output record (docs/output.md), seed-compatible. Version 1 is the seed's key set plus
# those added since (arm, p_yes, prob_yes, prob_no, factual, mention, config.direction and
# config.confirmation); keys may be added, never renamed or dropped, and a change that would
# do either raises RECORD_FORMAT. Not written into each record: that would change every line
# the seed's readers and earlier runs already hold.
RECORD_FORMAT = 1


class RecordConfig(TypedDict, total=False):
    model: str
    layer: int
    strength: float
    magnitude: float
    vector_norm: float
    prompt_version: str
    inject_style: str
    trial: int
    direction: str | None
    confirmation: bool  # only on confirmation trials
    prefill: str  # only when the trial's prompt starts the answer (protocol/prompt_battery.py)
    residual_norm: float  # only with strength_unit = "residual"
    controls: str  # "pooled" on a pooled control (no concept, layer or strength)


class RecordMention(TypedDict):
    """Where the answer first mentions its concept (protocol/lexicon.py): a code-point offset
    into `response` and the words found there, both null when it never does."""

    first_char: int | None
    text: str | None


class SeedRecord(TypedDict, total=False):
    """One trial as the JSONL files hold it (output/records.py writes it, jsonl.py reads it)."""

    id: str
    timestamp: str | None
    concept: str | None  # None: a pooled control
    was_injected: bool
    response: str | None
    mention: RecordMention  # generated answers only (not logit read-outs)
    config: RecordConfig
    judge: dict[str, Any] | None
    judge_error: str | None
    arm: str
    p_yes: float
    prob_yes: float
    prob_no: float
    factual: dict[str, Any]
    choice: dict[str, Any]  # measure = "choice"
    mismatch: dict[str, Any]  # the mismatch design's question


# A record as the report and the explorer read it: flattened by report/writer.parse_record
# (id, model, concept, layer, strength, was_injected, judge, response, arm, p_yes, ...).
Record = dict[str, Any]
