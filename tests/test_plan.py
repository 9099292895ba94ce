"""Every bad input exits 2 with one line naming the file and key, before any model work."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_PLAN, run_cli, write_plan

from introspectd.cli import main
from introspectd.protocol.plan import load_plan

BAD_PLANS = [
    ("trails = 3", "[sweep] trails: unknown key"),
    ('trials = "40"', "[sweep] trials: must be an integer"),
    ("trials = 0", "[sweep] trials: must be >= 1"),
    ("trials = -2", "[sweep] trials: must be >= 1"),
    ("concepts = []", "[sweep] concepts: must name at least one concept"),
    ('concepts = ["fear", "fear"]', "[sweep] concepts: duplicate concept 'fear'"),
    ("strengths = [1.0, 0.0]", "[sweep] strengths: each strength must be a number > 0"),
    ("strengths = [-1.5]", "[sweep] strengths: each strength must be a number > 0"),
    ('inject_style = "sideways"', "[sweep] inject_style: must be one of generation, all"),
    ('inject_style = "from_marker"', "[sweep] marker: 'Trial 1' does not occur in the user prompt"),
    ('prompt_version = "v9"', "[sweep] prompt_version: must be one of v1, v2"),
    ("layers = [1, 6]", "[sweep] layers: layer 6 is out of range for builtin:tiny (6 layers"),
    ('layers = "middle"', '[sweep] layers: must be "default" or a list'),
    ("max_new_tokens = 0", "[sweep] max_new_tokens: must be >= 1"),
    ("batch_size = 0", '[sweep] batch_size: must be "auto" or an integer >= 1'),
]


def _sweep_plan(tmp_path: Path, extra: str) -> Path:
    body = TINY_PLAN.replace("trials = 2\n", "") if extra.startswith("trials") else TINY_PLAN
    for key in ("concepts", "layers", "strengths", "max_new_tokens", "batch_size"):
        if extra.startswith(key):
            body = "\n".join(line for line in body.splitlines() if not line.startswith(key))
    return write_plan(tmp_path, body + "\n" + extra + "\n")


def _assert_one_line(capsys: pytest.CaptureFixture[str], rc: int, expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert expected in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("extra", "expected"), BAD_PLANS)
def test_bad_sweep_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, expected: str
) -> None:
    plan = _sweep_plan(tmp_path, extra)
    rc = main(["run", "--plan", str(plan), "--local", "--no-progress"])
    err = _assert_one_line(capsys, rc, expected)
    assert str(plan) in err
    assert not (tmp_path / "out").exists(), "nothing may be created for a bad plan"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[model]\nname = "qwen-nonsense"\n', "[model] name: 'qwen-nonsense' is neither"),
        ('[model]\nname = "./no/such/dir"\n', "[model] name: './no/such/dir' is neither"),
        ('[model]\nname = "builtin:huge"\n', "[model] name: unknown built-in model"),
        (
            '[model]\nname = "builtin:tiny"\n[judge]\nconcurrency = 0\n',
            "[judge] concurrency: must be >= 1",
        ),
        (
            '[model]\nname = "builtin:tiny"\n[judge]\nconcurrency = 4\nmin_concurrency = 8\n',
            "[judge] min_concurrency: must be <= concurrency (4), got 8",
        ),
        (
            '[model]\nname = "builtin:tiny"\n[judge]\nmin_concurrency = 0\n',
            "[judge] min_concurrency: must be >= 1",
        ),
        ('[model]\nname = "builtin:tiny"\n[judge]\napi = "soap"\n', "[judge] api: must be one of"),
        (
            '[model]\nname = "builtin:tiny"\n[upload]\ngcs = "s3://x"\n',
            "[upload] gcs: must look like",
        ),
        ('[model]\nname = "builtin:tiny"\n[modle]\nname = "x"\n', "modle: unknown key"),
        ('[model]\nname = "builtin:tiny"\ndtype = 16\n', "[model] dtype: must be a string"),
        (
            '[model]\nname = "builtin:tiny"\n[sweep]\ntrials = true\n',
            "[sweep] trials: must be an integer, got a boolean",
        ),
        ('[model\nname = "x"\n', "malformed TOML"),
        (
            '[model]\nname = "builtin:tiny"\ndtype = ' + "[" * 100_000 + "\n",
            "malformed TOML: nested too deeply",
        ),
        (
            '[run]\nstamp = "2026-01-01"\n[model]\nname = "builtin:tiny"\n',
            "[run] stamp: must look like",
        ),
    ],
)
def test_bad_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    plan = write_plan(tmp_path, body)
    rc = main(["run", "--plan", str(plan), "--local", "--no-progress"])
    _assert_one_line(capsys, rc, expected)


def test_missing_plan_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--plan", str(tmp_path / "nope.toml")])
    _assert_one_line(capsys, rc, "nope.toml: plan file not found")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--concept", "joy"], "--concept: 'joy' is not a concept of"),
        (["--trials", "3"], "--trials: must be between 1 and the plan's trials (2)"),
        (["--trials", "x"], "argument --trials: invalid int value"),
        (["--shard", "3/3"], "--shard"),
        (["--shard", "one-of-two"], "--shard"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    plan = write_plan(tmp_path, TINY_PLAN)
    rc = main(["run", "--plan", str(plan), "--local", "--no-progress", *flags])
    _assert_one_line(capsys, rc, expected)


def test_bad_plan_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, TINY_PLAN + "\ntrails = 3\n")
    proc = run_cli("run", "--plan", str(plan), "--local")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"introspectd: {plan}: [sweep] trails: unknown key (did you mean 'trials'? see "
        "docs/plan.md for every plan key)"
    ]


def test_defaults_are_the_seed_sweep(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path, '[model]\nname = "3b"\n'))
    assert plan.sweep.concepts == ("celebration", "ocean", "fear", "silence")
    assert plan.sweep.strengths == (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    assert (plan.sweep.trials, plan.sweep.max_new_tokens, plan.sweep.temperature) == (40, 200, 1.0)
    assert (plan.judge.max_attempts, plan.judge.backoff_s, plan.upload.every_trials) == (3, 1.0, 50)


def test_example_plans_load(tmp_path: Path) -> None:
    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))
    assert {p.name for p in examples} >= {"quickstart.toml", "seed-sweep.toml"}
    for path in examples:
        plan = load_plan(path)
        assert plan.path == path and plan.sweep.concepts and plan.sweep.trials >= 1, path.name
    seed = load_plan(examples[0].parent / "seed-sweep.toml")
    assert seed.sweep.concepts == ("celebration", "ocean", "fear", "silence")
