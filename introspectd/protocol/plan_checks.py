"""What a plan key (or an environment override of one) may hold: patterns, bounds and the reader.

Each bound says why it is where it is. Patterns are matched against the whole string
(`re.fullmatch`): a `$` would let a trailing newline through into file names and ids.
"""

from __future__ import annotations

import os
import re
from typing import Any

from introspectd.errors import BadInput

STAMP_RE = re.compile(r"\d{8}_\d{6}")
SAFE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CONCEPT_RE = re.compile(r"[a-z][a-z0-9 '-]*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
URL_RE = re.compile(r"https?://[^\s/]+(/\S*)?")
DEVICE_RE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")
# A run directory, `{concept}.jsonl` and its temporary `.{concept}.jsonl.XXXXXXXX` must each fit
# the 255-byte file-name limit of Linux file systems; 128 leaves room and fits any real name.
MAX_NAME_CHARS = 128
# Every planned trial is a Python object, a database row and a queue entry when a run starts
# (about 1 GB at this size) and hours of GPU per 100k; the seed's full sweep is 11,520 trials.
MAX_TOTAL_TRIALS = 1_000_000
# The longest context of the preset models (Qwen2.5: 32768); the model's own context is
# checked too, once its config.json is read (models.check_context).
MAX_NEW_TOKENS = 32_768
# Same as the automatic batch size's ceiling on the largest GPU (runner.MAX_GPU_BATCH_SIZE);
# an explicit size beyond it only preallocates memory that cannot be used.
MAX_BATCH_SIZE = 1024
# Strength scales a concept vector whose norm is that of the residual stream: the defaults stop
# at 4 and beyond ~100 the answer is noise; 1000 keeps every magnitude finite in float16.
MAX_STRENGTH = 1000.0
# Beyond ~2 every sample is near-uniform noise already; 0 means greedy.
MAX_TEMPERATURE = 10.0
# Requests in flight: beyond any provider's per-key rate (a few hundred grades in flight at
# the highest OpenAI tiers) and the judge's client pools (one client per 16 connections);
# a million made the judge child allocate 15.8 GB and send nothing.
MAX_JUDGE_CONCURRENCY = 1024
# With backoff capped at 60 s, 20 attempts already keep a failing row for ~20 minutes.
MAX_ATTEMPTS = 20
# Few-shot examples go into every judge prompt.
MAX_FEWSHOT = 1000
MAX_BACKOFF_S = 600.0
MAX_TIMEOUT_S = 3600.0
MAX_INTERVAL_S = 86_400.0
MAX_PRICE = 10_000.0  # USD per million tokens: far above any real price, below a typo's 1e308
MAX_BUDGET_USD = 1e9
# Options are lettered A.. with one letter left for "nothing unusual"; a question with more
# than a dozen options is a reading test, not an identification.
MAX_DISTRACTORS = 12


def name_problem(value: str, pattern: re.Pattern[str], what: str) -> str | None:
    """Why `value` is not a valid `pattern` name (a path component or an id part), else None."""
    if not pattern.fullmatch(value):
        return f"must be {what}; got {value!r}"
    if len(value) > MAX_NAME_CHARS:
        return f"must be at most {MAX_NAME_CHARS} characters, got {len(value)}"
    return None


PLAIN_NAME = "a plain path component (letters, digits, . _ -)"


def experiment_id_problem(value: str) -> str | None:
    return name_problem(value, SAFE_NAME_RE, PLAIN_NAME)


def stamp_problem(value: str) -> str | None:
    return None if STAMP_RE.fullmatch(value) else f"must look like YYYYMMDD_HHMMSS, got {value!r}"


# `batch render` pins these for every task of a Cloud Batch job (see batchjob.py); they are
# validated exactly as the plan keys they stand in for, wherever they are read.
ENV_STAMP = "INTROSPECTD_STAMP"
ENV_EXPERIMENT_ID = "INTROSPECTD_EXPERIMENT_ID"


def env_experiment_id() -> str | None:
    """`$INTROSPECTD_EXPERIMENT_ID`, checked as `[run] experiment_id` is; None if unset."""
    return _env_value(ENV_EXPERIMENT_ID, experiment_id_problem)


def env_stamp() -> str | None:
    """`$INTROSPECTD_STAMP` (a stand-in for `[run] stamp`), checked; None if unset or empty."""
    return _env_value(ENV_STAMP, stamp_problem)


def check_env_overrides() -> None:
    """Both overrides at once, before a command creates anything under output_dir."""
    env_experiment_id()
    env_stamp()


def _env_value(name: str, problem_of: Any) -> str | None:
    value = os.environ.get(name)
    if not value:
        return None
    problem = problem_of(value)
    if problem is not None:
        raise BadInput(f"${name}: {problem}")
    return value
