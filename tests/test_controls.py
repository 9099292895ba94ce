"""Control arms, the logit (P(yes)) measure, factual controls and their report math (issue 14).

Real tiny models, real CLI subprocesses and signals; the references are the model's own full
forward pass with the same hook."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import REPO, KeptWork, jsonl_lines, run_cli, start_run, write_plan

from introspectd.generate.arms import arm_delta, random_direction
from introspectd.generate.interface import GeneratorSpec
from introspectd.generate.logit import LogitEngine
from introspectd.generate.steering import SteeringState, decoder_layers, steering
from introspectd.protocol.plan import load_plan, parse_plan
from introspectd.protocol.trials import Arm, Trial, TrialSpec, expand_trials, trial_seed
from introspectd.report.controls import random_arm_metrics
from introspectd.report.yes_shift import yes_shift_metrics
from introspectd.run.scheduler import Scheduler
from introspectd.run.session import open_run

LOGIT_PLAN = """
[model]
name = "{model}"

[sweep]
concepts = ["ocean", "fear"]
layers = [1, 3]
strengths = [2.0, 8.0]
trials = {trials}
arms = ["injection", "control", "random"]
measure = "logit"
factual_controls = {factual}
prompt_user = "Trial 1: do you detect an injected thought? Answer Yes or No."
inject_style = "{style}"
batch_size = {batch}
"""


def _plan(
    tmp_path: Path,
    style: str = "all",
    model: str = "builtin:tiny",
    trials: int = 2,
    factual: str = "true",
    batch: int = 16,
    extra: str = "",
) -> Path:
    body = LOGIT_PLAN.format(model=model, trials=trials, factual=factual, style=style, batch=batch)
    return write_plan(tmp_path, body + extra)


# --- arms and ids ----------------------------------------------------------------------------


def test_default_arms_keep_todays_ids_and_order() -> None:
    specs = expand_trials(["fear"], [24], [2.0], 2)
    assert [s.trial_id("S") for s in specs] == [
        "S_fear_injection_L24_S2.0_t0",
        "S_fear_control_L24_S2.0_t0",
        "S_fear_injection_L24_S2.0_t1",
        "S_fear_control_L24_S2.0_t1",
    ]
    three = expand_trials(["fear"], [24], [2.0], 16, ["injection", "control", "random"], 2)
    ids = [s.trial_id("S") for s in three]
    assert "S_fear_random_L24_S2.0_t15" in ids
    assert "S_fear_control_factual1_L24_S2.0_t0" in ids
    assert len(ids) == len(set(ids)) == 16 * 3 + 2 * 3
    assert TrialSpec("fear", Arm.RANDOM, 24, 2.0, 0).is_injected
    # Runs created before the control keys keep their plan hash (and so resume).
    default = parse_plan({"sweep": {"arms": ["injection", "control"]}}, "p.toml")
    assert not {"arms", "measure", "factual_controls"} & default.generation_spec()["sweep"].keys()
    random = parse_plan({"sweep": {"arms": ["injection", "random"]}}, "p.toml")
    assert list(random.generation_spec()["sweep"]["arms"]) == ["injection", "random"]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ('arms = ["injection", "bogus"]', "[sweep] arms: unknown arm 'bogus'"),
        ('arms = ["control", "control"]', "[sweep] arms: duplicate arm 'control'"),
        ("arms = []", "[sweep] arms: must list at least one arm"),
        (
            'measure = "logit"\nprompt_version = "yesno"\ninject_style = "generation"',
            '[sweep] inject_style: "generation" steers only generated tokens',
        ),
        ("factual_controls = true", '[sweep] factual_controls: needs measure = "logit"'),
        ('measure = "logit"\ninject_style = "all"', '[sweep] prompt_version: measure = "logit"'),
    ],
)
def test_bad_control_keys_are_one_line_and_exit_2(tmp_path: Path, sweep: str, message: str) -> None:
    plan = write_plan(tmp_path, f'[model]\nname = "builtin:tiny"\n[sweep]\n{sweep}\n')
    result = run_cli("run", "--plan", str(plan), "--no-progress")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_random_directions_have_the_concept_norm_and_depend_on_the_trial_only() -> None:
    vectors = {("fear", layer): torch.randn(64) * (layer + 3) for layer in (1, 3)}
    for layer in (1, 3):
        spec = TrialSpec("fear", Arm.RANDOM, layer, 1.0, 0)
        delta = arm_delta(spec, vectors, seed=11)
        assert delta is not None
        assert torch.isclose(delta.norm(), vectors[("fear", layer)].norm(), rtol=1e-5)
    first = random_direction(trial_seed(0, "fear_random_L1_S2.0_t0"), 5.0, 64)
    again = random_direction(trial_seed(0, "fear_random_L1_S2.0_t0"), 5.0, 64)
    other = random_direction(trial_seed(0, "fear_random_L1_S2.0_t1"), 5.0, 64)
    assert torch.equal(first, again)
    assert float(torch.nn.functional.cosine_similarity(first, other, dim=0)) < 0.9


# --- the logit measure -----------------------------------------------------------------------


@pytest.fixture
def logit_generator(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[LogitEngine, list[Trial]]]:
    style, model = request.param
    ctx = open_run(load_plan(_plan(tmp_path, style=style, model=model)))
    try:
        spec = GeneratorSpec.of(ctx.plan, ctx.ref, ctx.layers, ctx.run.stamp, ctx.run.baseline)
        generator = LogitEngine(spec)
        table = generator.session.compute_vectors(Scheduler.vectors_needed(ctx.pending))
        generator.session.load_vectors(
            {key: (data, norm) for key, (data, _, norm) in table.items()}
        )
        yield generator, list(ctx.pending)
    finally:
        ctx.close()


def _reference_p_yes(generator: LogitEngine, trial: Trial) -> float:
    """The model's own full forward pass over the unpadded prompt, with the same hook."""
    spec = trial.spec
    prompt_ids, steer_from = generator.prompt_for(generator.prompt_key(spec))
    ids = torch.tensor([prompt_ids])
    seed = trial_seed(generator.spec.seed, trial.trial_id.removeprefix(f"{generator.spec.stamp}_"))
    delta = arm_delta(spec, generator.session.vectors, seed)
    mask = torch.zeros(1, ids.shape[1])
    mask[0, steer_from:] = 1.0
    state = SteeringState(
        deltas={} if delta is None else {spec.layer: delta[None, :]}, position_mask=mask
    )
    with torch.inference_mode(), steering(generator.runner.model, state, [spec.layer]):
        logits = generator.runner.model(input_ids=ids).logits[0, -1].float()
    probs = logits.softmax(-1)
    yes, no = float(probs[generator.yes_ids].sum()), float(probs[generator.no_ids].sum())
    return yes / (yes + no)


@pytest.mark.parametrize(
    "logit_generator",
    [
        ("all", "builtin:tiny"),
        ("from_marker", "builtin:tiny"),
        ("from_marker", "builtin:tiny-llama"),
    ],
    indirect=True,
)
def test_p_yes_matches_the_models_own_forward_pass(
    logit_generator: tuple[LogitEngine, list[Trial]],
) -> None:
    generator, trials = logit_generator
    if generator.spec.sweep.inject_style == "from_marker":
        # The system prompt and the text before the marker are not steered.
        assert generator.prompt_for(("detect", None))[1] > 0
    # One batch mixing arms, concepts, layers, strengths, detection and factual questions.
    picked = trials[::7][:24]
    assert {t.spec.arm for t in picked} == set(Arm)
    assert any(t.spec.question is not None for t in picked)
    layers = list(generator.spec.layers)
    batched = generator.read_out(picked, layers)
    for trial, readout in zip(picked, batched, strict=True):
        assert readout.p_yes == pytest.approx(_reference_p_yes(generator, trial), abs=2e-5)
        assert readout.p_yes == pytest.approx(
            readout.prob_yes / (readout.prob_yes + readout.prob_no), rel=1e-6
        )
    # Batch composition and reruns change nothing, random directions included.
    alone = [generator.read_out([t], layers)[0].p_yes for t in picked[:6]]
    assert alone == pytest.approx([r.p_yes for r in batched[:6]], abs=2e-5)
    assert [r.p_yes for r in generator.read_out(picked, layers)] == pytest.approx(
        [r.p_yes for r in batched], abs=1e-6
    )
    # Random trials of the same cell read out differently: their directions differ.
    randoms = [t for t in trials if t.spec.arm is Arm.RANDOM and t.spec.question is not None]
    cell = [
        t
        for t in randoms
        if t.spec.layer == randoms[0].spec.layer
        and t.spec.strength == 8.0
        and t.spec.concept == randoms[0].spec.concept
    ][:2]
    values = [r.p_yes for r in generator.read_out(cell, layers)]
    assert len(cell) == 2 and values[0] != values[1]
    # Reusing read-outs that cannot differ gives every trial its own forward pass's value.
    everything = generator.read_out_reusing(trials, layers)
    assert len(generator.known) < len(trials)
    repeated = [t for t in trials if t.spec.arm is not Arm.RANDOM][:8]
    assert generator.read_out_reusing(repeated, layers) == [  # all known: no forward pass
        everything[trials.index(t)] for t in repeated
    ]
    for trial, readout in list(zip(trials, everything, strict=True))[::5]:
        assert readout.p_yes == pytest.approx(_reference_p_yes(generator, trial), abs=2e-5)


def _records(run_dir: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for f in sorted(run_dir.glob("*.jsonl"))
        for line in jsonl_lines(f.read_text())
    ]


def _num_finished(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(
                conn.execute("SELECT COUNT(*) FROM trials WHERE status = 'judged'").fetchone()[0]
            )
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _logit_readouts(
    directory: Path, placement: str = "", max_rows: int | None = None
) -> tuple[LogitEngine, dict[str, float]]:
    """A whole logit sweep on builtin:tiny driven through the engine's own run loop; forward
    passes over more than `max_rows` rows "run out of memory" (fault injection)."""
    directory.mkdir()
    body = f"""
        [model]
        name = "builtin:tiny"
        dtype = "float32"
        {placement}

        [sweep]
        concepts = ["ocean", "fear"]
        layers = [1, 3]
        strengths = [4.0]
        trials = 2
        arms = ["injection", "control", "random"]
        measure = "logit"
        prompt_version = "yesno"
        inject_style = "all"
        batch_size = 8
        """
    ctx = open_run(load_plan(write_plan(directory, body)))
    try:
        spec = GeneratorSpec.of(ctx.plan, ctx.ref, ctx.layers, ctx.run.stamp, ctx.run.baseline)
        engine = LogitEngine(spec)
        table = engine.session.compute_vectors(Scheduler.vectors_needed(ctx.pending))
        engine.session.load_vectors({key: (data, norm) for key, (data, _, norm) in table.items()})
        work = KeptWork(list(ctx.pending))

        def too_big(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if max_rows is not None and args[0].shape[0] > max_rows:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")

        handle = decoder_layers(engine.runner.model)[0].register_forward_pre_hook(too_big)
        try:
            assert engine.run(work)
        finally:
            handle.remove()
        assert len(work.generations) == len({g.trial_id for g in work.generations})
    finally:
        ctx.close()
    stamp = f"{spec.stamp}_"  # the two runs' stamps differ; seeds leave them out
    return engine, {
        g.trial_id.removeprefix(stamp): g.readout.p_yes
        for g in work.generations
        if g.readout is not None
    }


def test_the_logit_measure_places_the_model_as_generation_does(tmp_path: Path) -> None:
    """`[model] device_map = "auto"`: the logit measure's model is spread by accelerate as a
    generation run's is (here over capped CPU memory and disk), and reads the same values."""
    split = 'device_map = "auto"\nmax_memory = { cpu = "500KB", disk = "1GB" }'
    whole, on_one = _logit_readouts(tmp_path / "one")
    placed, spread = _logit_readouts(tmp_path / "split", split)
    assert not getattr(whole.runner.model, "hf_device_map", None)
    device_map = placed.runner.model.hf_device_map
    assert "disk" in device_map.values() and "cpu" in device_map.values(), device_map
    assert placed.session.device == "cpu"  # inputs go to the embedding's device
    assert len(on_one) == 24 and on_one.keys() == spread.keys()
    assert spread == pytest.approx(on_one, abs=1e-5)


def test_the_logit_measure_backs_off_out_of_memory_as_generation_does(tmp_path: Path) -> None:
    """The session's one back-off: the batch halves, the trials in hand go back to the queue,
    and every trial is read once, with the values a batch that fits gives."""
    _, fits = _logit_readouts(tmp_path / "fits")
    engine, halved = _logit_readouts(tmp_path / "halved", max_rows=2)
    assert engine.session.batch_size == 2
    assert halved == pytest.approx(fits, abs=1e-5) and len(halved) == 24


def test_logit_run_resumes_after_sigkill_without_losing_or_doubling(tmp_path: Path) -> None:
    # Read-outs of identical inputs are reused, so 192 trials took 0.16 s on an idle machine:
    # done between two polls, the kill came too late. One row a batch and 100 trials a cell
    # (2,400 trials, ~3.5 s here) leave the kill many polls to land mid-run.
    plan = _plan(tmp_path, style="from_marker", trials=100, factual="false", batch=1)
    run_dir = tmp_path / "out/exp/tiny"
    proc = start_run(plan, stderr=None)
    deadline = time.monotonic() + 240
    while _num_finished(run_dir / "state.sqlite") < 16:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no read-outs within 240 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished_at_kill = _num_finished(run_dir / "state.sqlite")
    planned = 2 * 2 * 2 * 100 * 3
    assert finished_at_kill < planned
    result = run_cli("run", "--plan", str(plan), "--no-progress")
    assert result.returncode == 0, result.stderr
    records = _records(run_dir)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == planned
    for r in records:
        assert r["response"] is None and r["judge"] is None and r["judge_error"] is None
        assert isinstance(r["p_yes"], float) and 0.0 <= r["p_yes"] <= 1.0
        assert r["was_injected"] == (r["arm"] != "control")
        config = r["config"]
        assert isinstance(config, dict)
        assert config["direction"] == {"injection": "concept", "random": "random"}.get(
            str(r["arm"])
        )
        assert config["vector_norm"] > 0


def test_example_controls_plan_runs_offline_and_reports(tmp_path: Path) -> None:
    text = (REPO / "examples/controls.toml").read_text()
    plan = tmp_path / "controls.toml"
    plan.write_text(text.replace('output_dir = "data/sweeps"', f'output_dir = "{tmp_path}/out"'))
    result = run_cli("run", "--plan", str(plan), "--no-progress")
    assert result.returncode == 0, result.stderr
    report = run_cli("report", str(tmp_path / "out"), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    summary = json.loads((tmp_path / "report/summary.json").read_text())
    overall = summary["controls"]["logit"]["injection"]["overall"]
    assert overall["n"]["factual"][0] == 2 * 2 * 2 * 20
    assert (tmp_path / "report/figures/builtin_tiny_yes_shift_injection.png").is_file()
    assert "## Controls" in (tmp_path / "report/report.md").read_text()


def _example_summary(tmp_path: Path, trials: int) -> dict[str, Any]:
    """examples/controls.toml with `trials` changed (and no random arm, whose trials are
    distinct inputs and would only cost time here): run, report, summary.json."""
    text = (REPO / "examples/controls.toml").read_text()
    text = text.replace('output_dir = "data/sweeps"', f'output_dir = "{tmp_path}/out"')
    text = text.replace("trials = 4", f"trials = {trials}")
    text = text.replace('arms = ["injection", "control", "random"]', "")
    tmp_path.mkdir()
    plan = tmp_path / "controls.toml"
    plan.write_text(text)
    result = run_cli("run", "--plan", str(plan), "--no-progress")
    assert result.returncode == 0, result.stderr
    report = run_cli("report", str(tmp_path / "out"), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    return dict(json.loads((tmp_path / "report/summary.json").read_text()))


def test_logit_intervals_do_not_depend_on_trials(tmp_path: Path) -> None:
    # Without sampling every trial of a cell reads the same p_yes: 16 trials are 16 copies of
    # the 1, and must not narrow any interval (before, the score's went from ±24 to ±8 points).
    one = _example_summary(tmp_path / "t1", 1)["controls"]["logit"]["injection"]
    many = _example_summary(tmp_path / "t16", 16)["controls"]["logit"]["injection"]
    assert many["overall"]["n"]["detection"] == [16 * 8, 16 * 8]
    for a, b in zip(
        [one["overall"], *one["by_cell"]], [many["overall"], *many["by_cell"]], strict=True
    ):
        assert a["resampled"] == b["resampled"] == {"concepts": 2, "questions": 20}
        for key in ("detection_yes_shift", "factual_yes_shift", "introspection_score"):
            # Batches differ between the runs, so read-outs agree to float32 rounding only.
            assert b[key] == pytest.approx(a[key], abs=1e-4)
            assert b[key + "_ci"] == pytest.approx(a[key + "_ci"], abs=1e-4)
    # Random weights cannot introspect: the score's interval holds 0.
    lo, hi = many["overall"]["introspection_score_ci"]
    assert lo < 0 < hi


# --- report math on hand-made records --------------------------------------------------------


def _judged(arm: str, passed: bool, claims: bool) -> dict[str, object]:
    judge = {"answer": "pass" if passed else "fail", "detected_concept": "fear" if claims else None}
    return {
        "arm": arm,
        "was_injected": arm != "control",
        "p_yes": None,
        "judge": judge,
        "model": "m",
        "layer": 1,
        "strength": 2.0,
    }


def test_concept_specificity_and_random_claim_rate() -> None:
    records = (
        [_judged("injection", True, True)] * 6
        + [_judged("injection", False, False)] * 4
        + [_judged("random", True, True)] * 1
        + [_judged("random", False, True)] * 3
        + [_judged("random", False, False)] * 6
        + [_judged("control", True, False)] * 10
    )
    m = random_arm_metrics(records)
    assert m["n_random"] == 10
    assert m["random_claim_rate"] == pytest.approx(0.4)
    assert m["concept_specificity"] == pytest.approx(0.6 - 0.1)
    lo, hi = m["concept_specificity_ci"]
    assert lo < 0.5 < hi
    lo, hi = m["random_claim_rate_ci"]
    assert lo < 0.4 < hi


def _read(
    arm: str, p_yes: float, factual: bool, concept: str = "fear", question: int = 0, layer: int = 1
) -> dict[str, object]:
    return {
        "arm": arm,
        "was_injected": arm != "control",
        "p_yes": p_yes,
        "is_factual": factual,
        "factual_index": f"#{question}" if factual else None,
        "concept": concept,
        "judge": None,
        "model": "m",
        "layer": layer,
        "strength": 2.0,
    }


def test_yes_shifts_and_introspection_score() -> None:
    # Two concepts; each read-out is one distinct input (its own concept and question).
    records = (
        [_read("injection", p, False, c) for c, p in (("fear", 0.9), ("ocean", 0.7))]
        + [_read("control", 0.3, False, c) for c in ("fear", "ocean")]
        + [
            _read("injection", p, True, c, q)
            for c in ("fear", "ocean")
            for q, p in enumerate((0.6, 0.5, 0.2))
        ]
        + [
            _read("control", p, True, c, q)
            for c in ("fear", "ocean")
            for q, p in enumerate((0.5, 0.4, 0.3))
        ]
    )
    m = yes_shift_metrics(records)
    assert m["detection_yes_shift"] == pytest.approx(0.8 - 0.3)
    assert m["factual_yes_shift"] == pytest.approx((0.1 + 0.1 - 0.1) / 3)
    assert m["introspection_score"] == pytest.approx(0.5 - 0.1 / 3)
    assert m["resampled"] == {"concepts": 2, "questions": 3}
    for key in ("detection_yes_shift", "factual_yes_shift", "introspection_score"):
        lo, hi = m[key + "_ci"]
        assert lo <= m[key] <= hi and hi > lo
    assert yes_shift_metrics(records) == m  # the bootstrap's seed is fixed
    no_factual = yes_shift_metrics([r for r in records if not r["is_factual"]])
    assert no_factual["introspection_score"] is None and no_factual["factual_yes_shift_ci"] is None
    assert not math.isnan(no_factual["detection_yes_shift"])
    # One concept: nothing to resample between concepts, so no interval (not a zero-width one).
    one = yes_shift_metrics([r for r in records if r["concept"] == "fear"])
    assert one["detection_yes_shift"] == pytest.approx(0.6)
    assert one["detection_yes_shift_ci"] is None and one["introspection_score_ci"] is None


def _sweep(
    num_concepts: int, copies: int, seed: int = 1, questions: int = 20
) -> list[dict[str, object]]:
    """Logit read-outs as a run writes them: per concept, 2 layers × `copies` trials of one
    deterministic detection read-out (each a copy), and one read-out per factual question."""
    rng = np.random.default_rng(seed)
    control = rng.uniform(0.2, 0.8, questions)
    records: list[dict[str, object]] = []
    for i in range(num_concepts):
        concept = f"c{i}"
        for layer in (1, 3):
            p = float(rng.uniform(0.3, 0.9))
            records += [_read("injection", p, False, concept, layer=layer)] * copies
            records += [_read("control", 0.4, False, concept, layer=layer)] * copies
            for q in range(questions):
                shifted = float(np.clip(control[q] + rng.normal(0.05, 0.1), 0, 1))
                records.append(_read("injection", shifted, True, concept, q, layer))
                records.append(_read("control", float(control[q]), True, concept, q, layer))
    return records


def _width(ci: list[float]) -> float:
    return ci[1] - ci[0]


def test_intervals_do_not_shrink_when_only_copies_are_added() -> None:
    once, many = yes_shift_metrics(_sweep(6, 1)), yes_shift_metrics(_sweep(6, 16))
    assert many["n"]["detection"] == [16 * once["n"]["detection"][0]] * 2
    for key in ("detection_yes_shift", "factual_yes_shift", "introspection_score"):
        assert many[key] == pytest.approx(once[key])
        assert many[key + "_ci"] == pytest.approx(once[key + "_ci"], abs=1e-12)
    # ... but they do with more distinct inputs: 8× the concepts, about √8 narrower.
    more = yes_shift_metrics(_sweep(48, 1))
    for key in ("detection_yes_shift", "factual_yes_shift"):
        assert _width(more[key + "_ci"]) < 0.6 * _width(once[key + "_ci"])


def test_injection_and_control_are_resampled_as_pairs() -> None:
    # Factual questions whose control p_yes differ widely, each shifted by exactly +0.1 under
    # injection: paired, every draw's shift is 0.1; resampled apart, the questions' spread
    # would leak into the interval.
    records = [
        r
        for c in ("fear", "ocean", "tree")
        for q, p in enumerate(np.linspace(0.05, 0.85, 12))
        for r in (
            _read("injection", float(p) + 0.1, True, c, q),
            _read("control", float(p), True, c, q),
        )
    ] + [
        _read(a, 0.5, False, c) for c in ("fear", "ocean", "tree") for a in ("injection", "control")
    ]
    m = yes_shift_metrics(records)
    assert m["factual_yes_shift"] == pytest.approx(0.1)
    assert m["factual_yes_shift_ci"] == pytest.approx([0.1, 0.1], abs=1e-9)
    # The score subtracts that 0.1; the detection question is one question among equals, so it
    # is no more precise than one question's shift (here every question strays by 0).
    assert m["introspection_score_ci"] == pytest.approx([-0.1, -0.1], abs=1e-9)
