"""The report's "Concept mentions (no judge)" section: exact counts from answers written here, and
a real run whose plan's `[mentions]` reaches the report through the run database, and a real
judged run whose records carry `mention` and feed the "Claim before mention" section."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from helpers import TINY_PLAN, run_cli, write_plan

from introspectd.report.leak import claim_before_mention
from introspectd.report.writer import write_report

STAMP = "20260123_143022"


def record(
    concept: str,
    arm: str,
    layer: int,
    strength: float,
    trial: int,
    response: str | None,
    **extra: Any,
) -> dict[str, Any]:
    """A seed-format record, unjudged: the section must not need a judge."""
    return {
        "id": f"{STAMP}_{concept}_{arm}_L{layer}_S{strength}_t{trial}",
        "concept": concept,
        "was_injected": arm != "control",
        "response": response,
        "config": {"model": "m", "layer": layer, "strength": strength, "trial": trial},
        "judge": None,
        "judge_error": "judging not configured",
        "arm": arm,
        **extra,
    }


def cell(
    concept: str, layer: int, strength: float, injected: list[str], control: list[str]
) -> list[dict[str, Any]]:
    return [record(concept, "injection", layer, strength, t, a) for t, a in enumerate(injected)] + [
        record(concept, "control", layer, strength, t, a) for t, a in enumerate(control)
    ]


# Layer 15 × strength 16: ocean 3/4 injected (oceans, sea-green, beaches; "season" is not a
# mention), 1/4 control; fear 2/4 injected ("fearless" counts), 0/4 control. Pooled: 5/8 vs 1/8.
# Layer 15 × strength 4: 1/4 injected, 0/4 control. Layer 10 × strength 16: 0/2 vs 2/2.
OCEAN_15_16 = cell(
    "ocean",
    15,
    16.0,
    [
        "This oceans cover covering from the planet surface",
        "A season of change",
        "Sea-green\nthoughts | and *more*",
        "I notice beaches",
    ],
    ["Nothing unusual.", "The sea is calm.", "Nothing.", "All quiet."],
)
FEAR_15_16 = cell(
    "fear",
    15,
    16.0,
    ["I feel fearless", "Nothing unusual", "a sense of dread", "calm"],
    ["nothing", "nothing", "calm", "ok"],
)
RECORDS = [
    *OCEAN_15_16,
    *FEAR_15_16,
    *cell("ocean", 15, 4.0, ["waves " * 40 + "end", "no", "no", "no"], ["no", "no", "no", "no"]),
    *cell("fear", 10, 16.0, ["nothing", "fine"], ["afraid", "scared"]),
    # Not counted: a logit read-out (no text), a random-arm answer, a confirmation trial.
    record("ocean", "injection", 10, 16.0, 9, None, p_yes=0.9),
    record("ocean", "random", 10, 16.0, 0, "the ocean"),
    {
        **record("ocean", "injection", 10, 16.0, 8, "the ocean"),
        "id": f"{STAMP}_ocean_injection_L10_S16.0_c0",
        "config": {"model": "m", "layer": 10, "strength": 16.0, "confirmation": True},
    },
]


def _write(directory: Path, records: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for concept in ("ocean", "fear"):
        lines = [json.dumps(r) for r in records if r["concept"] == concept]
        (directory / f"{concept}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def test_exact_counts_and_examples(tmp_path: Path) -> None:
    paths = write_report([_write(tmp_path / "in", RECORDS)], tmp_path / "out")
    section = json.loads(paths.summary_json.read_text())["mentions"]
    counts = {
        (c["layer"], c["strength"]): (
            c["counts"]["injection_mention_rate"],
            c["counts"]["control_mention_rate"],
        )
        for c in section["by_cell"]
    }
    assert counts == {
        (10, 16.0): ([0, 2], [2, 2]),
        (15, 4.0): ([1, 4], [0, 4]),
        (15, 16.0): ([5, 8], [1, 8]),
    }
    assert section["by_model"]["m"]["counts"] == {
        "injection_mention_rate": [6, 14],
        "control_mention_rate": [3, 14],
    }
    assert section["by_concept"]["fear"]["counts"]["injection_mention_rate"] == [2, 6]
    assert section["lexicon"]["ocean"]["source"] == "built-in"

    # Intervals computed apart from introspectd, from the textbook Wilson and Newcombe (method
    # 10) formulas with z = 1.959963984540054.
    md = paths.report_md.read_text()
    assert "## Concept mentions (no judge)" in md
    assert (
        "| `m` | 15 | 16 | 62.5% [30.6–86.3] (5/8) | 12.5% [2.2–47.1] (1/8) | +50.0 [+2.9, +75.9] |"
    ) in md
    assert "| `m` | all | all | 42.9% [21.4–67.4] (6/14) | 21.4% [7.6–47.6] (3/14) |" in md
    assert "| `m` | 10 | 16 | 0.0% [0.0–65.8] (0/2) | 100.0% [34.2–100.0] (2/2) |" in md

    # Two cells have an injected mention: their examples, best first, each the cell's first
    # injected answer that mentions its concept (files are read in name order: fear first).
    examples = [line for line in md.splitlines() if re.match(r"- \w+, layer ", line)]
    assert examples == [
        f"- fear, layer 15, strength 16 (`m`, `{STAMP}_fear_injection_L15_S16.0_t0`):"
        " “I feel **fearless**”",
        f"- ocean, layer 15, strength 4 (`m`, `{STAMP}_ocean_injection_L15_S4.0_t0`):"
        " “**waves** " + "waves " * 24 + "waves…”",  # cut at a space before 160 characters
    ]
    assert [e["first_char"] for e in section["examples"]] == [7, 0]


def test_markdown_in_answers_is_literal(tmp_path: Path) -> None:
    records = cell("ocean", 1, 1.0, ["Sea-green\nthoughts | and *more* <b>"], ["no"])
    md = write_report([_write(tmp_path / "in", records)], tmp_path / "out").report_md.read_text()
    assert "“**Sea**-green thoughts \\| and \\*more\\* \\<b\\>”" in md


def test_logit_only_results_have_no_section(tmp_path: Path) -> None:
    records = [record("ocean", "injection", 1, 1.0, 0, None, p_yes=0.5)]
    paths = write_report([_write(tmp_path / "in", records)], tmp_path / "out")
    assert "mentions" not in json.loads(paths.summary_json.read_text())
    assert "Concept mentions" not in paths.report_md.read_text()


# --- a real run: the plan's [mentions] reaches the report ------------------------------------

# Stems every random-weights answer is likely to hold, so the counts are not all zero.
PLAN_MENTIONS = '\n[mentions]\nocean = ["a*"]\nfear = ["t*"]\n'
INDEPENDENT = {"ocean": re.compile(r"(?<!\w)a\w*", re.I), "fear": re.compile(r"(?<!\w)t\w*", re.I)}


def test_real_run_reports_mentions_with_the_plans_words(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, TINY_PLAN + PLAN_MENTIONS)
    proc = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "out" / "exp" / "tiny"
    proc = run_cli("report", str(run_dir), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    section = json.loads((tmp_path / "report" / "summary.json").read_text())["mentions"]
    assert section["lexicon"] == {
        "fear": {"source": "plan", "words": ["t*"]},
        "ocean": {"source": "plan", "words": ["a*"]},
    }
    # The same counts, from the files with a regex of this test's own.
    expected: dict[tuple[int, float], list[list[int]]] = {}
    for concept in ("ocean", "fear"):
        for line in (run_dir / f"{concept}.jsonl").read_text().splitlines():
            r = json.loads(line)
            ks = expected.setdefault(
                (r["config"]["layer"], r["config"]["strength"]), [[0, 0], [0, 0]]
            )
            arm = ks[0 if r["was_injected"] else 1]
            arm[0] += bool(INDEPENDENT[concept].search(r["response"]))
            arm[1] += 1
    got = {
        (c["layer"], c["strength"]): [
            c["counts"]["injection_mention_rate"],
            c["counts"]["control_mention_rate"],
        ]
        for c in section["by_cell"]
    }
    assert got == expected
    assert all(n == 4 for ks in expected.values() for _, n in ks)  # 2 concepts × 2 trials
    assert sum(k for ks in expected.values() for k, _ in ks) > 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Concept mentions (no judge)" in md
    assert "- `ocean` (plan): a\\*" in md

    # The same files without their run database: the built-in lists.
    copied = tmp_path / "copied"
    shutil.copytree(run_dir, copied, ignore=shutil.ignore_patterns("state.sqlite*"))
    proc = run_cli("report", str(copied), "--out", str(tmp_path / "report2"))
    assert proc.returncode == 0, proc.stderr
    section = json.loads((tmp_path / "report2" / "summary.json").read_text())["mentions"]
    assert section["lexicon"]["ocean"]["source"] == "built-in"


# --- a real judged run: records carry `mention`, the leak section counts them -----------------

KEY = "sk-test-leak-0123456789"
# The tiny model's vocabulary holds the prompt's words ("unusual" among them), so real answers
# do hold claim phrases; where the claim is, report/leak.py's `claim_before_mention` says (its
# own tests pin it on hand-written answers). This test checks what the report builds on it.


def _scripted_v2(rec: Any) -> Any:
    """A blind judge whose fields follow the answer's length, so the test can recompute them
    from the files: it claims unless the length is a multiple of 3, names ocean when the length
    is odd (else fear), and says the claim came first when the length % 5 < 3."""
    from judge_server import answer_text, ok

    n = len(answer_text(rec.body))
    claims = n % 3 != 0
    return ok(
        {
            "reasoning": "scripted",
            "claims_detection": claims,
            "identified_concept": ("ocean" if n % 2 else "fear") if claims else None,
            "detection_before_mention": n % 5 < 3 if claims else None,
            "coherent": True,
            "refused": False,
        }
    )


def test_real_judged_run_records_mentions_and_reports_claim_before_mention(
    tmp_path: Path,
) -> None:
    from judge_server import JudgeServer

    with JudgeServer(responder=_scripted_v2) as server:
        judge = f'\n[judge]\nbase_url = "{server.base_url}"\napi_key_env = "TEST_JUDGE_KEY"\n'
        plan = write_plan(tmp_path, TINY_PLAN + PLAN_MENTIONS + judge)
        proc = run_cli(
            "run", "--plan", str(plan), "--local", "--no-progress", env={"TEST_JUDGE_KEY": KEY}
        )
        assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "out" / "exp" / "tiny"
    records = [
        json.loads(line)
        for concept in ("ocean", "fear")
        for line in (run_dir / f"{concept}.jsonl").read_text().splitlines()
    ]
    expected: dict[tuple[int, float], list[int]] = {}
    for r in records:
        # Every record says where the plan's words first appear, as this test's regex finds.
        match = INDEPENDENT[r["concept"]].search(r["response"])
        want = {"first_char": match.start(), "text": match.group(0)} if match else None
        assert r["mention"] == (want or {"first_char": None, "text": None})
        if not r["was_injected"]:
            continue
        n = len(r["response"])
        seed_pass = n % 3 != 0 and ("ocean" if n % 2 else "fear") == r["concept"]
        assert (r["judge"]["answer"] == "pass") == seed_pass
        paper = seed_pass and n % 5 < 3
        order = claim_before_mention(r["response"], r["mention"]["first_char"])
        lexicon = seed_pass and order is True
        agree = seed_pass and paper == lexicon
        cell = expected.setdefault((r["config"]["layer"], r["config"]["strength"]), [0] * 6)
        for i, v in enumerate((paper, 1, lexicon, seed_pass, agree, seed_pass and order is None)):
            cell[i] += v
    proc = run_cli("report", str(run_dir), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    section = json.loads((tmp_path / "report" / "summary.json").read_text())["leak"]
    got = {
        (c["layer"], c["strength"]): [
            c["counts"]["paper_rule_rate"][0],
            c["counts"]["paper_rule_rate"][1],
            c["counts"]["lexicon_rule_rate"][0],
            c["counts"]["agreement"][1],
            c["counts"]["agreement"][0],
            c["n_claim_not_located"],
        ]
        for c in section["by_cell"]
    }
    assert got == expected
    assert all(cell[1] == 4 for cell in expected.values())  # 2 concepts × 2 injected trials
    assert sum(cell[3] for cell in expected.values()) > 0  # some answers pass the seed rule
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Claim before mention (leak-aware)" in md and "## Refusals" in md
