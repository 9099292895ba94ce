"""`rejudge_file`: seed-format JSONL in, the same file with the null judgements filled out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import TINY_PLAN, write_plan
from judge_server import JudgeServer, Recorded, status

from introspectd.errors import BadInput
from introspectd.judge import rejudge as rejudge_api
from introspectd.judge.client import Judge, judging_off
from introspectd.judge.rejudge_file import RejudgeCounts, rejudge_file
from introspectd.protocol.plan import JudgeConfig, load_plan

OLD = {
    "answer": "fail",
    "coherent": True,
    "detected_concept": None,
    "reasoning": "old",
    "refused": False,
}


def seed_record(i: int, judged: bool) -> dict[str, Any]:
    return {
        "id": f"20260123_143022_fear_injection_L24_S2.0_t{i}",
        "timestamp": "2026-01-23T14:30",
        "concept": "fear",
        "was_injected": i % 2 == 0,
        "response": f"response {i} — “déjà vu”\u2028second line",
        "config": {"model": "m", "layer": 24, "strength": 2.0, "trial": i},
        "judge": OLD if judged else None,
        "judge_error": None if judged else "boom",
    }


def write_lines(path: Path, records: list[dict[str, Any]]) -> list[str]:
    # Mixed styles on purpose: untouched lines must come back exactly as they were.
    lines = [json.dumps(r, ensure_ascii=i % 2 == 0) for i, r in enumerate(records)]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return lines


def rejudge(
    server: JudgeServer, src: Path, dest: Path, all_records: bool = False, concurrency: int = 4
) -> RejudgeCounts:
    cfg = JudgeConfig(
        model="judge-test",
        base_url=server.base_url,
        concurrency=concurrency,
        max_attempts=2,
        backoff_s=0.01,
        timeout_s=2.0,
        prompt_version="v1",
    )

    async def main() -> RejudgeCounts:
        async with Judge(cfg, "sk-rejudge-test-key-0000") as judge:
            return await rejudge_file(src, dest, judge, all_records=all_records)

    return anyio.run(main)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_fills_exactly_the_null_records_and_keeps_everything_else(tmp_path: Path) -> None:
    records = [seed_record(i, judged=i % 3 == 0) for i in range(12)]
    src, dest = tmp_path / "fear.jsonl", tmp_path / "fear_rejudged.jsonl"
    original = write_lines(src, records)
    with JudgeServer(latency_s=0.02) as server:
        counts = rejudge(server, src, dest, concurrency=3)
    assert server.max_in_flight <= 3
    sent = sorted(
        r.body["messages"][-1]["content"].split("\n<<<RESPONSE\n")[1].split("\n")[0]
        for r in server.requests
    )
    assert sent == sorted(
        f"response {i} — “déjà vu”\u2028second line".split("\n")[0] for i in range(12) if i % 3
    )
    assert counts == RejudgeCounts(total=12, selected=8, judged=8, failed=0)
    out = read_lines(dest)
    assert len(out) == 12
    for i, (line, before) in enumerate(zip(out, original, strict=True)):
        if i % 3 == 0:
            assert line == before, "untouched records are written back byte for byte"
            continue
        record = json.loads(line)
        assert record["judge"]["answer"] == "pass" and record["judge_error"] is None
        assert list(record) == list(records[i]), "same keys, same order"
        assert {k: v for k, v in record.items() if k not in ("judge", "judge_error")} == {
            k: v for k, v in records[i].items() if k not in ("judge", "judge_error")
        }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fear.jsonl", "fear_rejudged.jsonl"]


def test_all_records_regrades_everything_but_never_loses_a_judgement(tmp_path: Path) -> None:
    records = [seed_record(i, judged=i < 3) for i in range(6)]
    src = tmp_path / "fear.jsonl"
    original = write_lines(src, records)

    def respond(rec: Recorded) -> Any:  # the judge fails on responses 1 and 4
        text = rec.body["messages"][-1]["content"]
        return status(400, "bad") if "response 1 " in text or "response 4 " in text else None

    with JudgeServer(responder=respond) as server:
        counts = rejudge(server, src, src, all_records=True)  # in place
    assert len(server.requests) == 6
    assert (counts.selected, counts.judged, counts.failed) == (6, 4, 2)
    assert counts.failed_by_reason == {"HTTP 400: bad": 2}
    out = read_lines(src)
    assert out[1] == original[1], "a failed re-grade keeps the old judgement untouched"
    failed_new = json.loads(out[4])
    assert failed_new["judge"] is None and failed_new["judge_error"] == "HTTP 400: bad"
    assert all(json.loads(out[i])["judge"]["reasoning"] != "old" for i in (0, 2, 3, 5))


def test_blank_lines_and_crlf_are_tolerated(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b"\r\n".join(json.dumps(seed_record(i, judged=False)).encode() for i in range(2))
        + b"\r\n\r\n"
    )
    with JudgeServer() as server:
        counts = rejudge(server, src, tmp_path / "out.jsonl")
    assert counts.judged == 2
    assert read_lines(tmp_path / "out.jsonl")[-1] == ""


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"in\.jsonl: input file not found"),
        (
            '{"judge": null, "concept": "fear", "was_injected": true, "response": "r"}\n\n{oops\n',
            r"in\.jsonl:3: malformed JSON",
        ),
        ("[" * 100_000 + "\n", r"in\.jsonl:1: malformed JSON \(nested too deeply"),
        ('["a list"]\n', r"in\.jsonl:1: expected a JSON object"),
        (
            '{"judge": null, "concept": "fear", "was_injected": true}\n',
            r"in\.jsonl:1: record lacks 'response'",
        ),
        (
            '{"judge": null, "concept": "fear", "was_injected": "yes", "response": "r"}\n',
            r"in\.jsonl:1: 'was_injected' must be a boolean",
        ),
    ],
)
def test_bad_input_is_one_line_naming_file_and_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    src = tmp_path / "in.jsonl"
    if content is not None:
        src.write_text(content)
    with JudgeServer() as server, pytest.raises(BadInput, match=message) as info:
        rejudge(server, src, tmp_path / "out.jsonl")
    assert "\n" not in str(info.value)
    assert server.requests == [], "nothing is sent when the input is bad"
    assert not (tmp_path / "out.jsonl").exists()


# --- the library call the CLI makes ---------------------------------------------------------


def test_rejudge_returns_what_it_did_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-rejudge-test-key-0000")
    src, dest = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(src, [seed_record(i, judged=i % 3 == 0) for i in range(6)])
    with JudgeServer() as server:
        plan = write_plan(
            tmp_path,
            TINY_PLAN
            + f"""
[judge]
base_url = "{server.base_url}"
api_key_env = "TEST_JUDGE_KEY"
""",
        )
        result = rejudge_api.rejudge(load_plan(plan), input=src, output=dest)
        assert len(server.requests) == 4
    assert isinstance(result, rejudge_api.FileRejudged) and result.counts.judged == 4
    assert str(result) == f"{dest}: 6 records, 4 sent to the judge: 4 judged, 0 failed"
    assert capsys.readouterr() == ("", ""), "the CLI prints the result, not the library"


def test_rejudge_without_a_judge_gives_the_one_judging_off_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    src, dest = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(src, [seed_record(0, judged=False)])
    with pytest.raises(BadInput) as info:
        rejudge_api.rejudge(None, input=src, output=dest)
    assert str(info.value) == f"rejudge: {judging_off(JudgeConfig())}"
    assert "judging not configured" in str(info.value)
    assert not dest.exists()
