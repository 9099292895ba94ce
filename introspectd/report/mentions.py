"""The report's judge-free signal: how often answers mention their own concept (docs/cli.md,
"Concept mentions (no judge)").

An answer mentions its concept when it holds a word of the concept's lexicon
(protocol/lexicon.py: the built-in lists, or the run's plan `[mentions]` where the results sit
beside their run database). Per model × layer × strength, all concepts pooled, the report gives
the share of injected answers and of control answers that do, with Wilson intervals, and their
difference in points (Newcombe). No judgement is read: it works on unjudged runs (the offline
quickstart) as on judged ones. Only generated answers count: logit read-outs have no text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.protocol.lexicon import Lexicon, Mention
from introspectd.protocol.plan_mentions import mentions_from_stored
from introspectd.protocol.results import Record
from introspectd.report.judges import run_databases
from introspectd.report.metrics import group_by, newcombe_interval, proportion, wilson_interval
from introspectd.report.scale import fmt_net, fmt_rate
from introspectd.run.rundir import open_store
from introspectd.text import loads_text, printable

Answer = tuple[Record, Mention]  # a generated answer and where it first mentions its concept
NUM_EXAMPLES = 3
EXCERPT_CHARS = 160
_RATES = ("injection_mention_rate", "control_mention_rate")


def run_lexicon(files: Sequence[Path]) -> Lexicon:
    """The lexicon of the runs whose results these are: the `[mentions]` of the plan stored in
    each run database beside the files (the plan of the run's last `run`), else the built-in
    lists. Shards of one run share a plan; if two runs' plans disagree the first found wins."""
    words: dict[str, tuple[str, ...]] = {}
    for db in run_databases(tuple(files)):
        store = open_store(db, read_only=True)
        try:
            run = store.get_run()
        finally:
            store.close()
        if run is None:
            continue
        where = f"{db} (the run's stored plan)"
        try:
            stored = loads_text(run.plan_json)
        except json.JSONDecodeError:
            raise BadInput(f"{where}: not JSON") from None
        for concept, entries in mentions_from_stored(stored, where).words:
            words.setdefault(concept, entries)
    return Lexicon(words)


def mentions_summary(records: Iterable[Record], lexicon: Lexicon) -> dict[str, Any] | None:
    """The summary's "mentions" section; None when no record holds a generated answer."""
    answers = generated_answers(records, lexicon)
    if not answers:
        return None
    by_cell = group_by(answers, lambda a: (a[0]["model"], a[0]["layer"], a[0]["strength"]))
    cells = [
        {"model": m, "layer": layer, "strength": s, **mention_metrics(group)}
        for (m, layer, s), group in sorted(by_cell.items(), key=lambda kv: kv[0])
    ]
    concepts = sorted({r["concept"] for r, _ in answers})
    return {
        "lexicon": {
            c: {"source": lexicon.source(c), "words": list(lexicon.words(c))} for c in concepts
        },
        "by_model": _metrics_by(answers, "model"),
        "by_concept": _metrics_by(answers, "concept"),
        "by_cell": cells,
        "examples": _examples(cells, by_cell, lexicon),
    }


def generated_answers(records: Iterable[Record], lexicon: Lexicon) -> list[Answer]:
    """The records that hold a generated answer (logit read-outs have no text), each with
    where it first mentions its concept by `lexicon`: the one list the report shows, so each
    count can be checked against the words listed with it."""
    return [
        (r, lexicon.first_mention(r["response"], r["concept"]))
        for r in records
        if isinstance(r.get("response"), str) and r.get("p_yes") is None
    ]


def mention_metrics(answers: Sequence[Answer]) -> dict[str, Any]:
    """Mention rates of injected and control answers (Wilson 95%) and their difference
    (Newcombe 95%), with `counts` as the other metrics carry them ([k, n])."""
    injected = [m.found for r, m in answers if r["was_injected"]]
    control = [m.found for r, m in answers if not r["was_injected"]]
    counts = {
        "injection_mention_rate": (sum(injected), len(injected)),
        "control_mention_rate": (sum(control), len(control)),
    }
    out: dict[str, Any] = {}
    for name in _RATES:
        ci = wilson_interval(*counts[name])
        out[name] = proportion(*counts[name])
        out[name + "_ci"] = list(ci) if ci is not None else None
    p_inj, p_ctl = out["injection_mention_rate"], out["control_mention_rate"]
    difference_ci = newcombe_interval(*counts[_RATES[0]], *counts[_RATES[1]])
    out["mention_difference"] = None if p_inj is None or p_ctl is None else p_inj - p_ctl
    out["mention_difference_ci"] = list(difference_ci) if difference_ci is not None else None
    out["counts"] = {name: list(kn) for name, kn in counts.items()}
    return out


def _metrics_by(answers: list[Answer], key: str) -> dict[str, dict[str, Any]]:
    groups = group_by(answers, lambda a: a[0][key])
    return {name: mention_metrics(group) for name, group in sorted(groups.items())}


# --- example answers -------------------------------------------------------------------------


def _examples(
    cells: list[dict[str, Any]],
    by_cell: dict[tuple[str, int, float], list[Answer]],
    lexicon: Lexicon,
) -> list[dict[str, Any]]:
    """From each of the NUM_EXAMPLES cells with the highest injected mention rate (more
    mentions first on a tie), its first injected answer that mentions its concept."""
    ranked = sorted(
        (c for c in cells if c["counts"]["injection_mention_rate"][0] > 0),
        key=lambda c: (-c["injection_mention_rate"], -c["counts"]["injection_mention_rate"][0]),
    )
    examples = []
    for cell in ranked[:NUM_EXAMPLES]:
        key = (cell["model"], cell["layer"], cell["strength"])
        record, mention = next((r, m) for r, m in by_cell[key] if r["was_injected"] and m.found)
        text, span = excerpt(printable(record["response"]), lexicon, record["concept"])
        examples.append(
            {
                "model": cell["model"],
                "concept": record["concept"],
                "layer": cell["layer"],
                "strength": cell["strength"],
                "id": record["id"],
                "first_char": mention.first_char,
                "mention": mention.text,
                "excerpt": text,
                "excerpt_mention": list(span) if span else None,
            }
        )
    return examples


def excerpt(
    clean: str, lexicon: Lexicon, concept: str, limit: int = EXCERPT_CHARS
) -> tuple[str, tuple[int, int] | None]:
    """At most `limit` characters of one-line text (plus "…" where cut), holding its first
    mention where it can, and that mention's [start, end) in the excerpt. The mention is found
    again in the cleaned text: cleaning moves offsets (and an escape sequence removed can join
    words)."""
    match = lexicon.pattern(concept).search(clean)
    span = match.span() if match else None
    if len(clean) <= limit:
        return clean, span
    # From the start when the mention comes early, else from a little before it; both ends
    # moved to a space nearby, so no word is cut in half.
    start = 0 if span is None or span[1] <= limit - 20 else max(0, span[0] - 60)
    if start:
        space = clean.find(" ", start, min(start + 20, span[0] if span else start))
        start = space + 1 if space != -1 else start
    end = start + limit
    if end < len(clean):
        space = clean.rfind(" ", end - 20, end)
        end = space if space != -1 and (span is None or space >= span[1]) else end
    text = ("…" if start else "") + clean[start:end] + ("…" if end < len(clean) else "")
    if span is None:
        return text, None
    shift = (1 if start else 0) - start
    return text, (span[0] + shift, min(span[1], end) + shift)


# --- report.md -------------------------------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#&])")


def _md(text: str) -> str:
    """Model text as literal Markdown: every character that could format is escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def mentions_markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = [
        "## Concept mentions (no judge)",
        "",
        "How often an answer mentions its own concept: the share of answers holding a word of"
        " the concept's list (whole words, any case, plurals; the lists are below), injected"
        " answers beside control answers, all concepts pooled. It is judge-free: no grade is"
        " read, so it is there for unjudged runs too. More mentions under injection show that"
        " the vector reached the text; that is steering, not introspection (no claim of"
        " noticing is needed). Rates are percentages with a 95% Wilson interval and the counts"
        " (k/n); difference = injected − control, in percentage points (Newcombe).",
        "",
        *_lexicon_lines(section["lexicon"]),
        "",
        "| model | layer | strength | injected answers mentioning | control answers"
        " mentioning | difference |",
        "|---|---|---|---|---|---|",
    ]
    for model, overall in section["by_model"].items():
        lines.append(_table_row(model, "all", "all", overall))
        for c in (c for c in section["by_cell"] if c["model"] == model):
            lines.append(_table_row(model, str(c["layer"]), f"{c['strength']:g}", c))
    return [*lines, "", *_example_lines(section["examples"])]


def _lexicon_lines(lexicon: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "Words that count (`*`: any word beginning so), from the run's plan `[mentions]`"
        " (plan), introspectd/protocol/lexicon.py (built-in), or the concept word alone:",
        "",
    ]
    for concept, entry in lexicon.items():
        lines.append(f"- `{concept}` ({entry['source']}): {_md(', '.join(entry['words']))}")
    return lines


def _table_row(model: str, layer: str, strength: str, m: dict[str, Any]) -> str:
    return (
        f"| `{model}` | {layer} | {strength} | {fmt_rate(m, 'injection_mention_rate')} | "
        f"{fmt_rate(m, 'control_mention_rate')} | {fmt_net(m, 'mention_difference')} |"
    )


def _example_lines(examples: list[dict[str, Any]]) -> list[str]:
    if not examples:
        return ["No injected answer mentions its concept, so there are no examples."]
    lines = [
        f"A few example answers: the first injected answer that mentions its concept in each"
        f" of the {len(examples)} cell(s) with the highest injected mention rate (the mention"
        f" in bold; cut to about {EXCERPT_CHARS} characters, on one line).",
        "",
    ]
    for e in examples:
        text, span = e["excerpt"], e["excerpt_mention"]
        quoted = (
            _md(text)
            if span is None
            else (
                _md(text[: span[0]])
                + "**"
                + _md(text[span[0] : span[1]])
                + "**"
                + _md(text[span[1] :])
            )
        )
        where = f"`{e['model']}`" + (f", `{e['id']}`" if e["id"] else "")
        lines.append(
            f"- {e['concept']}, layer {e['layer']}, strength {e['strength']:g} ({where}):"
            f" “{quoted}”"
        )
    return lines
