"""Every plan key in one table: its section, type, default, bounds and why.

The config dataclasses take their defaults from here (`default`), the readers their types and
bounds (`Table.read`), the unknown-key message its suggestions (`suggest`), and docs/plan.md
its key table (`markdown_table`; tests/test_plan_keys.py checks the page says what this says).
A key whose check needs more than a type and bounds (a pattern, another key) keeps that check
in its reader, and its `bounds` text says so in words.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from introspectd.protocol import plan_checks as rules
from introspectd.protocol.trials import DEFAULT_ARM_NAMES

STRING, INTEGER, NUMBER, BOOLEAN, LIST, TABLE = (
    "string",
    "integer",
    "number",
    "boolean",
    "list",
    "table",
)


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    kind: str  # one of the kinds above, or a phrase ("string or integer")
    default: Any
    why: str
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # strictly above `minimum`
    choices: tuple[str, ...] = ()
    bounds: str = ""  # what the reader checks beyond type, range and choices
    prose: bool = False  # a free text: newlines and tabs allowed

    def bounds_text(self) -> str:
        parts = []
        if self.choices:
            parts.append(" | ".join(c or '""' for c in self.choices))
        low, high = _number(self.minimum), _number(self.maximum)
        if low and high:
            parts.append(f"> {low}, ≤ {high}" if self.positive else f"{low}–{high}")
        elif low:
            parts.append(f"{'>' if self.positive else '≥'} {low}")
        if self.bounds:
            parts.append(self.bounds)
        return "; ".join(parts)


_NAME = f"a plain path component, at most {rules.MAX_NAME_CHARS} characters"
_T = rules.MAX_TOTAL_TRIALS
# fmt: off
KEYS: tuple[Key, ...] = (
    Key("run", "experiment_id", STRING, "", "names the run directory; empty: <date>-sweep, "
        "fixed when the run is created", bounds=_NAME),
    Key("run", "output_dir", STRING, "data/sweeps", "where run directories go", bounds="not empty"),
    Key("run", "seed", INTEGER, 0, "seeds every trial's sampling", minimum=0),
    Key("run", "stamp", STRING, "", "a fixed id stamp, so sharded runs share one",
        bounds="YYYYMMDD_HHMMSS"),
    Key("model", "name", STRING, "3b", "hub id, local directory or GGUF file, preset "
        '("0.5b".."72b") or builtin:tiny', bounds="not empty"),
    Key("model", "slug", STRING, "", "the model's path component; derived from name when empty",
        bounds=_NAME),
    Key("model", "dtype", STRING, "auto", "auto: bfloat16 on GPU, float32 on CPU",
        choices=("auto", "float32", "float16", "bfloat16")),
    Key("model", "device", STRING, "auto", "one device for the whole model",
        bounds="auto, cpu, mps, cuda or cuda:N"),
    Key("model", "device_map", STRING, "", "layers across several devices (accelerate); "
        "empty: one device", choices=("", "auto", "balanced", "balanced_low_0", "sequential"),
        bounds="needs device unset"),
    Key("model", "max_memory", TABLE, {}, 'caps each device of a device_map, '
        'e.g. {"0" = "20GiB", cpu = "60GiB"}', bounds="sizes like 20GiB; needs device_map"),
    Key("model", "offload_folder", STRING, "", "where a device_map may offload weights"),
    Key("model", "gguf_file", STRING, "", "a GGUF file in hub repository `name`",
        bounds="ends in .gguf"),
    Key("model", "chat_template", STRING, "", 'how turns are written: empty = the model\'s own '
        'template; "plain" = labelled text for base models; else a Jinja template',
        bounds="a Jinja template that parses", prose=True),
    Key("sweep", "concepts", "list or string", ["celebration", "ocean", "fear", "silence"],
        'the concepts injected, one vector each; or a built-in set: "seed" (these 4), '
        '"lindsey50" (50 concrete and abstract nouns)',
        bounds="lowercase words, no duplicates; not with concepts_file"),
    Key("sweep", "concepts_file", STRING, "", "a file of concepts, one word a line (# comments)",
        bounds="relative to the plan's directory"),
    Key("sweep", "layers", "string or list", "default", '"default": 1/6..5/6 of depth and '
        "near-final; or indices [6, 12]; or fractions [0.5]",
        bounds="indices >= 0 or fractions in [0, 1)"),
    Key("sweep", "strengths", LIST, [1.0, 1.5, 2.0, 2.5, 3.0, 4.0], "multiples of the "
        "concept vector, or of the residual norm (strength_unit)",
        bounds=f"each in (0, {rules.MAX_STRENGTH:g}], no duplicates"),
    Key("sweep", "strength_unit", STRING, "raw", "raw: delta = strength × vector; residual: "
        "strength × mean residual norm at the layer × the vector's direction",
        choices=("raw", "residual")),
    Key("sweep", "trials", INTEGER, 40, "trials per cell and arm (an adaptive sweep's first "
        "round)", minimum=1, maximum=_T, bounds=f"at most {_T:,} trials in all"),
    Key("sweep", "prompt_version", STRING, "v2", "the introspection prompt (protocol/prompts.py)",
        bounds="v1 | v2 | yesno, unless prompt_user is given"),
    Key("sweep", "prompt_system", STRING, "", "your own system prompt", prose=True),
    Key("sweep", "prompt_user", STRING, "", "your own user prompt, in place of prompt_version",
        prose=True),
    Key("sweep", "inject_style", STRING, "generation", "where the vector is added: generated "
        "positions only, the prompt too, or from the token before `marker`",
        choices=("generation", "all", "from_marker")),
    Key("sweep", "marker", STRING, "Trial 1", "where from_marker starts",
        bounds="must occur in the user prompt", prose=True),
    Key("sweep", "vector_prompt", STRING, "plain", 'plain "Tell me about {word}." or chat '
        "(a user turn in the model's template)", choices=("plain", "chat")),
    Key("sweep", "baseline_words", LIST, [], "the words whose mean activation each concept "
        "vector subtracts; empty = the built-in list", bounds="lowercase words, no concepts"),
    Key("sweep", "baseline_file", STRING, "", "baseline_words from a file, one word a line",
        bounds="not with baseline_words"),
    Key("sweep", "vectors_file", STRING, "", "your own vectors: a safetensors file of "
        "{concept}/{layer} tensors, in place of the computed ones",
        bounds="1-D, the model's hidden size, finite; every (concept, layer) of the sweep"),
    Key("sweep", "max_new_tokens", INTEGER, 200, "answer length cap", minimum=1,
        maximum=rules.MAX_NEW_TOKENS, bounds="below the model's context"),
    Key("sweep", "temperature", NUMBER, 1.0, "sampling temperature; 0 = greedy", minimum=0.0,
        maximum=rules.MAX_TEMPERATURE),
    Key("sweep", "batch_size", "string or integer", "auto", '"auto" sizes it from free '
        "memory", bounds=f'"auto" or 1..{rules.MAX_BATCH_SIZE}'),
    Key("sweep", "arms", LIST, list(DEFAULT_ARM_NAMES), "the arms every cell runs",
        bounds="injection, control, random; no duplicates"),
    Key("sweep", "measure", STRING, "generate", "generate answers, read P(yes) from one "
        "forward pass, or read P(option) of a multiple-choice question",
        choices=("generate", "logit", "choice")),
    Key("sweep", "controls", STRING, "per_cell", "per_cell: each cell its own control trials; "
        "pooled: control_trials shared by every cell", choices=("per_cell", "pooled"),
        bounds='pooled needs the v2 judge, measure = "generate", no [adaptive]'),
    Key("sweep", "control_trials", INTEGER, 0, "the pool's control trials (per prompt)",
        minimum=0, maximum=_T, bounds='>= 1 with controls = "pooled", else 0'),
    Key("sweep", "factual_controls", BOOLEAN, False, "add factual yes/no questions per cell",
        bounds='needs measure = "logit"'),
    Key("sweep", "prompts", LIST, [], "a prompt battery: the prompt as a sweep dimension "
        "(built-in names or [prompts.NAME] tables); empty = prompt_version alone",
        bounds='known names, no duplicates; measure = "generate"'),
    Key("sweep", "prefill", STRING, "", "text every answer starts with (a prompt's own wins)",
        prose=True),
    Key("sweep", "mismatch", BOOLEAN, False, 'ask "are you thinking about X?" for every concept '
        "X under each injection", bounds='needs measure = "logit", 2+ concepts'),
    Key("sweep", "choice_distractors", INTEGER, 3, "distractor concepts per multiple-choice "
        'question (beside the injected one and "nothing unusual")', minimum=1,
        maximum=rules.MAX_DISTRACTORS, bounds='needs measure = "choice"'),
    Key("sweep", "distractors", LIST, [], "the distractor pool; empty = the sweep's other "
        "concepts", bounds="lowercase words, no duplicates, enough for choice_distractors"),
    Key("judge", "model", STRING, "gpt-5-mini", "the judge model", bounds="not empty"),
    Key("judge", "base_url", STRING, "", "empty: $OPENAI_BASE_URL if set, else OpenAI",
        bounds="an http(s) URL"),
    Key("judge", "api_key_env", STRING, "OPENAI_API_KEY", "names the variable holding the key, "
        "never the key", bounds="[A-Za-z_][A-Za-z0-9_]*"),
    Key("judge", "api", STRING, "chat", "which OpenAI API", choices=("chat", "responses")),
    Key("judge", "prompt_version", STRING, "v2", "v2: the blind prompt; v1 stays selectable"),
    Key("judge", "fewshot", STRING, "", "a labelled JSONL file of few-shot examples"),
    Key("judge", "fewshot_n", INTEGER, 0, "few-shot examples per prompt", minimum=0,
        maximum=rules.MAX_FEWSHOT),
    Key("judge", "fewshot_select", STRING, "", '"flagged": the labels with use_as_fewshot',
        choices=("", "flagged")),
    Key("judge", "concurrency", INTEGER, 32, "requests in flight at most", minimum=1,
        maximum=rules.MAX_JUDGE_CONCURRENCY),
    Key("judge", "min_concurrency", INTEGER, 1, "the adaptive limit's floor, whatever the 429s",
        minimum=1, maximum=rules.MAX_JUDGE_CONCURRENCY, bounds="<= concurrency"),
    Key("judge", "max_attempts", INTEGER, 3, "tries per answer", minimum=1,
        maximum=rules.MAX_ATTEMPTS),
    Key("judge", "backoff_s", NUMBER, 1.0, "first retry delay", minimum=0.0,
        maximum=rules.MAX_BACKOFF_S),
    Key("judge", "timeout_s", NUMBER, 60.0, "per request", minimum=0.0,
        maximum=rules.MAX_TIMEOUT_S, positive=True),
    Key("judge", "price_in_per_mtok", NUMBER, 0.0, "USD per million prompt tokens, yours to set",
        minimum=0.0, maximum=rules.MAX_PRICE),
    Key("judge", "price_out_per_mtok", NUMBER, 0.0, "USD per million completion tokens",
        minimum=0.0, maximum=rules.MAX_PRICE),
    Key("judge", "budget_usd", NUMBER, 0.0, "spending cap; 0 = none", minimum=0.0,
        maximum=rules.MAX_BUDGET_USD),
    Key("upload", "gcs", STRING, "", "gs://bucket/prefix for snapshots; empty = local only",
        bounds="gs://bucket/prefix"),
    Key("upload", "every_trials", INTEGER, 50, "snapshot after this many new trials", minimum=1),
    Key("upload", "min_interval_s", NUMBER, 30.0, "and at most this often", minimum=0.0,
        maximum=rules.MAX_INTERVAL_S),
    Key("upload", "preemption_url", STRING, "", "a metadata URL announcing preemption",
        bounds="an http(s) URL"),
    Key("upload", "preemption_poll_s", NUMBER, 5.0, "how often it is asked", minimum=0.0,
        maximum=rules.MAX_TIMEOUT_S, positive=True),
    Key("adaptive", "enabled", BOOLEAN, False, "spend trials where a cell is still uncertain",
        bounds='needs measure = "generate", no random arm'),
    Key("adaptive", "target_halfwidth", NUMBER, 0.05, "a cell is done at this 95% Wilson "
        "half-width", minimum=0.0, maximum=0.5, positive=True),
    Key("adaptive", "max_trials_per_cell", INTEGER, 400, "cap on a cell's trials", minimum=1,
        maximum=_T, bounds=">= [sweep] trials"),
    Key("adaptive", "round_trials", INTEGER, 20, "trials added per open cell per round",
        minimum=1, maximum=_T),
    Key("adaptive", "min_coherent", NUMBER, 0.0, "drop a cell whose coherence interval lies "
        "below this", minimum=0.0, maximum=1.0),
    Key("adaptive", "confirm_top", INTEGER, 0, "the K best cells re-run on fresh trials; 0 = off",
        minimum=0, maximum=1000),
    Key("adaptive", "confirm_trials", INTEGER, 100, "trials per confirmed cell", minimum=1,
        maximum=_T),
)
# fmt: on
# [mentions] has no fixed keys: each key is a concept of [sweep] concepts (plan_mentions.py);
# [prompts] neither: each is a [prompts.NAME] table of a battery (prompt_battery.py).
SECTIONS = ("run", "model", "sweep", "judge", "upload", "adaptive", "mentions", "prompts")
_BY_NAME = {(k.section, k.name): k for k in KEYS}


def key(section: str, name: str) -> Key:
    return _BY_NAME[(section, name)]


def default(section: str, name: str) -> Any:
    """A key's default as its config dataclass holds it (lists become tuples: frozen values)."""
    value = key(section, name).default
    return tuple(value) if isinstance(value, list) else value


def suggest(section: str, unknown: str) -> str:
    """ "did you mean 'trials'? " for a near miss, else ""."""
    names = [k.name for k in KEYS if k.section == section] if section else list(SECTIONS)
    close = difflib.get_close_matches(unknown, names, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


DOCS_BEGIN, DOCS_END = "<!-- plan-keys:begin -->", "<!-- plan-keys:end -->"


def markdown_table() -> str:
    """docs/plan.md's key table."""
    lines = ["| section | key | type | default | bounds | why |", "|---|---|---|---|---|---|"]
    for k in KEYS:
        value = _toml(k.default)
        cells = (f"[{k.section}]", f"`{k.name}`", k.kind, f"`{value}`", k.bounds_text(), k.why)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def write_docs_page(path: Path) -> None:
    """`make docs`: the generated table between the markers of docs/plan.md."""
    page = path.read_text(encoding="utf-8")
    head, rest = page.split(DOCS_BEGIN, 1)
    tail = rest.split(DOCS_END, 1)[1]
    path.write_text(f"{head}{DOCS_BEGIN}\n{markdown_table()}{DOCS_END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    write_docs_page(Path(sys.argv[1]))
