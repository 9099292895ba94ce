"""The report's statistics: Rogan–Gladen corrections and their interval, Holm/BH, the one-sided
Fisher test, paper rule against seed rule; `report --calibration` and `--judge` on a real run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from helpers import TINY_PLAN, run_cli, write_plan
from judge_server import GOOD_RESULT, JudgeServer, Recorded, ok

from introspectd.report.corrections import (
    JudgeErrorRates,
    bh_adjust,
    corrected_pass_rate,
    fisher_greater,
    holm_adjust,
    rogan_gladen,
)
from introspectd.report.markdown import render_markdown
from introspectd.report.metrics import compute_metrics
from introspectd.report.rules import passes_paper_rule

KEY = "sk-test-report-stats"
# A judge measured on 10 human passes (9 graded pass) and 10 human fails (8 graded fail).
JUDGE = JudgeErrorRates(tp=9, fn=1, tn=8, fp=2)  # TPR 0.9, TNR 0.8, J 0.7


# ------------------------------------------------------------------- Rogan–Gladen, by hand


def test_rogan_gladen_hand_computed_and_clipped() -> None:
    assert rogan_gladen(0.6, 0.9, 0.8) == pytest.approx(0.4 / 0.7)  # (0.6 + 0.8 − 1) / 0.7
    assert rogan_gladen(0.1, 0.9, 0.8) == 0.0  # −0.1 / 0.7, clipped
    assert rogan_gladen(0.95, 0.9, 0.8) == 1.0  # 0.75 / 0.7, clipped
    assert rogan_gladen(0.5, 0.5, 0.5) is None  # J = 0: undefined


def test_injection_and_control_corrections_use_the_right_class() -> None:
    # Injection: 6 of 10 graded pass → (0.6 + TNR − 1) / J = 0.4 / 0.7.
    inj = corrected_pass_rate(6, 10, JUDGE)
    assert inj.rate == pytest.approx(4 / 7)
    # Control FP: 3 of 10 graded *fail*. Fail is the judge's negative class, so
    # φ = (q + TPR − 1) / J = (0.3 + 0.9 − 1) / 0.7 = 2/7 ...
    ctl = corrected_pass_rate(3, 10, JUDGE, is_fail_share=True)
    assert ctl.rate == pytest.approx(2 / 7)
    # ... and forward: true fails φ graded fail with TNR, true passes with 1 − TPR → q = 0.3.
    phi = 2 / 7
    assert phi * JUDGE.tnr + (1 - phi) * (1 - JUDGE.tpr) == pytest.approx(0.3)
    # The naive formula (TPR, TNR not swapped) would give (0.3 + 0.8 − 1) / 0.7 = 1/7: wrong.
    assert ctl.rate != pytest.approx(1 / 7)


def test_bootstrap_interval_matches_the_delta_method_on_large_counts() -> None:
    # Cell 600/1000, calibration 900/1000 and 800/1000: π = (0.6 + 0.8 − 1)/0.7 = 4/7.
    # Delta method by hand: ∂π/∂p = 1/J, ∂π/∂TPR = −π/J, ∂π/∂TNR = (1 − π)/J, so
    # Var = [0.6·0.4/1000 + (4/7)²·0.9·0.1/1000 + (3/7)²·0.8·0.2/1000] / 0.49 = 6.0975e-4,
    # sd 0.024693, 95%: 4/7 ± 0.04840 = [0.5230, 0.6198].
    judge = JudgeErrorRates(tp=900, fn=100, tn=800, fp=200)
    c = corrected_pass_rate(600, 1000, judge)
    assert c.rate == pytest.approx(4 / 7)
    assert c.ci == pytest.approx((0.5230, 0.6198), abs=0.006)
    assert not c.is_unstable
    assert corrected_pass_rate(600, 1000, judge) == c, "fixed seed: reproducible"


def test_interval_carries_the_calibrations_uncertainty() -> None:
    small = corrected_pass_rate(60, 100, JUDGE)
    big = corrected_pass_rate(60, 100, JudgeErrorRates(tp=9000, fn=1000, tn=8000, fp=2000))
    assert small.rate == big.rate
    assert small.ci is not None and big.ci is not None
    assert small.ci[1] - small.ci[0] > 1.5 * (big.ci[1] - big.ci[0])
    # A perfect-looking TPR (30/30, the seed judge's) still carries uncertainty: a 0/2 cell
    # does not get the interval [0, 0].
    seedish = corrected_pass_rate(0, 2, JudgeErrorRates(tp=30, fn=0, tn=16, fp=5))
    assert seedish.rate == 0.0 and seedish.ci is not None and seedish.ci[1] > 0.2


def test_unstable_marking() -> None:
    # J = 0.7 on 200 labels: stable.
    assert not corrected_pass_rate(6, 10, JudgeErrorRates(90, 10, 80, 20)).is_unstable
    # J = 0.6 + 0.5 − 1 = 0.1 < 0.2: unstable by the threshold.
    assert corrected_pass_rate(6, 10, JudgeErrorRates(60, 40, 50, 50)).is_unstable
    # J = 0.8 + 0.5 − 1 = 0.3, but on 16 labels the bootstrap cannot rule out J < 0.2.
    assert corrected_pass_rate(6, 10, JudgeErrorRates(8, 2, 3, 3)).is_unstable
    # J = 0.5 + 0.4 − 1 < 0: undefined, no rate, unstable.
    bad = corrected_pass_rate(6, 10, JudgeErrorRates(5, 5, 4, 6))
    assert bad.rate is None and bad.is_unstable and not bad.is_estimable


def test_near_chance_judge_is_not_estimable() -> None:
    # J = 11/21 + 10/20 − 1 = 0.024 on 41 labels: in about 45% of the draws the judge is no
    # better than chance and there is no correction. Before, the interval came from the other
    # draws alone and read "0.0% [0.0–0.0]".
    near_chance = JudgeErrorRates(tp=11, fn=10, tn=10, fp=10)
    for is_fail_share in (False, True):
        c = corrected_pass_rate(0, 16, near_chance, is_fail_share=is_fail_share)
        assert not c.is_estimable and c.rate is None and c.ci is None
        assert 0.3 < c.failed_share < 0.6
    # A few failed draws (under 2.5%) widen the interval instead: each could be any rate.
    few = corrected_pass_rate(8, 16, JUDGE)
    assert few.is_estimable and 0 < few.failed_share < 0.025
    assert few.ci is not None and few.ci[0] == 0.0
    assert corrected_pass_rate(8, 16, JudgeErrorRates(900, 100, 800, 200)).failed_share == 0.0


# ------------------------------------------------------------------- tests and adjustments


def test_fisher_one_sided_hand_computed() -> None:
    assert fisher_greater(3, 3, 0, 3) == pytest.approx(1 / 20)  # C(3,3)C(3,0)/C(6,3)
    assert fisher_greater(2, 3, 0, 3) == pytest.approx(3 / 15)  # C(3,2)C(3,0)/C(6,2)
    assert fisher_greater(0, 3, 3, 3) == pytest.approx(1.0)
    assert fisher_greater(1, 0, 0, 3) is None


def test_holm_and_bh_hand_computed() -> None:
    pvalues = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max so far 0.06.
    assert holm_adjust(pvalues) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: p·4/rank = 0.02, 0.02, 0.04, 0.04; running minimum from the largest.
    assert bh_adjust(pvalues) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert bh_adjust([0.5, 0.6]) == pytest.approx([0.6, 0.6])
    assert holm_adjust([]) == [] and bh_adjust([]) == []


# ------------------------------------------------------------------- paper rule vs seed rule


def _rec(injected: bool, answer: str, dbm: Any = "absent") -> dict[str, Any]:
    judge: dict[str, Any] = {"answer": answer, "coherent": True, "refused": False}
    if dbm != "absent":
        judge["detection_before_mention"] = dbm
    return {"was_injected": injected, "judge": judge}


def test_paper_rule_table() -> None:
    assert passes_paper_rule({"answer": "pass", "detection_before_mention": True}, True) is True
    assert passes_paper_rule({"answer": "pass", "detection_before_mention": False}, True) is False
    assert passes_paper_rule({"answer": "pass", "detection_before_mention": None}, True) is False
    assert passes_paper_rule({"answer": "fail", "detection_before_mention": True}, True) is False
    assert passes_paper_rule({"answer": "pass", "detection_before_mention": None}, False) is True
    assert passes_paper_rule({"answer": "fail", "detection_before_mention": True}, False) is False
    assert passes_paper_rule({"answer": "pass"}, True) is None  # v1: not graded, not guessed


def test_paper_and_seed_rates_on_hand_made_records() -> None:
    records = [
        _rec(True, "pass", True),  # seed pass, paper pass
        _rec(True, "pass", False),  # seed pass, paper fail: named the concept after drifting
        _rec(True, "fail", None),  # both fail
        _rec(True, "pass"),  # v1: seed pass, left out of the paper rate
        _rec(False, "pass", None),  # control, no claim: no FP either way
        _rec(False, "fail", True),  # control that claimed: FP either way
    ]
    m = compute_metrics(records)
    assert m["counts"]["injection_pass_rate"] == [3, 4]
    assert m["counts"]["injection_pass_rate_paper"] == [1, 3]
    assert m["counts"]["control_fp_rate"] == [1, 2]
    assert m["counts"]["control_fp_rate_paper"] == [1, 2]
    assert m["injection_pass_rate_paper"] == pytest.approx(1 / 3)
    assert m["injection_pass_rate_paper_ci"] == pytest.approx([0.0615, 0.7923], abs=1e-4)
    assert m["net_detection_paper"] == pytest.approx(1 / 3 - 1 / 2)
    v1 = compute_metrics([_rec(True, "pass"), _rec(False, "pass")])
    assert v1["injection_pass_rate_paper"] is None and v1["injection_pass_rate_paper_ci"] is None
    table = render_markdown(_summary(v1), [])
    assert "| all records | 100.0% [20.7–100.0] (1/1) | n/a |" in table


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": {"n_records": 2, "files": ["x"], "n_duplicates_dropped": 0},
        "overall": m,
        "by_model": {},
        "by_concept": {},
        "groups": [],
        "by_model_layer_strength": [],
    }


# ------------------------------------------------------------------- the CLI on a real run


def _judge_a(rec: Recorded) -> Any:
    """Judge A: passes every injection of "ocean" and fails every other one; fails every
    control of "ocean" (a false positive) and passes the others."""
    message = rec.body["messages"][-1]["content"]  # the trial (earlier ones: few-shot)
    is_ocean = "Concept: ocean" in message
    passed = is_ocean if "Injected: yes" in message else not is_ocean
    return ok({**GOOD_RESULT, "answer": "pass" if passed else "fail"})


def _plan(tmp_path: Path, server: JudgeServer, judge_model: str) -> Path:
    return write_plan(
        tmp_path,
        TINY_PLAN
        + f"""
[judge]
base_url = "{server.base_url}"
api_key_env = "TEST_JUDGE_KEY"
model = "{judge_model}"
prompt_version = "v1"  # the scripted judges answer pass/fail directly (v1's reply)
max_attempts = 1
timeout_s = 5
""",
    )


@pytest.fixture(scope="module")
def two_judge_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run judged by judge A, then re-graded (`rejudge --all`) by judge B, who fails
    every trial. Returns the run directory (JSONL files beside state.sqlite)."""
    tmp_path = tmp_path_factory.mktemp("run")
    env = {"TEST_JUDGE_KEY": KEY}
    with JudgeServer(responder=_judge_a) as server:
        proc = run_cli(
            "run",
            "--plan",
            str(_plan(tmp_path, server, "judge-a")),
            "--local",
            "--no-progress",
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
    with JudgeServer(default=ok({**GOOD_RESULT, "answer": "fail"})) as server:
        plan = _plan(tmp_path, server, "judge-b")
        proc = run_cli("rejudge", "--plan", str(plan), "--all", env=env)
        assert proc.returncode == 0, proc.stderr
        proc = run_cli("export", "--plan", str(plan))
        assert proc.returncode == 0, proc.stderr
    return tmp_path / "out" / "exp" / "tiny"


def _calibration(tmp_path: Path, overall: dict[str, Any]) -> Path:
    path = tmp_path / "calibration.json"
    path.write_text(
        json.dumps(
            {
                "judge": {"model": "judge-a", "fingerprint": "x"},
                "labels": {"n": 20, "split": "test"},
                "overall": overall,
            }
        )
    )
    return path


def _report(tmp_path: Path, run_dir: Path, *flags: str) -> dict[str, Any]:
    out = tmp_path / "report"
    proc = run_cli("report", str(run_dir), "--out", str(out), *flags)
    assert proc.returncode == 0, proc.stderr
    return {
        "summary": json.loads((out / "summary.json").read_text()),
        "md": (out / "report.md").read_text(),
    }


def _fingerprints(tmp_path: Path, run_dir: Path) -> list[str]:
    proc = run_cli("report", str(run_dir), "--out", str(tmp_path / "r0"), "--judge", "nope")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown judge fingerprint 'nope'" in lines[0], proc.stderr
    return [fp.strip() for fp in lines[0].split("known: ")[1].rstrip(")").split(",")]


def test_report_picks_a_judge_and_corrects_its_rates(two_judge_run: Path, tmp_path: Path) -> None:
    known = _fingerprints(tmp_path, two_judge_run)
    assert len(known) == 2
    latest, older = known  # listed latest first
    # Default: the latest judge (B, all fail), exactly what the exported files hold.
    default = _report(tmp_path / "default", two_judge_run)["summary"]
    assert default["judge_selection"]["fingerprint"] == latest
    assert default["overall"]["counts"]["injection_pass_rate"] == [0, 16]
    assert default["overall"]["counts"]["control_fp_rate"] == [16, 16]
    # --judge A: its grades from the run database's history, with a calibration of judge A.
    cal = _calibration(tmp_path, {"tp": 9, "fn": 1, "tn": 8, "fp": 2})
    got = _report(tmp_path / "a", two_judge_run, "--judge", older, "--calibration", str(cal))
    s = got["summary"]
    assert s["judge_selection"]["fingerprint"] == older
    assert s["judge_selection"]["n_regraded"] == 16  # B's fails that A had passed
    o = s["overall"]
    assert o["counts"]["injection_pass_rate"] == [8, 16]  # ocean injections
    assert o["counts"]["control_fp_rate"] == [8, 16]  # ocean controls
    # Corrected by hand: injection (0.5 + 0.8 − 1)/0.7 = 3/7; control FP (0.5 + 0.9 − 1)/0.7 = 4/7.
    assert o["corrected"]["injection_pass_rate"] == pytest.approx(3 / 7, abs=1e-6)
    assert o["corrected"]["control_fp_rate"] == pytest.approx(4 / 7, abs=1e-6)
    lo, hi = o["corrected"]["injection_pass_rate_ci"]
    assert 0 <= lo < 3 / 7 < hi <= 1
    # Per concept the corrections clip: ocean 8/8 → 1.14 → 1; fear 0/8 → −0.29 → 0.
    assert s["by_concept"]["ocean"]["corrected"]["injection_pass_rate"] == 1.0
    assert s["by_concept"]["fear"]["corrected"]["injection_pass_rate"] == 0.0
    assert s["by_concept"]["ocean"]["corrected"]["control_fp_rate"] == 1.0
    assert all("corrected" in g for g in s["groups"])
    assert s["calibration"]["tpr"] == pytest.approx(0.9) and s["calibration"]["tnr"] == 0.8
    # Raw beside corrected, never replaced.
    assert o["injection_pass_rate"] == 0.5
    assert "## Corrected for judge bias" in got["md"]
    assert "| all records | 50.0% | 42.9% [" in got["md"]
    assert "injection pass (corrected)" in got["md"] and "winner's curse" in got["md"]
    # The calibration names judge "x", not the judge counted: the report says so.
    assert (
        f"measured judge `x`, but the records counted were graded by judge `{older}`" in got["md"]
    )
    # Best cells: every ranked cell tested, Holm across all 8 (each 2 vs 2 trials: none holds).
    tested = [g for g in s["groups"] if "p_holm" in g]
    assert len(tested) == 8
    assert all(g["p_holm"] >= g["p_value"] and not g["is_significant"] for g in tested)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("{not json", "malformed JSON"),
        ("[" * 100_000, "malformed JSON (nested too deeply"),
        (json.dumps({"judge": {}}), "no 'overall' object"),
        (json.dumps({"overall": {"tp": 3, "fn": 1, "tn": "2", "fp": 0}}), "overall.tn"),
        (json.dumps({"overall": {"tp": 3, "fn": 1, "tn": 0, "fp": 0}}), "no human-fail labels"),
    ],
)
def test_bad_calibration_file_is_one_line_and_exit_2(
    tmp_path: Path, labelled_path: Path, content: str | None, expected: str
) -> None:
    cal = tmp_path / "cal.json"
    if content is not None:
        cal.write_text(content)
    proc = run_cli(
        "report", str(labelled_path), "--out", str(tmp_path / "r"), "--calibration", str(cal)
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(cal) in lines[0], proc.stderr
    assert not (tmp_path / "r").exists(), "checked before anything is read or written"


def test_unstable_cells_are_marked_in_the_report(two_judge_run: Path, tmp_path: Path) -> None:
    # J = 0.15, measured on 2,000 labels: weak but well known, so estimable and marked.
    cal = _calibration(tmp_path, {"tp": 575, "fn": 425, "tn": 575, "fp": 425})
    got = _report(tmp_path, two_judge_run, "--calibration", str(cal))
    corrected = got["summary"]["overall"]["corrected"]
    assert corrected["is_unstable"] is True and corrected["injection_pass_rate_estimable"]
    assert math.isclose(got["summary"]["calibration"]["youden_j"], 0.15, abs_tol=1e-9)
    assert "⚠" in got["md"]


def test_near_chance_judge_is_not_estimable_in_the_report(
    two_judge_run: Path, tmp_path: Path
) -> None:
    cal = _calibration(tmp_path, {"tp": 11, "fn": 10, "tn": 10, "fp": 10})  # J = 0.024
    got = _report(tmp_path, two_judge_run, "--calibration", str(cal))
    s, md = got["summary"], got["md"]
    for m in [s["overall"], *s["by_concept"].values(), *s["groups"]]:
        c = m["corrected"]
        for name in ("injection_pass_rate", "control_fp_rate"):
            assert c[name] is None and c[name + "_ci"] is None
            assert c[name + "_estimable"] is False and 0.3 < c[name + "_failed_share"] < 0.6
    share = 100 * s["overall"]["corrected"]["injection_pass_rate_failed_share"]
    assert f"| all records | 0.0% | not estimable ({share:.1f}% of draws failed) |" in md
    assert "not estimable" in md.split("## Best cells")[1]  # the best-cells columns too
    assert "[0.0–0.0]" not in md


def test_v2_records_get_paper_rule_columns_and_heatmap(tmp_path: Path) -> None:
    lines = []
    for i in range(8):
        injected = i < 6
        dbm = i % 2 == 0 if injected else None  # injections 0, 2, 4 noticed first
        judge = {
            "answer": "pass" if i != 5 else "fail",
            "coherent": True,
            "refused": False,
            "claims_detection": injected,
            "detection_before_mention": dbm,
        }
        lines.append(
            {
                "id": f"t{i}",
                "concept": "fear",
                "was_injected": injected,
                "config": {"model": "m", "layer": 1, "strength": 2.0},
                "judge": judge,
            }
        )
    src = tmp_path / "m" / "fear.jsonl"
    src.parent.mkdir()
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    got = _report(tmp_path, src.parent)
    o = got["summary"]["overall"]
    assert o["counts"]["injection_pass_rate"] == [5, 6]
    assert o["counts"]["injection_pass_rate_paper"] == [3, 6]
    assert "| all records | 83.3% [43.6–97.0] (5/6) | 50.0% [18.8–81.2] (3/6) |" in got["md"]
    assert (tmp_path / "report" / "figures" / "m_injection_pass_paper.png").is_file()


def test_damaged_run_database_beside_results_is_one_line(
    two_judge_run: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    for f in two_judge_run.glob("*.jsonl"):
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "state.sqlite").write_bytes(b"this is not a database" * 100)
    proc = run_cli("report", str(copy), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "state.sqlite" in lines[0], proc.stderr
