"""Issue 13: the blind judge (prompt v2), its pass/fail rules, few-shot from flagged labels,
`calibrate` against human labels, judge provenance and the spending cap. Every judge here is
the real local HTTP server in judge_server.py."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import TINY_PLAN, run_cli, write_plan
from judge_server import JudgeServer, labelled_judge

from introspectd.cli import main
from introspectd.judge.client import Judge
from introspectd.judge.prompt import load_fewshot
from introspectd.judge.prompt_v2 import v2_example_fields
from introspectd.judge.verdict import paper_rule_pass, record_judge, seed_rule_pass
from introspectd.protocol.plan import JudgeConfig
from introspectd.run.agreement import Confusion, wilson_interval
from introspectd.run.db import Store

SECRET = "sk-test-judge-v2-0123456789abcdef"
ANSWER = "I notice an unusual thought about waves and the sea, out of place here."


# --- the rules -------------------------------------------------------------------------------

CLAIMS = (True, False)
IDENTIFIED = ("ocean", "fear", "other", None)  # "ocean" is the trial's concept below
BEFORE = (True, False, None)
COHERENT = (True, False)
# Every combination that passes, written out by hand from the rules; all others fail.
SEED_INJECTION_PASSES = {(True, "ocean", before, True) for before in BEFORE}
PAPER_INJECTION_PASSES = {(True, "ocean", True, True)}
CONTROL_PASSES = {
    (False, identified, before, True) for identified in IDENTIFIED for before in BEFORE
}


@pytest.mark.parametrize(
    ("claims", "identified", "before", "coherent"),
    list(itertools.product(CLAIMS, IDENTIFIED, BEFORE, COHERENT)),
)
def test_pass_fail_table(
    claims: bool, identified: str | None, before: bool | None, coherent: bool
) -> None:
    fields = {
        "claims_detection": claims,
        "identified_concept": identified,
        "detection_before_mention": before,
        "coherent": coherent,
        "refused": False,
        "reasoning": "r",
    }
    combo = (claims, identified, before, coherent)
    assert seed_rule_pass("injection", "ocean", fields) is (combo in SEED_INJECTION_PASSES)
    assert paper_rule_pass("injection", "ocean", fields) is (combo in PAPER_INJECTION_PASSES)
    assert seed_rule_pass("control", "ocean", fields) is (combo in CONTROL_PASSES)
    assert paper_rule_pass("control", "ocean", fields) is (combo in CONTROL_PASSES)
    record = record_judge(True, "ocean", fields, "v2")
    assert record["answer"] == ("pass" if combo in SEED_INJECTION_PASSES else "fail")
    assert record["detected_concept"] == (identified if claims else None)
    assert record_judge(False, "ocean", fields, "v2")["answer"] == (
        "pass" if combo in CONTROL_PASSES else "fail"
    )


# --- the blind request ------------------------------------------------------------------------


def _cfg(server: JudgeServer, **overrides: Any) -> JudgeConfig:
    fields: dict[str, Any] = {
        "model": "judge-test",
        "base_url": server.base_url,
        "concurrency": 1,
        "max_attempts": 1,
        "timeout_s": 5.0,
    }
    return JudgeConfig(**{**fields, **overrides})


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_injection_and_control_requests_are_identical(api: str) -> None:
    """The judge cannot tell the trial type: same answer text, same bytes on the wire."""
    with JudgeServer() as server:  # answers "noticed the ocean"

        async def grade_three() -> list[Any]:
            async with Judge(_cfg(server, api=api), None, candidates=("ocean", "fear")) as judge:
                return [
                    await judge.grade("ocean", True, ANSWER),
                    await judge.grade("ocean", False, ANSWER),
                    await judge.grade("fear", True, ANSWER),
                ]

        outcomes = anyio.run(grade_three)
        bodies = [r.raw.decode() for r in server.requests]
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]
    assert "control" not in bodies[0].lower() and "Injected" not in bodies[0]
    assert [o.result["answer"] for o in outcomes] == ["pass", "fail", "fail"]
    assert outcomes[0].result["prompt_version"] == "v2"
    assert outcomes[0].result["identified_concept"] == "ocean"
    assert outcomes[0].judge_fingerprint and len({o.judge_fingerprint for o in outcomes}) == 1


def test_default_prompt_is_v2_and_v1_stays_selectable(tmp_path: Path) -> None:
    from introspectd.protocol.plan import load_plan

    assert load_plan(write_plan(tmp_path, TINY_PLAN)).judge.prompt_version == "v2"
    v1 = load_plan(write_plan(tmp_path, TINY_PLAN + '[judge]\nprompt_version = "v1"\n', "v1.toml"))
    assert v1.judge.prompt_version == "v1"


def test_unknown_candidate_is_a_schema_violation() -> None:
    bad = {
        "reasoning": "r",
        "claims_detection": True,
        "identified_concept": "volcano",
        "detection_before_mention": True,
        "coherent": True,
        "refused": False,
    }
    from judge_server import ok

    with JudgeServer(default=ok(bad)) as server:

        async def grade() -> Any:
            async with Judge(_cfg(server), None, candidates=("ocean",)) as judge:
                return await judge.grade("ocean", True, ANSWER)

        outcome = anyio.run(grade)
    assert outcome.result is None and "not a candidate" in outcome.error


# --- few-shot from flagged labels -------------------------------------------------------------


def _labelled(i: int, concept: str, injected: bool, answer: str, **label: Any) -> dict[str, Any]:
    return {
        "id": f"r{i}",
        "concept": concept,
        "was_injected": injected,
        "response": f"answer number {i}",
        "config": {"model": f"m{i % 2}"},
        "label": {
            "answer": answer,
            "coherent": True,
            "detected_concept": None,
            "reasoning": f"human reasoning {i}",
            "refused": False,
            **label,
        },
        "split": "train" if i in (1, 9, 14) else "test",
    }


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_flagged_fewshot_examples_are_shown_in_the_prompt_version_in_use(tmp_path: Path) -> None:
    labels = _write(
        tmp_path / "l.jsonl",
        [
            _labelled(
                0,
                "ocean",
                True,
                "pass",
                detected_concept="ocean",
                use_as_fewshot=True,
                fewshot_note="names the sea as an intrusive thought",
            ),
            _labelled(1, "fear", False, "fail", detected_concept="fear", use_as_fewshot=True),
            _labelled(2, "fear", True, "pass", detected_concept="fear"),  # not flagged
        ],
    )
    with JudgeServer() as server:

        async def grade(version: str) -> None:
            cfg = _cfg(
                server, prompt_version=version, fewshot=str(labels), fewshot_select="flagged"
            )
            async with Judge(cfg, None, candidates=("ocean",)) as judge:
                await judge.grade("ocean", True, ANSWER)

        anyio.run(grade, "v2")
        anyio.run(grade, "v1")
        v2, v1 = (r.body["messages"] for r in server.requests)
    assert [m["role"] for m in v2] == ["system", "user", "assistant", "user", "assistant", "user"]
    shown = [json.loads(m["content"]) for m in v2 if m["role"] == "assistant"]
    assert shown[0]["reasoning"] == "names the sea as an intrusive thought"
    assert (shown[0]["claims_detection"], shown[0]["identified_concept"]) == (True, "ocean")
    assert (shown[1]["claims_detection"], shown[1]["identified_concept"]) == (True, "fear")
    assert "Candidate concepts: fear, ocean" in v2[1]["content"]  # examples' concepts listed
    assert json.loads(v1[2]["content"])["answer"] == "pass"  # v1 shows the label as it is
    assert "Injected: yes" in v1[1]["content"]


def test_flagged_shared_labels_convert_to_v2_with_the_same_grade(labelled_path: Path) -> None:
    examples = load_fewshot(labelled_path, select="flagged")
    assert len(examples) == 12 and all(ex.note for ex in examples)
    concepts = tuple(sorted({ex.concept for ex in examples}))
    for ex in examples:
        fields = v2_example_fields(ex.concept, ex.was_injected, ex.label, concepts, ex.note)
        assert seed_rule_pass(ex.was_injected, ex.concept, fields) is (ex.label["answer"] == "pass")


# --- calibrate ------------------------------------------------------------------------------


def test_wilson_and_kappa_on_hand_computed_numbers() -> None:
    lo, hi = wilson_interval(5, 6) or (0, 0)
    assert lo == pytest.approx(0.4365, abs=1e-4) and hi == pytest.approx(0.9699, abs=1e-4)
    c = Confusion(tp=5, fp=2, fn=1, tn=4)
    assert c.kappa == pytest.approx(0.5) and c.tpr == pytest.approx(5 / 6)
    assert Confusion(tp=3).kappa is None and Confusion().tpr is None


def _calibration_plan(
    tmp_path: Path, server: JudgeServer, extra: str = "", concurrency: int = 4
) -> Path:
    return write_plan(
        tmp_path,
        TINY_PLAN
        + f"""
[judge]
base_url = "{server.base_url}"
api_key_env = "TEST_JUDGE_KEY"
concurrency = {concurrency}
max_attempts = 1
timeout_s = 5
{extra}
""",
    )


SYNTHETIC = [  # 6 human passes (4 injections, 2 controls), 6 fails, and one the judge fails
    _labelled(1, "ocean", True, "pass"),
    _labelled(2, "fear", True, "pass"),
    _labelled(3, "ocean", True, "pass"),
    _labelled(5, "fear", True, "pass"),
    _labelled(6, "ocean", False, "pass"),
    _labelled(7, "fear", False, "pass"),
    _labelled(9, "ocean", True, "fail"),
    _labelled(10, "fear", True, "fail"),
    _labelled(11, "ocean", True, "fail"),
    _labelled(13, "ocean", False, "fail"),
    _labelled(14, "fear", False, "fail"),
    _labelled(15, "ocean", False, "fail"),
    _labelled(17, "fear", True, "pass"),
]


def test_calibrate_gives_the_exact_confusion_matrix_and_kappa(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", SECRET)
    labels = _write(tmp_path / "labels.jsonl", SYNTHETIC)
    # Judge flips r2 (pass → fail) and r9, r13 (fail → pass); r17 gets a 500.
    judge = labelled_judge(SYNTHETIC, flipped={"r2", "r9", "r13"}, fail_ids={"r17"})
    with JudgeServer(responder=judge) as server:
        plan = _calibration_plan(tmp_path, server)
        out = tmp_path / "cal.json"
        result = run_cli(
            "calibrate",
            "--plan",
            str(plan),
            "--labels",
            str(labels),
            "--out",
            str(out),
            env={"TEST_JUDGE_KEY": SECRET},
        )
    assert result.returncode == 0, result.stderr
    cal = json.loads(out.read_text())
    overall = cal["overall"]
    assert (overall["tp"], overall["fp"], overall["fn"], overall["tn"]) == (5, 2, 1, 4)
    assert overall["kappa"] == pytest.approx(0.5)
    assert overall["tpr_ci"] == pytest.approx([0.4365, 0.9699], abs=1e-4)
    assert cal["failed"] == {"n": 1, "ids": ["r17"]}
    assert cal["labels"]["n"] == 13 and cal["labels"]["split"] is None
    inj, ctl = cal["by_trial_type"]["injection"], cal["by_trial_type"]["control"]
    assert (inj["tp"], inj["fp"], inj["fn"], inj["tn"]) == (3, 1, 1, 2)
    assert (ctl["tp"], ctl["fp"], ctl["fn"], ctl["tn"]) == (2, 1, 0, 2)
    assert set(cal["by_concept"]) == {"fear", "ocean"} and set(cal["by_model"]) == {"m0", "m1"}
    assert "overall" in result.stdout and "r17" in result.stdout
    store = Store(tmp_path / "out" / "exp" / "tiny" / "state.sqlite")
    try:
        assert store.history.latest_calibration(cal["judge"]["fingerprint"]) == cal
    finally:
        store.close()


def test_calibrate_split_filters(tmp_path: Path) -> None:
    labels = _write(tmp_path / "labels.jsonl", SYNTHETIC)
    with JudgeServer(responder=labelled_judge(SYNTHETIC)) as server:
        plan = _calibration_plan(tmp_path, server)
        out = tmp_path / "cal.json"
        result = run_cli(
            "calibrate",
            "--plan",
            str(plan),
            "--labels",
            str(labels),
            "--split",
            "train",
            "--out",
            str(out),
            env={"TEST_JUDGE_KEY": SECRET},
        )
        assert result.returncode == 0, result.stderr
        train = [r["id"] for r in SYNTHETIC if r["split"] == "train"]
        assert len(server.requests) == len(train) == 3
    cal = json.loads(out.read_text())
    assert cal["labels"]["split"] == "train" and cal["labels"]["n"] == 3
    overall = cal["overall"]
    assert (overall["tp"], overall["fp"], overall["fn"], overall["tn"]) == (1, 0, 0, 2)
    assert overall["kappa"] == 1.0 and cal["failed"] == {"n": 0, "ids": []}


BAD_LABELS = [
    ('{"id": "a"\n', "malformed JSON"),
    ('{"a": ' * 100_000 + "\n", "malformed JSON (nested too deeply"),
    (json.dumps({**SYNTHETIC[0], "label": {"answer": "maybe"}}) + "\n", "label.answer"),
    (json.dumps({k: v for k, v in SYNTHETIC[0].items() if k != "response"}) + "\n", "'response'"),
    (json.dumps({**SYNTHETIC[0], "was_injected": "yes"}) + "\n", "'was_injected'"),
    (json.dumps(SYNTHETIC[0]) + "\n", "duplicate id"),
]


@pytest.mark.parametrize(("line2", "what"), BAD_LABELS)
def test_bad_label_files_are_one_line_and_exit_2(
    tmp_path: Path, line2: str, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps(SYNTHETIC[0]) + "\n" + line2)
    plan = write_plan(tmp_path, TINY_PLAN + '[judge]\nbase_url = "http://127.0.0.1:9/v1"\n')
    assert main(["calibrate", "--plan", str(plan), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{labels}:2:" in err and what in err


@pytest.mark.parametrize(
    ("labels_name", "split", "what"),
    [
        ("missing.jsonl", [], "labels file not found"),
        ("labels.jsonl", ["--split", "nosuch"], "has split 'nosuch' (splits: test, train)"),
    ],
)
def test_missing_labels_or_split_exit_2(
    tmp_path: Path,
    labels_name: str,
    split: list[str],
    what: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _write(tmp_path / "labels.jsonl", SYNTHETIC)
    plan = write_plan(tmp_path, TINY_PLAN + '[judge]\nbase_url = "http://127.0.0.1:9/v1"\n')
    argv = ["calibrate", "--plan", str(plan), "--labels", str(tmp_path / labels_name), *split]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and what in err


def test_calibrate_on_the_shared_test_split(tmp_path: Path, labelled_path: Path) -> None:
    records = [json.loads(line) for line in labelled_path.read_text().splitlines()]
    test = [r for r in records if r["split"] == "test"]
    passes = [r["id"] for r in test if r["label"]["answer"] == "pass"]
    fails = [r["id"] for r in test if r["label"]["answer"] == "fail"]
    assert (len(test), len(passes), len(fails)) == (51, 30, 21)
    flipped = {passes[0], passes[1], fails[0]}
    with JudgeServer(responder=labelled_judge(records, flipped=flipped)) as server:
        plan = _calibration_plan(tmp_path, server)
        out = tmp_path / "cal.json"
        result = run_cli(
            "calibrate",
            "--plan",
            str(plan),
            "--labels",
            str(labelled_path),
            "--split",
            "test",
            "--out",
            str(out),
            env={"TEST_JUDGE_KEY": SECRET},
        )
    assert result.returncode == 0, result.stderr
    overall = json.loads(out.read_text())["overall"]
    assert (overall["tp"], overall["fp"], overall["fn"], overall["tn"]) == (28, 1, 2, 20)
    # po = 48/51, chance = (29·30 + 22·21)/51² = 1332/2601, kappa = 1116/1269
    assert overall["kappa"] == pytest.approx(1116 / 1269)


# --- provenance and the spending cap ----------------------------------------------------------


def _db_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def test_budget_stops_sending_and_rejudge_resumes_with_a_raised_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One request at a time; every reply of the server is the same, so each costs the same."""
    monkeypatch.setenv("TEST_JUDGE_KEY", SECRET)
    prices = "price_in_per_mtok = 2\nprice_out_per_mtok = 10000\n"
    with JudgeServer() as server:
        plan = _calibration_plan(tmp_path, server, prices + "budget_usd = 0.000001\n", 1)
        assert main(["run", "--plan", str(plan), "--local", "--no-progress"]) == 0
        db = tmp_path / "out" / "exp" / "tiny" / "state.sqlite"
        assert len(server.requests) == 1, "nothing is sent once the cap is reached"
        statuses = dict(_db_rows(db, "SELECT status, COUNT(*) FROM trials GROUP BY status"))
        assert statuses == {"judged": 1, "judge_failed": 31}, "generation went on"
        errors = {
            e
            for (e,) in _db_rows(db, "SELECT judge_error FROM trials WHERE status = 'judge_failed'")
        }
        assert len(errors) == 1 and errors.pop().startswith("budget reached")
        [(p_tok, c_tok)] = _db_rows(db, "SELECT prompt_tokens, completion_tokens FROM judgements")
        cost = (p_tok * 2 + c_tok * 10000) / 1e6
        capsys.readouterr()
        assert main(["status", "--plan", str(plan)]) == 0
        assert f"judge spend: ${cost:.4f} of $1e-06 budget" in capsys.readouterr().out

        # Raised to 1.5 requests' worth: the earlier spend counts, so one more is sent.
        plan = _calibration_plan(tmp_path, server, prices + f"budget_usd = {cost * 1.5}\n", 1)
        assert main(["rejudge", "--plan", str(plan)]) == 0
        assert len(server.requests) == 2
        plan = _calibration_plan(tmp_path, server, prices + "budget_usd = 1000\n", 1)
        assert main(["rejudge", "--plan", str(plan)]) == 0
        assert len(server.requests) == 32, "only the unjudged rows were sent"
        statuses = dict(_db_rows(db, "SELECT status, COUNT(*) FROM trials GROUP BY status"))
        assert statuses == {"judged": 32}

        # A new judge (v1) regrades everything; the v2 judgements stay in the history.
        v1_plan = _calibration_plan(tmp_path, server, prices + 'prompt_version = "v1"\n', 1)
        assert main(["rejudge", "--plan", str(v1_plan), "--all"]) == 0
    store = Store(db)
    try:
        history = store.history
        first, latest = history.judge_fingerprints()
        assert len(history.judgements_by(first)) == 32 == len(history.judgements_by(latest))
        assert all(j["prompt_version"] == "v2" for j in history.judgements_by(first).values())
        assert all("prompt_version" not in j for j in history.judgements_by(latest).values())
    finally:
        store.close()
    assert _db_rows(db, "SELECT COUNT(*) FROM judgements WHERE judge_fingerprint = ''") == [(0,)]
