"""The docs' links lead somewhere: every relative link in README.md and docs/*.md names a file
that exists, and every `#anchor` into a markdown file names one of its headings.

Anchors follow GitHub's rule: the heading's text, lowercased, without punctuation except `-` and
`_`, spaces turned into `-`; a repeated heading gets `-1`, `-2`, ... Fenced code blocks hold
neither headings nor links (a TOML comment is not a heading).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import REPO

LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(text):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(text: str) -> list[str]:
    out = []
    for line in prose_lines(text):
        line = re.sub(r"`[^`]*`", "", line)  # code spans are text, not links
        out += LINK.findall(line)
    return out


def broken_links(doc: Path) -> list[str]:
    """`target (why)` for every relative link of `doc` that leads nowhere."""
    problems = []
    for target in links(doc.read_text()):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            problems.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            problems.append(f"{target} (no heading #{anchor} in {dest.name})")
    return problems


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(doc: Path) -> None:
    assert broken_links(doc) == []


def test_anchors_follow_githubs_rule() -> None:
    text = (
        "# Spot safety: GCS snapshots and restore\n## Promises (and their limits)\n"
        '## `run`\n### Blind judge (`[judge] prompt_version = "v2"`, the default)\n'
        '## Notes\n## Notes\n```toml\n# not = "a heading"\n```\n'
    )
    assert anchors(text) == {
        "spot-safety-gcs-snapshots-and-restore",
        "promises-and-their-limits",
        "run",
        "blind-judge-judge-prompt_version--v2-the-default",
        "notes",
        "notes-1",
    }


def test_a_broken_link_or_anchor_is_named(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n## A section\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Doc\n[ok](other.md#a-section) [ok](#doc) [web](https://example.com/x) `[no](gone.md)`\n"
        "[file](gone.md) [anchor](other.md#nope) ![image](missing.png) [here](#nowhere)\n"
        "```\n[in code](also-gone.md)\n```\n"
    )
    assert broken_links(doc) == [
        "gone.md (no such file)",
        "other.md#nope (no heading #nope in other.md)",
        "missing.png (no such file)",
        "#nowhere (no heading #nowhere in doc.md)",
    ]
