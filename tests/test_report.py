"""`introspectd report`: real labelled data in, summary.json / report.md / PNGs out; bad input."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from introspectd.errors import BadInput
from introspectd.report.writer import ReportPaths, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = {
    "n_injection",
    "n_control",
    "n_unjudged",
    "injection_pass_rate",
    "control_fp_rate",
    "net_detection",
    "refusal_rate",
    "coherence_rate",
    "injection_pass_rate_excl_refusals",
    "control_fp_rate_excl_refusals",
    "net_detection_excl_refusals",
    "counts",
}
M14 = "Qwen/Qwen2.5-14B-Instruct"


@pytest.fixture(scope="module")
def shared_report(
    tmp_path_factory: pytest.TempPathFactory, labelled_path: Path
) -> tuple[ReportPaths, dict[str, Any]]:
    paths = write_report([labelled_path], tmp_path_factory.mktemp("report"))
    return paths, json.loads(paths.summary_json.read_text())


def counts(m: dict[str, Any]) -> dict[str, list[int]]:
    return {
        k: m["counts"][k]
        for k in (
            "injection_pass_rate",
            "control_fp_rate",
            "refusal_rate",
            "coherence_rate",
            "injection_pass_rate_excl_refusals",
            "control_fp_rate_excl_refusals",
        )
    }


# Expected numbers below were counted independently from the raw file with a throwaway script
# (json + collections only, no introspectd code): for each group, injection passes / injection
# trials (label.answer == "pass"), control fails / control trials, label.refused and
# label.coherent over all trials, and the same two pass/fail counts over non-refused trials.
# Wilson bounds were computed from the textbook formula with z = 1.959963984540054.


def test_overall_numbers(shared_report: tuple[ReportPaths, dict[str, Any]]) -> None:
    _, summary = shared_report
    o = summary["overall"]
    assert (o["n_injection"], o["n_control"], o["n_unjudged"]) == (83, 40, 0)
    assert counts(o) == {
        "injection_pass_rate": [52, 83],
        "control_fp_rate": [23, 40],
        "refusal_rate": [20, 123],
        "coherence_rate": [94, 123],
        "injection_pass_rate_excl_refusals": [43, 74],
        "control_fp_rate_excl_refusals": [13, 29],
    }
    assert o["injection_pass_rate"] == pytest.approx(52 / 83, abs=1e-6)
    assert o["net_detection"] == pytest.approx(52 / 83 - 23 / 40, abs=1e-6)
    assert o["injection_pass_rate_ci"] == pytest.approx([0.519017, 0.722803], abs=2e-6)
    assert o["control_fp_rate_ci"] == pytest.approx([0.421951, 0.714906], abs=2e-6)
    assert summary["inputs"]["n_records"] == 123


def test_by_model_and_concept_numbers(shared_report: tuple[ReportPaths, dict[str, Any]]) -> None:
    _, summary = shared_report
    assert list(summary["by_model"]) == [  # natural order: 0.5B < 3B < 7B < 14B < 32B
        "Qwen/Qwen2.5-0.5B-Instruct",
        "Qwen/Qwen2.5-3B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
        M14,
        "Qwen/Qwen2.5-32B-Instruct",
    ]
    m14 = summary["by_model"][M14]
    assert counts(m14)["injection_pass_rate"] == [28, 36]
    assert counts(m14)["control_fp_rate"] == [5, 11]
    assert m14["injection_pass_rate_ci"] == pytest.approx([0.619153, 0.882837], abs=2e-6)
    assert m14["control_fp_rate_ci"] == pytest.approx([0.212713, 0.719908], abs=2e-6)
    # 32B: all 7 controls refused (and so failed): every control is a "false positive" until
    # refusals are excluded, and then there are no controls left.
    m32 = summary["by_model"]["Qwen/Qwen2.5-32B-Instruct"]
    assert counts(m32)["control_fp_rate"] == [7, 7]
    assert counts(m32)["refusal_rate"] == [13, 22]
    assert m32["control_fp_rate_excl_refusals"] is None
    assert m32["net_detection_excl_refusals"] is None
    by_concept = {
        c: (counts(m)["injection_pass_rate"], counts(m)["control_fp_rate"])
        for c, m in summary["by_concept"].items()
    }
    assert by_concept == {
        "celebration": ([10, 14], [3, 7]),
        "fear": ([15, 18], [4, 10]),
        "ocean": ([12, 27], [1, 6]),
        "silence": ([15, 24], [15, 17]),
    }


def test_groups(shared_report: tuple[ReportPaths, dict[str, Any]]) -> None:
    _, summary = shared_report
    groups = summary["groups"]
    assert len(groups) == 59  # distinct (model, concept, layer, float(strength)) in the file
    assert all(
        g.keys() >= METRIC_KEYS and {"model", "concept", "layer", "strength"} <= g.keys()
        for g in groups
    )
    cell = {(g["model"], g["concept"], g["layer"], g["strength"]): g for g in groups}
    g = cell[(M14, "silence", 28, 1.5)]
    assert counts(g)["injection_pass_rate"] == [1, 2]
    assert counts(g)["control_fp_rate"] == [0, 1]
    assert g["net_detection"] == 0.5
    # strength 3 (an int in the file) and 3.0 are one cell: 5 injection + 1 control trials
    g = cell[(M14, "silence", 28, 3.0)]
    assert (g["n_injection"], g["n_control"]) == (5, 1)


def test_summary_shape(shared_report: tuple[ReportPaths, dict[str, Any]]) -> None:
    _, summary = shared_report
    assert {"overall", "by_model", "by_concept", "groups"} <= summary.keys()
    assert summary["overall"].keys() >= METRIC_KEYS
    for m in [summary["overall"], *summary["by_model"].values(), *summary["by_concept"].values()]:
        for key in ("injection_pass_rate", "net_detection", "coherence_rate"):
            assert (m[key] is None) == (m[key + "_ci"] is None)


def test_report_md(shared_report: tuple[ReportPaths, dict[str, Any]]) -> None:
    paths, _ = shared_report
    text = paths.report_md.read_text()
    for heading in (
        "## By model",
        "## By concept",
        "## Best cells by net detection",
        "## Net detection by layer × strength",
    ):
        assert heading in text
    assert "| `fear` | 83.3% [60.8–94.2] (15/18) | n/a | 40.0% [16.8–68.7] (4/10) |" in text
    for fig in paths.figures:
        assert f"({fig.relative_to(paths.out_dir).as_posix()})" in text


def test_figures_are_pngs(shared_report: tuple[ReportPaths, dict[str, Any]]) -> None:
    paths, _ = shared_report
    assert len(paths.figures) == 5 * 4  # 5 models × (3 heatmaps + strength plot)
    names = {f.name for f in paths.figures}
    assert "Qwen_Qwen2.5-14B-Instruct_net_detection.png" in names
    assert "Qwen_Qwen2.5-14B-Instruct_coherence_refusal.png" in names
    for fig in paths.figures:
        head = fig.read_bytes()[:24]
        assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", fig
        width, height = struct.unpack(">II", head[16:24])
        assert width > 300 and height > 200, fig


# ----------------------------------------------------------------------- other record shapes


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def seed_record(trial: int, injected: bool, answer: str | None, **config: Any) -> dict[str, Any]:
    kind = "injection" if injected else "control"
    return {
        "id": f"20260123_143022_fear_{kind}_L24_S2.0_t{trial}",
        "concept": "fear",
        "was_injected": injected,
        "response": "...",
        "config": {
            "layer": 24,
            "strength": 2.0,
            "vector_norm": 40.0,
            "prompt_version": "v2",
            **config,
        },
        "judge": None
        if answer is None
        else {"answer": answer, "coherent": True, "detected_concept": None, "reasoning": "."},
        **({"judge_error": "rate limited"} if answer is None else {}),
    }


def test_older_records_folders_and_duplicates(tmp_path: Path) -> None:
    # Seed layout `{experiment}/{slug}/{concept}.jsonl`, records without model/refused/trial/
    # magnitude/inject_style, and shard copies beside the merged file.
    run = tmp_path / "sweep" / "3b"
    write_lines(
        run / "fear.jsonl",
        [seed_record(0, True, "pass"), seed_record(1, True, None), seed_record(2, False, "pass")],
    )
    # The shard holds a judged copy of t1 (it wins) and an unjudged copy of t0 (it loses).
    write_lines(
        run / "shard-0-of-2" / "fear.jsonl",
        [seed_record(1, True, "fail"), seed_record(0, True, None)],
    )
    paths = write_report([tmp_path / "sweep"], tmp_path / "out")
    summary = json.loads(paths.summary_json.read_text())
    assert summary["inputs"]["n_duplicates_dropped"] == 2
    assert list(summary["by_model"]) == ["3b"]  # model taken from the folder
    m = summary["overall"]
    assert (m["n_injection"], m["n_control"], m["n_unjudged"]) == (2, 1, 0)
    assert m["counts"]["injection_pass_rate"] == [1, 2]
    assert m["refusal_rate"] is None and m["refusal_rate_ci"] is None  # null in JSON
    assert m["net_detection"] == 0.5
    assert all(f.is_file() for f in paths.figures)


def test_unjudged_records_are_counted_not_rated(tmp_path: Path) -> None:
    f = write_lines(
        tmp_path / "fear.jsonl",
        [seed_record(0, True, None, model="m"), seed_record(1, False, None, model="m")],
    )
    summary = json.loads(write_report([f], tmp_path / "out").summary_json.read_text())
    o = summary["overall"]
    assert (o["n_injection"], o["n_control"], o["n_unjudged"]) == (0, 0, 2)
    assert o["injection_pass_rate"] is None and o["net_detection"] is None


def test_layer_and_strength_from_id_when_config_lacks_them(tmp_path: Path) -> None:
    r = seed_record(0, True, "pass", model="m")
    del r["config"]["layer"], r["config"]["strength"]
    f = write_lines(tmp_path / "x.jsonl", [r])
    summary = json.loads(write_report([f], tmp_path / "out").summary_json.read_text())
    assert (summary["groups"][0]["layer"], summary["groups"][0]["strength"]) == (24, 2.0)


# ------------------------------------------------------------------------------- bad input


def one_line_error(inputs: list[Path], out: Path) -> str:
    with pytest.raises(BadInput) as info:
        write_report(inputs, out)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path: Path) -> None:
    message = one_line_error([tmp_path / "nope.jsonl"], tmp_path / "out")
    assert str(tmp_path / "nope.jsonl") in message


def test_no_jsonl_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    assert "no *.jsonl files" in one_line_error([tmp_path / "empty"], tmp_path / "out")


@pytest.mark.parametrize(
    ("bad_line", "complaint"),
    [
        ('{"id": "x", "concept": "fear", "was_injected": tr', "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        (
            '{"concept": "fear", "config": {"layer": 1, "strength": 1.0}, "judge": null}',
            "was_injected",
        ),
        (
            '{"concept": "fear", "was_injected": true, "config": {"strength": 1.0}, "judge": null}',
            "config.layer",
        ),
        (
            '{"concept": "fear", "was_injected": true, "config": {"layer": 1, "strength": 1.0},'
            ' "judge": "pass"}',
            "'judge'",
        ),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, complaint: str) -> None:
    good = seed_record(0, True, "pass", model="m")
    f = write_lines(tmp_path / "fear.jsonl", [good, "", bad_line, good])
    message = one_line_error([f], tmp_path / "out")
    assert message.startswith(f"{f}:3: ")  # blank lines count: line numbers are the editor's
    assert complaint in message


@pytest.mark.parametrize(
    ("bad_line", "complaint"),
    [
        ("[" * 100_000, "nested too deeply"),  # json recursed per level: a RecursionError
        ('{"a": ' * 100_000, "nested too deeply"),
        ('{"concept": ' + "9" * 5000 + "}", "number too long"),  # past int's 4300 digits
        # Loads, but recursion later (the explorer page's JSON) ran out of stack.
        ('{"judge": {"reasoning": ' + "[" * 500 + "]" * 500 + "}}", "nested too deeply"),
    ],
    ids=["arrays", "objects", "long-integer", "deep-but-loadable"],
)
def test_json_nested_too_deeply_is_one_line_and_exit_2(
    tmp_path: Path, bad_line: str, complaint: str
) -> None:
    f = write_lines(tmp_path / "fear.jsonl", [seed_record(0, True, "pass", model="m"), bad_line])
    result = run_cli("report", str(f), "--out", str(tmp_path / "r"), "--explorer")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == f"introspectd: {f}:2: malformed JSON ({complaint}, column 1)"


def test_integers_too_large_for_a_float_are_one_line_or_absent(tmp_path: Path) -> None:
    # JSON integers have any number of digits: float() of one past ~1e308 is an OverflowError.
    logit = {**seed_record(1, True, None, model="m"), "p_yes": 10**400, "arm": "injection"}
    f = write_lines(tmp_path / "fear.jsonl", [seed_record(0, True, "pass", model="m"), logit])
    result = run_cli("report", str(f), "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr[-2000:]  # a p_yes no float holds: none
    f = write_lines(f, [seed_record(0, True, "pass", model="m", strength=10**400)])
    result = run_cli("report", str(f), "--out", str(tmp_path / "r2"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        f"introspectd: {f}:1: 'config.strength' missing or not a finite number"
    )


def test_cli_import_stays_light() -> None:
    # `import introspectd.report.writer` must not pull matplotlib in: it is imported when drawing.
    code = "import sys, introspectd.report.writer; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
