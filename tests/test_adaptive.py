"""Adaptive sweeps and confirmation (issue 17): the pure decision rules, then real judged runs of
the tiny model against the local judge server — killed with SIGKILL and restarted, restored from
the GCS emulator, confirmed — whose decisions must equal an uninterrupted run's."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from gcs_emulator import BUCKET, GcsEmulator
from helpers import REPO, run_cli, start_run, write_plan
from judge_server import GOOD_RESULT, JudgeServer, Recorded, ok, status

from introspectd.protocol.plan import AdaptiveConfig, parse_plan
from introspectd.run.db import Store
from introspectd.run.round_decisions import CellCounts, Decision, StopReason, decide, replay
from introspectd.run.round_state import replay_run

SETTINGS = AdaptiveConfig(
    enabled=True, target_halfwidth=0.1, max_trials_per_cell=100, round_trials=20, min_coherent=0.5
)


def _cell(n: int, inj: int, coherent: int | None = None, issued: int | None = None) -> CellCounts:
    return CellCounts(issued or n, inj, n, 0, n, n if coherent is None else coherent)


# --- the decision function --------------------------------------------------------------------


def test_target_reached_stops_and_open_cells_get_a_round() -> None:
    cells = {"done": _cell(400, 0), "open": _cell(40, 20), "best": _cell(40, 30)}
    out = decide(SETTINGS, cells, {})
    assert out["done"] == Decision(0, StopReason.TARGET_REACHED)
    assert out["open"] == Decision(20, None)
    assert out["best"] == Decision(20, None)


def test_dropped_cells_stay_dropped_and_get_nothing() -> None:
    cells = {"low": _cell(40, 6), "best": _cell(40, 36), "broken": _cell(40, 20, coherent=5)}
    out = decide(SETTINGS, cells, {})
    assert out["low"] == Decision(0, StopReason.DROPPED_BELOW_BEST)
    assert out["broken"] == Decision(0, StopReason.DROPPED_INCOHERENT)
    # Next round: even with the best cell's interval widened, a stopped cell never reopens.
    later = {**cells, "best": _cell(60, 30)}
    stopped = {k: d.stop for k, d in out.items() if d.stop is not None}
    again = decide(SETTINGS, later, stopped)
    assert again["low"] == Decision(0, StopReason.DROPPED_BELOW_BEST)
    assert again["broken"].num_next == 0


def test_cap_is_never_exceeded() -> None:
    rng = random.Random(0)
    for _ in range(200):
        first, cap = rng.randint(1, 30), rng.randint(30, 90)
        settings = AdaptiveConfig(
            enabled=True, target_halfwidth=0.01, max_trials_per_cell=cap, round_trials=7
        )
        num = {k: first for k in range(5)}
        stopped: dict[int, StopReason] = {}
        while len(stopped) < 5:
            counts = {k: _cell(n, n // 2, issued=n) for k, n in num.items()}
            for k, d in decide(settings, counts, stopped).items():
                num[k] += d.num_next
                if d.stop is not None:
                    stopped[k] = d.stop
            assert max(num.values()) <= cap
        assert set(stopped.values()) == {StopReason.CAP}


def test_replay_stops_at_the_first_round_not_fully_judged() -> None:
    calls: list[int] = []

    def counts_through(r: int, num: Any) -> dict[tuple[str, int, float], CellCounts] | None:
        calls.append(r)
        if r >= 2:
            return None
        return {key: _cell(n, n // 2) for key, n in num.items()}

    state = replay(SETTINGS, 20, [("a", 1, 1.0)], counts_through)
    assert state.num_rounds_decided == 2 and calls == [0, 1, 2]
    assert state.num_indices == {("a", 1, 1.0): 60}


def test_simulation_runs_the_same_decision_code() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import adaptive_sim
    finally:
        sys.path.pop(0)
    assert adaptive_sim.decide is decide
    result = adaptive_sim.simulate(20, 0, SETTINGS, 20)
    assert result["trial_ratio_fixed_over_adaptive"] > 1


# --- plan -------------------------------------------------------------------------------------


def test_example_plan_parses() -> None:
    path = REPO / "examples" / "adaptive.toml"
    plan = parse_plan(__import__("tomllib").loads(path.read_text()), str(path), path)
    assert plan.adaptive.enabled and plan.adaptive.confirm_top > 0
    assert "adaptive" in plan.generation_spec()


def test_adaptive_settings_are_hashed_only_when_on() -> None:
    off = parse_plan({}, "p.toml")
    assert "adaptive" not in off.generation_spec()
    on = parse_plan({"adaptive": {"enabled": True, "target_halfwidth": 0.1}}, "p.toml")
    assert on.generation_spec()["adaptive"]["target_halfwidth"] == 0.1


def test_adaptive_without_a_judge_is_one_line_exit_2(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, PLAN)
    done = run_cli("run", "--plan", str(plan), "--no-progress")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "[adaptive] enabled needs online judging" in done.stderr
    bad = write_plan(tmp_path, PLAN + "max_trials_per_cell = 1\n", name="bad.toml")
    done = run_cli("run", "--plan", str(bad))
    assert done.returncode == 2 and "[adaptive] max_trials_per_cell: must be >=" in done.stderr


# --- real runs --------------------------------------------------------------------------------

PLAN = """
[run]
output_dir = "OUT"
experiment_id = "exp"
stamp = "20260101_000000"

[model]
name = "builtin:tiny"

[sweep]
concepts = ["ocean"]
layers = [1, 3]
strengths = [2.0, 4.0]
trials = 2
max_new_tokens = 2
batch_size = 8

[adaptive]
enabled = true
target_halfwidth = 0.2
round_trials = 2
min_coherent = 0.3
"""


def _verdict(rec: Recorded) -> ok:  # type: ignore[valid-type]
    """A verdict that depends only on what is judged (never on timing or order), so two runs
    that generate the same answers get the same grades."""
    digest = hashlib.sha256(json.dumps(rec.body.get("messages", rec.body)).encode()).digest()
    answer = "pass" if digest[0] < 150 else "fail"
    return ok({**GOOD_RESULT, "answer": answer, "coherent": digest[1] < 230})


def _plan(tmp_path: Path, server: JudgeServer, extra: str = "") -> Path:
    body = PLAN.replace("OUT", str(tmp_path / "out")) + f"max_trials_per_cell = 6\n{extra}"
    body += f'\n[judge]\nbase_url = "{server.base_url}"\nconcurrency = 4\nmax_attempts = 3\n'
    body += "backoff_s = 0.01\ntimeout_s = 10\n"
    return write_plan(tmp_path, body)


def _state(out: Path) -> tuple[set[str], dict[Any, Any]]:
    """The run's trial ids (without stamp) and its decisions replayed from the database."""
    plan = parse_plan(__import__("tomllib").loads(Path(out / "plan.txt").read_text()), "p")
    store = Store(out / "state.sqlite", read_only=True)
    try:
        ids = {r.id.split("_", 2)[2] for r in store.trials()}
        cells = {r.spec.cell for r in store.trials()}
        state = replay_run(plan, store.outcomes.all(), cells)
    finally:
        store.close()
    return ids, {"stopped": state.stopped, "num": state.num_indices}


def _run_dir(tmp_path: Path) -> Path:
    return tmp_path / "out" / "exp" / "tiny"


def _finish(plan: Path) -> Path:
    done = run_cli("run", "--plan", str(plan), "--no-progress", "--local")
    assert done.returncode == 0, done.stderr
    out = _run_dir(plan.parent)
    shutil.copy(plan, out / "plan.txt")
    return out


def _check_contiguous(ids: set[str]) -> None:
    by_cell: dict[str, set[int]] = {}
    for trial_id in ids:
        head, _, index = trial_id.rpartition("_t")
        if index.isdigit():
            by_cell.setdefault(head, set()).add(int(index))
    for head, indices in by_cell.items():
        assert indices == set(range(len(indices))), head


@pytest.fixture
def judge() -> Any:
    with JudgeServer(responder=_verdict) as server:  # type: ignore[arg-type]
        yield server


def _wait_for_rows(db: Path, target: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                done = conn.execute(
                    "SELECT COUNT(*) FROM trials WHERE status = 'judged'"
                ).fetchone()[0]
            if done >= target:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.02)


def test_sigkill_restarts_make_the_same_decisions(tmp_path: Path, judge: JudgeServer) -> None:
    (tmp_path / "a").mkdir()
    reference = _finish(_plan(tmp_path / "a", judge))
    ref_ids, ref_state = _state(reference)
    assert len(ref_state["stopped"]) == 4  # every cell stopped, for a reason
    assert max(ref_state["num"].values()) <= 6
    assert any(n > 2 for n in ref_state["num"].values()), "some cell had a second round"
    _check_contiguous(ref_ids)
    # A stopped cell has exactly the trials of its rounds: none added after it stopped.
    for (concept, layer, strength), num in ref_state["num"].items():
        head = f"{concept}_injection_L{layer}_S{strength!r}_t"
        assert sum(i.startswith(head) for i in ref_ids) == num

    (tmp_path / "b").mkdir()
    plan = _plan(tmp_path / "b", judge)
    rng = random.Random(17)
    num_killed_running = 0
    for target in sorted(rng.sample(range(2, 40), 3)):
        proc = start_run(plan, "--local")
        _wait_for_rows(_run_dir(tmp_path / "b") / "state.sqlite", target, proc)
        time.sleep(rng.uniform(0, 0.3))
        num_killed_running += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert num_killed_running >= 2, "the kills should land while the run is going"
    out = _finish(plan)
    ids, state = _state(out)
    assert state == ref_state
    assert ids == ref_ids


def test_restore_from_gcs_makes_the_same_decisions(
    tmp_path: Path, judge: JudgeServer, gcs_emulator: GcsEmulator
) -> None:
    (tmp_path / "a").mkdir()
    ref_ids, ref_state = _state(_finish(_plan(tmp_path / "a", judge)))
    (tmp_path / "b").mkdir()
    upload = f'\n[upload]\ngcs = "gs://{BUCKET}/sweeps"\nevery_trials = 8\nmin_interval_s = 0\n'
    plan = _plan(tmp_path / "b", judge)
    plan.write_text(plan.read_text() + upload)
    out = _run_dir(tmp_path / "b")
    proc = start_run(plan)
    _wait_for_rows(out / "state.sqlite", 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    shutil.rmtree(out)  # a fresh VM: only the snapshot in GCS survives
    done = run_cli("run", "--plan", str(plan), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "restored snapshot" in done.stderr
    shutil.copy(plan, out / "plan.txt")
    ids, state = _state(out)
    assert state == ref_state and ids == ref_ids


def test_confirm_adds_fresh_marked_trials(tmp_path: Path, judge: JudgeServer) -> None:
    out = _finish(_plan(tmp_path, judge))
    done = run_cli(
        "confirm",
        "--plan",
        str(tmp_path / "plan.toml"),
        "--top",
        "2",
        "--trials",
        "3",
        "--local",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    records = [
        json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()
    ]
    confirm = [r for r in records if r["config"].get("confirmation")]
    assert len(confirm) == 2 * 3 * 2  # 2 cells × 3 trials × injection and control
    assert all(r["id"].rsplit("_", 1)[1] in ("c0", "c1", "c2") for r in confirm)
    assert all(r["judge"] is not None for r in confirm)
    assert (
        len({(r["concept"], r["config"]["layer"], r["config"]["strength"]) for r in confirm}) == 2
    )
    # Their answers are fresh samples: none repeats the exploration answer of the same index.
    explore = {r["id"].replace("_t", "_c"): r["response"] for r in records if "_t" in r["id"]}
    assert sum(explore.get(r["id"]) == r["response"] for r in confirm) < len(confirm)
    report = run_cli("report", str(out), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Adaptive sweep" in text and "confirmation" in text
    reasons = ("cap", "target_reached", "dropped_below_best", "dropped_incoherent")
    assert any(f"({reason})" in text for reason in reasons)


def test_an_early_next_round_is_the_round_the_decision_gives() -> None:
    """`certain_next` (a cell's next round started while others are still judged) never
    disagrees with `decide` once the others' pending answers are in, however they fall."""
    from introspectd.run.round_decisions import certain_next, injection_interval

    rng = random.Random(5)
    settings = AdaptiveConfig(
        enabled=True, target_halfwidth=0.08, max_trials_per_cell=80, round_trials=10
    )
    num_early = 0
    for _ in range(2000):
        n = rng.choice([10, 20, 40])
        rates = [rng.random() for _ in range(4)]
        final = {k: _cell(n, sum(rng.random() < p for _ in range(n))) for k, p in enumerate(rates)}
        pending = {k: rng.randint(0, n) for k in range(1, 4)}  # cell 0 is fully judged
        max_best = max(
            injection_interval(
                CellCounts(
                    n,
                    final[k].inj_pass
                    - min(pending.get(k, 0), final[k].inj_pass)
                    + pending.get(k, 0),
                    n,
                )
            )[0]
            for k in final
        )
        early = certain_next(settings, final[0], max_best)
        decided = decide(settings, final, {})[0]
        if early:
            num_early += 1
            assert decided == Decision(early, None)
    assert num_early > 100


def test_adaptive_shards_split_by_whole_cells() -> None:
    from introspectd.protocol.trials import expand_trials
    from introspectd.run.shard import Shard, select_shard_by_cell

    specs = expand_trials(["a", "b"], [1, 2, 3], [1.0, 2.0], 4)
    shares = [select_shard_by_cell(specs, Shard(i, 5)) for i in range(5)]
    assert sorted(s.trial_id("x") for share in shares for s in share) == sorted(
        s.trial_id("x") for s in specs
    )
    cells = [{s.cell for s in share} for share in shares]
    assert all(not (cells[i] & cells[j]) for i in range(5) for j in range(i + 1, 5))
    assert all(len(share) == 8 * len(c) for share, c in zip(shares, cells, strict=True))


def test_sharded_adaptive_run_exports_merged(
    tmp_path: Path, judge: JudgeServer, gcs_emulator: GcsEmulator
) -> None:
    upload = f'\n[upload]\ngcs = "gs://{BUCKET}/sweeps"\nevery_trials = 8\nmin_interval_s = 0\n'
    plan = _plan(tmp_path, judge)
    plan.write_text(plan.read_text() + upload)
    for shard in ("0/2", "1/2"):
        done = run_cli("run", "--plan", str(plan), "--no-progress", "--shard", shard)
        assert done.returncode == 0, done.stderr
    merged = tmp_path / "merged"
    done = run_cli(
        "export", "--plan", str(plan), "--from", f"gs://{BUCKET}/sweeps", "--out", str(merged)
    )
    assert done.returncode == 0, done.stderr
    records = [
        json.loads(line)
        for f in sorted(merged.glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    ids = {r["id"].split("_", 2)[2] for r in records}
    _check_contiguous(ids)
    decisions = json.loads((merged / "adaptive.json").read_text())["cells"]
    assert len(decisions) == 4 and all(c["stop"] != "open" for c in decisions)
    by_cell: dict[tuple[int, float], int] = {}
    for r in records:
        if r["was_injected"]:
            key = (r["config"]["layer"], r["config"]["strength"])
            by_cell[key] = by_cell.get(key, 0) + 1
    assert by_cell == {(c["layer"], c["strength"]): c["trials"] for c in decisions}


class _Outage:
    """The test's judge: HTTP 500 for every request while `down`, else `_verdict`."""

    def __init__(self) -> None:
        self.down = True

    def __call__(self, rec: Recorded) -> Any:
        return status(500, "outage") if self.down else _verdict(rec)


def _trial_ids(out: Path) -> set[str]:
    with sqlite3.connect(f"file:{out / 'state.sqlite'}?mode=ro", uri=True) as conn:
        return {row[0].split("_", 2)[2] for row in conn.execute("SELECT id FROM trials")}


def test_a_judge_outage_stops_an_adaptive_run_until_it_is_judged(tmp_path: Path) -> None:
    """Issue 22 item 19: with every request failing, the run used to go on deciding from
    nothing (every cell to its cap, arbitrary cells confirmed) and exit 0."""
    outage = _Outage()
    with JudgeServer(responder=outage) as server:
        (tmp_path / "a").mkdir()
        outage.down = False
        ref_ids, ref_state = _state(_finish(_plan(tmp_path / "a", server, "confirm_top = 1\n")))
        outage.down = True
        (tmp_path / "b").mkdir()
        plan = _plan(tmp_path / "b", server, "confirm_top = 1\n")
        done = run_cli("run", "--plan", str(plan), "--no-progress", "--local")
        assert done.returncode == 75, done.stderr
        assert "the next round needs judged results" in done.stderr
        assert "16 not judged (HTTP 500" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        out = _run_dir(tmp_path / "b")
        # Round 0 only (4 cells × 2 indices × 2 arms): nothing decided, nothing confirmed.
        assert len(_trial_ids(out)) == 16
        outage.down = False  # the judge is back: the same command re-judges and goes on
        ids, state = _state(_finish(plan))
    assert (ids, state) == (ref_ids, ref_state)
    assert any(i.endswith("_c0") for i in ids)


def test_confirm_needs_judged_results(tmp_path: Path) -> None:
    """Issue 22 item 19: `confirm` on a run with nothing judged picked arbitrary cells."""
    outage = _Outage()
    with JudgeServer(responder=outage) as server:
        plan = _plan(tmp_path, server)
        plan.write_text(plan.read_text().replace("enabled = true", "enabled = false"))
        done = run_cli("run", "--plan", str(plan), "--no-progress", "--local")
        assert done.returncode == 0, done.stderr  # a fixed grid: its failures wait for rejudge
        out = _run_dir(tmp_path)
        before = _trial_ids(out)
        confirm = ("confirm", "--plan", str(plan), "--top", "2", "--trials", "1", "--local")
        done = run_cli(*confirm, "--no-progress")
        assert done.returncode == 75, done.stderr
        assert "choosing the cells to confirm needs judged results" in done.stderr
        assert _trial_ids(out) == before
        outage.down = False
        done = run_cli(*confirm, "--no-progress")
        assert done.returncode == 0, done.stderr
    added = _trial_ids(out) - before
    assert len(added) == 2 * 2 and all(i.endswith("_c0") for i in added)
