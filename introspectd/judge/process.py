"""The run's judge in a child process, so grading never takes CPU from the decode loop.

The judge client spends 2 to 3 ms of Python per request building, sending and parsing it. In
the generating process that time comes out of the decode loop, which holds the same GIL (on a
2-vCPU machine it halved generation speed). Here a child `python -m introspectd.judge.process`
runs the ordinary `Judge` with the plan's concurrency. The parent writes one JSON line per
trial to the child's stdin and reads one outcome line per trial, plus a stats line four times
a second, from its stdout. The API key reaches the child through the environment only.

The run decides when judging ends: it closes the child's stdin (the child finishes what it has
and exits) or, after the drain timeout, kills it; trials in flight then stay `generated` and
the next run judges them. The child ignores SIGINT and SIGTERM, which reach the whole process
group, and exits by itself if its parent dies. If the child dies, every trial it had not
answered, and every later one, is recorded as failed with the reason, for `rejudge`.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream

from introspectd.judge.client import Judge, JudgeOutcome, JudgeStats
from introspectd.judge.grader import OnOutcome, ToJudge, grade_all
from introspectd.judge.prompt import judge_prompt_for
from introspectd.judge.provenance import judge_fingerprint
from introspectd.logs import configure_logging
from introspectd.protocol.plan import JudgeConfig

log = logging.getLogger("introspectd")
STATS_EVERY_S = 0.25
# An outcome line is small: Judge reads at most MAX_REPLY_BYTES of a reply, bounds each text
# field of a judgement to MAX_JUDGEMENT_CHARS (8192 characters, at most ~100 KiB once json.dumps
# has escaped them as \uXXXX) and an error to 200 characters. A longer line means a broken
# child, not a long judgement.
MAX_LINE_BYTES = 1 << 20


class JudgeProcess:
    """Parent side, a `Grader` (grader.py): `serve` feeds a child judge and reports each
    outcome; `stats` are the child's latest figures, for the progress view."""

    def __init__(
        self,
        cfg: JudgeConfig,
        base_dir: Path | None,
        candidates: tuple[str, ...] = (),
        spent_usd: float = 0.0,
    ) -> None:
        self.cfg = cfg
        self.base_dir = base_dir
        self.candidates = candidates
        self.spent_usd = spent_usd
        # Bad judge settings fail here, before any model work, as they would in-process.
        self.fewshot_hash = judge_prompt_for(cfg, base_dir, candidates).fewshot_hash
        self.fingerprint = judge_fingerprint(cfg, self.fewshot_hash)
        self.stats = JudgeStats(
            in_flight=0,
            judged=0,
            failed=0,
            failed_by_reason={},
            current_concurrency=1,
            max_concurrency=cfg.concurrency,
            tripped=False,
            paused_s=0.0,
            spend_usd=spent_usd,
            budget_usd=cfg.budget_usd,
        )  # until the child's first report
        self._outstanding: dict[int, ToJudge] = {}
        self._exit_reason: str | None = None

    async def serve(
        self,
        items: MemoryObjectReceiveStream[ToJudge],
        on_outcome: OnOutcome,
    ) -> None:
        """Judge every item until `items` closes and the child has answered them all."""
        process = await anyio.open_process(
            [sys.executable, "-m", "introspectd.judge.process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_relay_stderr, process)
                tg.start_soon(self._read_outcomes, process, on_outcome)
                await self._send_items(process, items, on_outcome)
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()

    async def _send_items(
        self,
        process: Process,
        items: MemoryObjectReceiveStream[ToJudge],
        on_outcome: OnOutcome,
    ) -> None:
        assert process.stdin is not None
        setup = {
            "config": dataclasses.asdict(self.cfg),
            "base_dir": str(self.base_dir or ""),
            "candidates": list(self.candidates),
            "spent_usd": self.spent_usd,
        }
        await self._write(process, setup)
        number = 0
        async for item in items:
            number += 1
            self._outstanding[number] = item
            request = {
                "n": number,
                "concept": item.concept,
                "is_injected": item.is_injected,
                "response": item.response,
            }
            if self._exit_reason is None:
                await self._write(process, request)
            if self._exit_reason is not None and number in self._outstanding:
                del self._outstanding[number]  # the child is gone: fail it now
                on_outcome(item, self._lost(self._exit_reason))
        if self._exit_reason is None:
            await process.stdin.aclose()

    async def _write(self, process: Process, message: dict[str, Any]) -> None:
        assert process.stdin is not None
        try:
            await process.stdin.send(json.dumps(message).encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self._exit_reason = self._exit_reason or "judge process stopped reading"

    async def _read_outcomes(self, process: Process, on_outcome: OnOutcome) -> None:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        while True:
            try:
                line = await lines.receive_until(b"\n", MAX_LINE_BYTES)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                break
            except anyio.DelimiterNotFound:  # the stream cannot be resynchronised: stop the child
                self._exit_reason = f"judge process sent a line over {MAX_LINE_BYTES} bytes"
                process.kill()
                break
            message = json.loads(line)
            if "stats" in message:
                self.stats = JudgeStats(**message["stats"])
            else:
                item = self._outstanding.pop(message["n"])
                on_outcome(item, JudgeOutcome(**message["outcome"]))
        code = await process.wait()
        self._exit_reason = self._exit_reason or f"judge process exited with code {code}"
        if self._outstanding:
            log.error("%s with %d trials unanswered", self._exit_reason, len(self._outstanding))
        for number in list(self._outstanding):
            on_outcome(self._outstanding.pop(number), self._lost(self._exit_reason))

    def _lost(self, reason: str) -> JudgeOutcome:
        return JudgeOutcome(
            result=None,
            error=f"{reason}; run `introspectd rejudge`",
            judge_model=self.cfg.model,
            prompt_version=self.cfg.prompt_version,
            fewshot_hash=self.fewshot_hash,
            error_kind="judge process",
            judge_fingerprint=self.fingerprint,
        )


async def _relay_stderr(process: Process) -> None:
    """The child's log lines, written to our `sys.stderr` as they are: the terminal in log
    mode, or the live view's proxy, which prints them above the view instead of over it."""
    assert process.stderr is not None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # chunks split characters
    async for chunk in process.stderr:
        sys.stderr.write(decoder.decode(chunk))
        sys.stderr.flush()


# --- child side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """One line the parent sent: the trial's number in this child, and what to grade."""

    n: int
    concept: str
    is_injected: bool
    response: str


def main() -> None:
    # The parent drains on SIGINT/SIGTERM and then closes our stdin; a terminal's Ctrl-C reaches
    # the whole process group, and dying here would fail the trials we hold.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the protocol
    configure_logging()
    anyio.run(_serve, protocol, os.getppid())


async def _serve(out: BinaryIO, parent_pid: int) -> None:
    stdin = anyio.wrap_file(sys.stdin.buffer)
    first = await stdin.readline()
    if not first:
        _exit_quietly()  # the parent went away before it sent the settings
    setup = json.loads(first)
    cfg = JudgeConfig(**setup["config"])
    judge = Judge(
        cfg,
        cfg.api_key(),
        base_dir=Path(setup["base_dir"]) if setup["base_dir"] else None,
        candidates=tuple(setup["candidates"]),
        spent_usd=setup["spent_usd"],
    )

    def write(message: dict[str, Any]) -> None:
        try:
            out.write(json.dumps(message).encode() + b"\n")
            out.flush()
        except OSError:  # BrokenPipeError: the parent is gone (e.g. a second SIGTERM)
            _exit_quietly()

    send, receive = anyio.create_memory_object_stream[_Request](math.inf)

    def report(request: _Request, outcome: JudgeOutcome) -> None:
        write({"n": request.n, "outcome": dataclasses.asdict(outcome)})

    async def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                _exit_quietly()  # orphaned: nobody will read what we grade
            write({"stats": dataclasses.asdict(judge.stats)})
            await anyio.sleep(STATS_EVERY_S)

    async with judge, anyio.create_task_group() as tg:
        tg.start_soon(watch)
        async with anyio.create_task_group() as workers:
            workers.start_soon(grade_all, judge, receive, report)
            async with send:
                while line := await stdin.readline():
                    send.send_nowait(_Request(**json.loads(line)))
        write({"stats": dataclasses.asdict(judge.stats)})
        tg.cancel_scope.cancel()


def _exit_quietly() -> None:
    """Leave without a word: what we hold stays `generated` in the parent's database and the next
    run judges it. No traceback, no flush of a pipe nobody reads."""
    os._exit(1)


if __name__ == "__main__":
    main()
