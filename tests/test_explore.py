"""`introspectd explore` (a real uvicorn server in a subprocess) and `report --explorer`."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import time
import urllib.error
from pathlib import Path

import pytest
from explorer_server import (
    CONCEPTS,
    LAYERS,
    STRENGTHS,
    explorer,
    grid_records,
    logit_run,
    read_jsonl,
    study_records,
    write_jsonl,
)
from helpers import TINY_PLAN, run_cli, start_run, write_plan

from introspectd.protocol.factual import FACTUAL_QUESTIONS
from introspectd.protocol.trials import trial_seed
from introspectd.run.db import Store


def _ids(server, **params) -> list[str]:  # type: ignore[no-untyped-def]
    """Every id the server lists for `params`, page by page (page size 7)."""
    ids, offset = [], 0
    while True:
        page = server.get("/api/trials", offset=offset, limit=7, **params)
        ids += [t["id"] for t in page["items"]]
        offset += 7
        if offset >= page["total"]:
            assert len(ids) == page["total"]
            return ids


def test_paging_filters_and_one_trial(tmp_path: Path) -> None:
    records = grid_records()
    source = write_jsonl(tmp_path / "in" / "a.jsonl", records)
    source_bytes = _sha256(source)
    by_id = {r["id"]: r for r in records}
    with explorer(str(tmp_path / "in")) as server:
        meta = server.get("/api/meta")
        assert meta["models"] == ["tiny-model"]
        assert meta["concepts"] == CONCEPTS
        assert meta["arms"] == ["control", "injection"]

        cells = server.get("/api/cells", concept="ocean")["cells"]
        assert {(c["layer"], c["strength"]) for c in cells} == {
            (layer, s) for layer in LAYERS for s in STRENGTHS
        }
        for c in cells:
            mine = [
                r
                for r in records
                if r["concept"] == "ocean"
                and r["config"]["layer"] == c["layer"]
                and r["config"]["strength"] == c["strength"]
                and r["was_injected"] == (c["arm"] == "injection")
            ]
            assert c["n_planned"] == len(mine)
            assert c["n_pass"] == sum(
                bool(r["judge"]) and r["judge"]["answer"] == "pass" for r in mine
            )
            assert c["n_judged"] == sum(r["judge"] is not None for r in mine)

        everything = _ids(server)
        assert everything == [r["id"] for r in records]  # plan order, no repeats across pages

        def expect(**params: object) -> None:
            want = [r["id"] for r in records if _matches(r, params)]
            assert _ids(server, **params) == want, params
            assert want, f"a filter that selects nothing proves little: {params}"

        expect(concept="fear", layer=3, strength=4.0)
        expect(concept="fear", layer=3, strength=4.0, arm="control")
        expect(answer="pass")
        expect(answer="none")
        expect(coherent="false")
        expect(refused="true", concept="ocean")
        expect(failed="true")
        expect(q="LIGHTHOUSE", arm="injection")
        assert _ids(server, q="%") == []  # LIKE's wildcards are searched for as text
        assert _ids(server, q="_L1_S2.0_t1") == []  # ids are searched only with `id:`
        assert _ids(server, q="id:_L1_S2.0_t1") == [
            r["id"] for r in records if "_L1_S2.0_t1" in r["id"]
        ]

        one = server.get("/api/trial", id=records[3]["id"])
        assert one["response"] == records[3]["response"]
        assert one["judge"] == records[3]["judge"]
        assert one["config"]["prompt_version"] == "v2"
        assert by_id[one["id"]]["config"]["layer"] == one["config"]["layer"]

        with pytest.raises(urllib.error.HTTPError) as missing:
            server.get("/api/trial", id="no-such-trial")
        assert missing.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as bad:
            server.get("/api/trials", layer="three")
        assert bad.value.code == 400
        assert server.stop(signal.SIGINT) == 0
    assert _sha256(source) == source_bytes
    assert sorted(p.name for p in source.parent.iterdir()) == ["a.jsonl"]


def _matches(r: dict, params: dict) -> bool:
    judge = r["judge"] or {}
    checks = {
        "concept": lambda v: r["concept"] == v,
        "layer": lambda v: r["config"]["layer"] == v,
        "strength": lambda v: r["config"]["strength"] == v,
        "arm": lambda v: r["was_injected"] == (v == "injection"),
        "answer": lambda v: judge.get("answer") == v if v != "none" else not judge,
        "coherent": lambda v: judge.get("coherent") is (v == "true"),
        "refused": lambda v: judge.get("refused") is (v == "true"),
        "failed": lambda v: (r["judge_error"] is not None) == (v == "true"),
        "q": lambda v: v.lower() in r["response"].lower(),
    }
    return all(checks[k](v) for k, v in params.items())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _seed(db: Path, trial_id: str) -> int:
    """The trial's sampling seed from its run's own seed and stamp."""
    store = Store(db, read_only=True)
    try:
        run = store.get_run()
    finally:
        store.close()
    assert run is not None
    return trial_seed(run.spec["seed"], trial_id.removeprefix(f"{run.stamp}_"))


def test_plan_run_read_only_while_a_run_writes(tmp_path: Path) -> None:
    """The explorer on a run's database: never writes it, and its counts follow a run that
    extends the database while it serves."""
    plan = write_plan(tmp_path, TINY_PLAN)
    done = run_cli("run", "--plan", str(plan), "--local", "--no-progress")
    assert done.returncode == 0, done.stderr
    db = next((tmp_path / "out").rglob("state.sqlite"))
    before = _sha256(db)
    wal = Path(f"{db}-wal")
    wal_before = _sha256(wal) if wal.exists() else None
    with explorer("--plan", str(plan)) as server:
        num_done = sum(server.get("/api/meta")["counts"].values())
        assert num_done == 32
        assert len(_ids(server, concept="ocean")) == 16
        trial = server.get("/api/trial", id=_ids(server, concept="fear", arm="injection")[0])
        assert trial["seed"] == str(_seed(db, trial["id"]))  # a string: 63 bits, exactly
        assert trial["config"]["model"] == "builtin:tiny"
        assert server.stop() == 0
    assert _sha256(db) == before, "explore changed the database file"
    if wal_before is not None:
        assert _sha256(wal) == wal_before

    bigger = write_plan(tmp_path, TINY_PLAN.replace("trials = 2", "trials = 6"))
    with explorer("--plan", str(bigger)) as server:
        run = start_run(bigger, "--local")
        try:
            seen = []  # pending trials the explorer reports while the run goes
            deadline = time.monotonic() + 240
            while run.poll() is None and time.monotonic() < deadline:
                seen.append(server.get("/api/cells", concept="ocean")["counts"].get("pending", 0))
                time.sleep(0.2)
            assert run.wait(timeout=240) == 0, run.stderr.read() if run.stderr else ""
        finally:
            if run.poll() is None:
                run.kill()
        assert max(seen) > 0, "the explorer never saw the run's new trials while it ran"
        counts = server.get("/api/meta")["counts"]
        assert sum(counts.values()) == 2 * 2 * 2 * 6 * 2
        assert counts.get("pending", 0) == 0
        assert len(_ids(server, concept="ocean", layer=3, strength=4.0)) == 12
        assert server.stop() == 0


def _one_line_exit_2(*args: str) -> str:
    result = run_cli("explore", *args, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "http://" not in result.stdout  # refused before any URL is printed
    return lines[0]


def test_bad_inputs_are_one_line_and_exit_2(tmp_path: Path) -> None:
    records = write_jsonl(tmp_path / "a.jsonl", grid_records())
    assert "--port" in _one_line_exit_2(str(records), "--port", "eighty")
    assert "--port" in _one_line_exit_2(str(records), "--port", "70000")
    assert "no such file" in _one_line_exit_2(str(tmp_path / "missing.jsonl"))
    assert "--plan" in _one_line_exit_2()
    line = _one_line_exit_2("--plan", str(write_plan(tmp_path, TINY_PLAN)))
    assert "no run" in line.lower() or "not found" in line.lower() or "no database" in line, line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"concept": "x"\n')
    assert f"{bad}:1" in _one_line_exit_2(str(bad))
    for deep in ("[" * 100_000, '{"judge": {"reasoning": ' + "[" * 500 + "]" * 500 + "}}"):
        bad.write_text(deep + "\n")  # a RecursionError, loading or (500 levels) serving it
        assert f"{bad}:1: malformed JSON (nested too deeply" in _one_line_exit_2(str(bad))
    empty = tmp_path / "empty" / "e.jsonl"
    empty.parent.mkdir()
    empty.write_text("\n\n")
    assert f"{empty}: no records" in _one_line_exit_2(str(empty))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert "in use" in _one_line_exit_2(str(records), "--port", port)


def _embedded(html: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="embedded-data">(.*?)</script>', html, re.S
    )
    assert match is not None
    return json.loads(match.group(1))


def test_report_writes_a_self_contained_explorer(tmp_path: Path) -> None:
    records = grid_records()
    write_jsonl(tmp_path / "in" / "a.jsonl", records)
    result = run_cli("report", str(tmp_path / "in"), "--out", str(tmp_path / "r"), "--explorer")
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "r" / "explorer.html").read_text()
    assert "explorer written" in result.stdout
    # The answers' `</script>` stays inside the JSON: the data element ends where we put it.
    data = _embedded(html)
    rows = data["sources"][0]["rows"]
    assert [r["response"] for r in rows] == [r["response"] for r in records]
    assert html.count("</script>") == 3  # the colour scale's, the data's and the script's
    assert "http://" not in html and "https://" not in html  # nothing fetched from a network
    assert "<script>window.pwned" not in html


def test_report_explorer_above_the_limit_points_to_explore(tmp_path: Path) -> None:
    from introspectd.explore.static import MAX_RECORDS

    base = grid_records()
    many = [
        {**r, "id": f"{r['id']}_{i}"} for i in range(MAX_RECORDS // len(base) + 1) for r in base
    ]
    assert len(many) > MAX_RECORDS
    write_jsonl(tmp_path / "in" / "a.jsonl", many)
    result = run_cli("report", str(tmp_path / "in"), "--out", str(tmp_path / "r"), "--explorer")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "r" / "explorer.html").exists()
    assert (tmp_path / "r" / "report.md").exists()
    [line] = [x for x in result.stdout.splitlines() if "explorer.html" in x]
    assert "introspectd explore" in line and str(len(many)) in line


def test_report_explorer_without_records_writes_no_page(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", [])
    result = run_cli("report", str(tmp_path / "in"), "--out", str(tmp_path / "r"), "--explorer")
    assert result.returncode == 0, result.stderr
    assert "explorer.html not written: the inputs hold no records" in result.stdout
    assert not (tmp_path / "r" / "explorer.html").exists()


def test_each_model_of_the_inputs_is_its_own_source(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", grid_records("tiny-model"))
    other = [r for r in grid_records("other-model") if r["concept"] == "fear"][:6]
    write_jsonl(tmp_path / "in" / "b.jsonl", other)
    with explorer(str(tmp_path / "in")) as server:
        assert server.get("/api/meta")["models"] == ["other-model", "tiny-model"]
        meta = server.get("/api/meta", model="other-model")
        assert meta["concepts"] == ["fear"] and sum(meta["counts"].values()) == 6
        assert _ids(server, model="other-model") == [r["id"] for r in other]
        assert len(_ids(server, model="tiny-model", concept="fear")) == len(grid_records()) // 2
        with pytest.raises(urllib.error.HTTPError) as unknown:
            server.get("/api/meta", model="no-such-model")
        assert unknown.value.code == 404
        assert server.stop() == 0


def test_search_reads_answers_and_reasoning_ids_only_with_id(tmp_path: Path) -> None:
    records = study_records()  # only trial 0 names its concept; "seaweed" is in a reasoning
    write_jsonl(tmp_path / "a.jsonl", records)
    ocean = [r for r in records if r["concept"] == "ocean"]
    with explorer(str(tmp_path / "a.jsonl")) as server:
        assert _ids(server, concept="ocean", q="ocean") == [
            r["id"] for r in ocean if r["config"]["trial"] == 0
        ]
        page = server.get("/api/trials", concept="ocean", q="SEAWEED")
        assert [t["id"] for t in page["items"]] == [
            r["id"] for r in ocean if r["was_injected"] and r["config"]["trial"] == 3
        ]
        assert {(t["excerpt_of"], t["excerpt"]) for t in page["items"]} == {
            ("reasoning", "reasoning for t3 mentions seaweed")
        }
        assert _ids(server, concept="ocean", q=" id:OCEAN_control") == [
            r["id"] for r in ocean if not r["was_injected"]
        ]
        assert server.stop() == 0


def test_integers_past_64_bits_are_one_line_400s(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", grid_records())
    with explorer(str(tmp_path / "a.jsonl")) as server:
        for name, value in (
            ("layer", 2**64),
            ("offset", 2**63),
            ("limit", -(2**63) - 1),
            ("layer", "9" * 5000),
            ("strength", "1e999"),
        ):
            with pytest.raises(urllib.error.HTTPError) as bad:
                server.get("/api/trials", **{name: value})
            assert bad.value.code == 400, (name, value)
            error = json.loads(bad.value.read())["error"]
            assert error.startswith(f"{name}: ") and "\n" not in error and len(error) < 120
        assert server.get("/api/trials", layer=2**63 - 1)["total"] == 0  # the largest is fine
        assert server.stop() == 0
        assert "Traceback" not in server.proc.stderr.read()


def test_records_with_integers_past_64_bits_are_served_or_one_line(tmp_path: Path) -> None:
    # JSON integers have any number of digits; SQLite stores 64 bits (an OverflowError past it).
    records = grid_records()[:4]
    records[0]["config"]["trial"] = 2**70  # optional fields: shown as absent
    records[1]["factual"] = {"index": 2**80, "text": "Is the sky blue?"}
    records[2]["p_yes"] = 10**400  # no float holds it
    path = write_jsonl(tmp_path / "a.jsonl", records)
    with explorer(str(path)) as server:
        by_id = {t["id"]: t for t in server.get("/api/trials")["items"]}
        assert len(by_id) == 4
        assert by_id[records[0]["id"]]["trial"] == 0
        assert by_id[records[2]["id"]]["p_yes"] is None
        assert server.stop() == 0
        assert "Traceback" not in server.proc.stderr.read()
    for key, value in (("layer", 2**64), ("strength", 10**400)):
        bad = grid_records()[:2]
        bad[1]["config"][key] = value
        write_jsonl(path, bad)
        assert _one_line_exit_2(str(path)).startswith(f"introspectd: {path}:2: 'config.{key}' ")


def test_logit_runs_serve_p_yes_per_trial_and_per_cell(tmp_path: Path) -> None:
    """A real logit-measure run, from its database and from its JSONL files."""
    plan, folder = logit_run(tmp_path)
    records = read_jsonl(folder)
    by_id = {r["id"]: r for r in records}
    for args in (("--plan", str(plan)), (str(folder),)):
        with explorer(*args) as server:
            for c in server.get("/api/cells", concept="ocean")["cells"]:
                mine = [
                    r["p_yes"]
                    for r in records
                    if r["config"]["layer"] == c["layer"]
                    and r["arm"] == c["arm"]
                    and "factual" not in r  # the detection question's read-outs only
                ]
                assert c["n_p_yes"] == len(mine) == 2
                assert c["sum_p_yes"] == pytest.approx(sum(mine))
            items = server.get("/api/trials", concept="ocean", limit=200)["items"]
            assert len(items) == len(records)
            assert all(t["p_yes"] == pytest.approx(by_id[t["id"]]["p_yes"]) for t in items)
            factual = next(r for r in records if r.get("factual", {}).get("index") == 3)
            one = server.get("/api/trial", id=factual["id"])
            assert (one["question"], one["question_text"]) == (3, FACTUAL_QUESTIONS[3].text)
            assert one["prob_yes"] == pytest.approx(factual["prob_yes"])
            assert one["seed"] == str(_seed(folder / "state.sqlite", factual["id"]))
            assert server.stop() == 0
