"""The plan file: load a TOML sweep description, validate every key, and hash what decides trials.

Every problem is a `BadInput` whose message is one line naming the file, the key and the fault,
raised before any model work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.protocol import plan_checks as rules
from introspectd.protocol.plan_checks import (
    ENV_EXPERIMENT_ID,
    ENV_STAMP,
    STAMP_RE,
    Table,
    check_env_overrides,
    env_experiment_id,
    env_stamp,
)
from introspectd.protocol.prompts import PROMPT_VERSIONS

INJECT_STYLES = ("generation", "all", "from_marker")
JUDGE_APIS = ("chat", "responses")
VECTOR_PROMPTS = ("plain", "chat")
DTYPES = ("auto", "float32", "float16", "bfloat16")
GCS_URI_RE = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/\S*)?")
__all__ = [  # re-exported: the rules live in plan_checks.py
    "ENV_EXPERIMENT_ID",
    "ENV_STAMP",
    "STAMP_RE",
    "check_env_overrides",
    "env_experiment_id",
    "env_stamp",
]


@dataclass(frozen=True)
class RunConfig:
    experiment_id: str | None = None
    output_dir: str = "data/sweeps"
    seed: int = 0
    stamp: str = ""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "3b"
    slug: str = ""
    dtype: str = "auto"
    device: str = "auto"


@dataclass(frozen=True)
class SweepConfig:
    concepts: tuple[str, ...] = ("celebration", "ocean", "fear", "silence")
    layers: str | tuple[int | float, ...] = "default"
    strengths: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    trials: int = 40
    prompt_version: str = "v2"
    prompt_system: str = ""
    prompt_user: str = ""
    inject_style: str = "generation"
    marker: str = "Trial 1"
    vector_prompt: str = "plain"
    max_new_tokens: int = 200
    temperature: float = 1.0
    batch_size: str | int = "auto"


@dataclass(frozen=True)
class JudgeConfig:
    model: str = "gpt-5-mini"
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    api: str = "chat"
    prompt_version: str = "v1"
    fewshot: str = ""
    fewshot_n: int = 0
    concurrency: int = 32
    max_attempts: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 60.0

    def api_key(self) -> str | None:
        """The key from the variable `api_key_env` names; never stored anywhere."""
        return os.environ.get(self.api_key_env) or None

    def is_enabled(self, api_key: str | None) -> bool:
        """No key and no base_url means judging is off (the offline quickstart)."""
        return bool(api_key) or bool(self.base_url)


@dataclass(frozen=True)
class UploadConfig:
    gcs: str = ""
    every_trials: int = 50
    min_interval_s: float = 30.0
    preemption_url: str = ""
    preemption_poll_s: float = 5.0


@dataclass(frozen=True)
class AdaptiveConfig:
    """`[adaptive]`: spend trials where a cell's answer is still uncertain (run/adaptive.py).
    `[sweep] trials` is the first round; off by default."""

    enabled: bool = False
    target_halfwidth: float = 0.05  # 95% Wilson half-width on the injection pass rate: done
    max_trials_per_cell: int = 400  # cap on trial indices per cell (controls grow alike)
    round_trials: int = 20  # trials added per still-open cell per round
    min_coherent: float = 0.0  # drop a cell whose coherence interval lies below this
    confirm_top: int = 0  # K best cells re-run on fresh trials at the end; 0 = off
    confirm_trials: int = 100


@dataclass(frozen=True)
class Plan:
    path: Path | str  # a str for gs:// plans, which Path would mangle
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)

    def generation_spec(self) -> dict[str, Any]:
        """What decides the trials and their generations; judge/upload/batch settings do not."""
        sweep = dataclasses.asdict(self.sweep)
        sweep.pop("batch_size")
        return {
            "model": {"name": self.model.name, "dtype": self.model.dtype},
            "sweep": sweep,
            "seed": self.run.seed,
        } | self._adaptive_spec()

    def _adaptive_spec(self) -> dict[str, Any]:
        """Adaptive settings decide which trials exist, so they are hashed; absent when off, so
        a fixed-grid run's hash is what it always was."""
        if not self.adaptive.enabled:
            return {}
        # Confirmation adds trials and never changes exploration's: `confirm` may set it later.
        settings = dataclasses.asdict(self.adaptive)
        del settings["confirm_top"], settings["confirm_trials"]
        return {"adaptive": settings}

    @property
    def adds_trials_as_it_goes(self) -> bool:
        """Adaptive rounds or confirmation: the run decides some trials from judged results."""
        return self.adaptive.enabled or self.adaptive.confirm_top > 0

    def to_json(self) -> str:
        data = {
            name: dataclasses.asdict(getattr(self, name))
            for name in ("run", "model", "sweep", "judge", "upload", "adaptive")
        }
        return json.dumps(data, sort_keys=True)


def spec_hash(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_plan(path: str | Path) -> Plan:
    """A local plan file. (`app.plans.load_plan` also reads `gs://` plans, through cloud/.)"""
    file = str(path)
    if file.startswith("gs://"):
        raise BadInput(f"{file}: a gs:// plan is read by the command line, not here")
    return plan_from_text(_read_local_text(Path(path)), file, Path(path))


def plan_from_text(text: str, file: str, path: Path | str) -> Plan:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{file}: malformed TOML: {exc}") from None
    return parse_plan(data, file, path)


def _read_local_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: plan file not found") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read plan file ({exc.strerror})") from None


def parse_plan(data: dict[str, Any], file: str, path: Path | str | None = None) -> Plan:
    top = Table(file, "", data)
    sections = {
        name: Table(file, name, top.data.pop(name, {}))
        for name in ("run", "model", "sweep", "judge", "upload", "adaptive")
    }
    top.finish()
    sweep = _read_sweep(sections["sweep"])
    plan = Plan(
        path=path or Path(file),
        run=_read_run(sections["run"]),
        model=_read_model(sections["model"]),
        sweep=sweep,
        judge=_read_judge(sections["judge"]),
        upload=_read_upload(sections["upload"]),
        adaptive=_read_adaptive(sections["adaptive"], sweep.trials),
    )
    for table in sections.values():
        table.finish()
    return plan


def _read_run(t: Table) -> RunConfig:
    experiment_id = t.text("experiment_id", "") or None
    if experiment_id is not None:
        _check(t, "experiment_id", rules.experiment_id_problem(experiment_id))
    stamp = t.text("stamp", "")
    if stamp:
        _check(t, "stamp", rules.stamp_problem(stamp))
    output_dir = t.text("output_dir", "data/sweeps")
    if not output_dir:
        t.fail("output_dir", "must not be empty")
    return RunConfig(
        experiment_id=experiment_id,
        output_dir=output_dir,
        seed=t.integer("seed", 0, minimum=0),
        stamp=stamp,
    )


def _check(t: Table, key: str, problem: str | None) -> None:
    if problem is not None:
        t.fail(key, problem)


def _read_model(t: Table) -> ModelConfig:
    name = t.text("name", ModelConfig.name)
    if not name:
        t.fail("name", "must not be empty")
    slug = t.text("slug", "")
    if slug:
        _check(t, "slug", rules.name_problem(slug, rules.SAFE_NAME_RE, rules.PLAIN_NAME))
    device = t.text("device", "auto")
    if not rules.DEVICE_RE.fullmatch(device):
        t.fail("device", f"must be auto, cpu, mps, cuda or cuda:N; got {device!r}")
    return ModelConfig(name=name, slug=slug, dtype=t.text("dtype", "auto", DTYPES), device=device)


def _read_sweep(t: Table) -> SweepConfig:
    concepts = _read_concepts(t)
    strengths = _read_strengths(t)
    prompt_version = t.text("prompt_version", "v2")
    prompt_user = t.text("prompt_user", "", multiline=True)
    if not prompt_user and prompt_version not in PROMPT_VERSIONS:
        t.fail(
            "prompt_version",
            f"must be one of {', '.join(PROMPT_VERSIONS)} (or give "
            f"prompt_user for your own prompt); got {prompt_version!r}",
        )
    batch_size: str | int = t.take("batch_size", "auto", (str, int), '"auto" or an integer')
    if batch_size != "auto" and (
        not isinstance(batch_size, int) or not 1 <= batch_size <= rules.MAX_BATCH_SIZE
    ):
        t.fail(
            "batch_size",
            f'must be "auto" or an integer >= 1 and <= {rules.MAX_BATCH_SIZE}, got {batch_size!r}',
        )
    sweep = SweepConfig(
        concepts=concepts,
        layers=_read_layers(t),
        strengths=strengths,
        trials=t.integer("trials", 40, minimum=1, maximum=rules.MAX_TOTAL_TRIALS),
        prompt_version=prompt_version,
        prompt_system=t.text("prompt_system", "", multiline=True),
        prompt_user=prompt_user,
        inject_style=t.text("inject_style", "generation", INJECT_STYLES),
        marker=t.text("marker", "Trial 1", multiline=True),
        vector_prompt=t.text("vector_prompt", "plain", VECTOR_PROMPTS),
        max_new_tokens=t.integer("max_new_tokens", 200, minimum=1, maximum=rules.MAX_NEW_TOKENS),
        temperature=t.number("temperature", 1.0, minimum=0.0, maximum=rules.MAX_TEMPERATURE),
        batch_size=batch_size,
    )
    _check_size(t, sweep)
    if sweep.inject_style == "from_marker":
        prompt = PROMPT_VERSIONS.get(prompt_version)
        text = prompt_user or (prompt.user if prompt else "")
        if not sweep.marker or sweep.marker not in text:
            t.fail(
                "marker",
                f"{sweep.marker!r} does not occur in the user prompt "
                f'({prompt_version}); inject_style = "from_marker" starts there',
            )
    return sweep


def _read_concepts(t: Table) -> tuple[str, ...]:
    concepts = t.array("concepts", list(SweepConfig.concepts))
    if not concepts:
        t.fail("concepts", "must name at least one concept")
    for concept in concepts:
        if not isinstance(concept, str):
            t.fail("concepts", f"each concept must be a lowercase word, got {concept!r}")
        _check(t, "concepts", rules.name_problem(concept, rules.CONCEPT_RE, "a lowercase word"))
    duplicates = sorted({c for c in concepts if concepts.count(c) > 1})
    if duplicates:
        t.fail("concepts", f"duplicate concept {duplicates[0]!r}")
    return tuple(concepts)


def _read_strengths(t: Table) -> tuple[float, ...]:
    strengths = t.array("strengths", list(SweepConfig.strengths))
    if not strengths:
        t.fail("strengths", "must list at least one strength")
    for s in strengths:
        is_number = isinstance(s, int | float) and not isinstance(s, bool)
        if not is_number or not 0 < s <= rules.MAX_STRENGTH:  # also refuses nan
            t.fail(
                "strengths",
                f"each strength must be a number > 0 and <= {rules.MAX_STRENGTH:g}, got {s!r}",
            )
    values = tuple(float(s) for s in strengths)
    if len(set(values)) != len(values):
        t.fail("strengths", "duplicate strength")
    return values


def _check_size(t: Table, sweep: SweepConfig) -> None:
    """Refuse a plan whose trials would not fit before anything is allocated for them."""
    num_layers = 6 if sweep.layers == "default" else len(set(sweep.layers))  # trials.py
    cells = len(sweep.concepts) * num_layers * len(sweep.strengths)
    total = cells * sweep.trials * 2  # an injection and a control trial each
    if total > rules.MAX_TOTAL_TRIALS:
        t.fail(
            "trials",
            f"{len(sweep.concepts)} concepts x {num_layers} layers x {len(sweep.strengths)} "
            f"strengths x {sweep.trials} trials x 2 arms = {total} trials, more than "
            f"{rules.MAX_TOTAL_TRIALS}; split the sweep into several experiments",
        )


def _read_layers(t: Table) -> str | tuple[int | float, ...]:
    layers = t.take("layers", "default", (str, list), '"default" or a list of layers')
    if isinstance(layers, str):
        if layers != "default":
            t.fail(
                "layers", f'must be "default" or a list of layer indices/fractions; got {layers!r}'
            )
        return layers
    if not layers:
        t.fail("layers", "must list at least one layer")
    for layer in layers:
        is_index = isinstance(layer, int) and not isinstance(layer, bool) and layer >= 0
        is_fraction = isinstance(layer, float) and 0.0 <= layer < 1.0
        if not (is_index or is_fraction):
            t.fail(
                "layers", f"each layer must be an index >= 0 or a fraction in [0, 1); got {layer!r}"
            )
    return tuple(layers)


def _read_judge(t: Table) -> JudgeConfig:
    model = t.text("model", JudgeConfig.model)
    if not model:
        t.fail("model", "must not be empty")
    return JudgeConfig(
        model=model,
        base_url=t.url("base_url"),
        api_key_env=_read_api_key_env(t),
        api=t.text("api", "chat", JUDGE_APIS),
        prompt_version=t.text("prompt_version", JudgeConfig.prompt_version),
        fewshot=t.text("fewshot", ""),
        fewshot_n=t.integer("fewshot_n", 0, minimum=0, maximum=rules.MAX_FEWSHOT),
        concurrency=t.integer("concurrency", 32, minimum=1, maximum=rules.MAX_JUDGE_CONCURRENCY),
        max_attempts=t.integer("max_attempts", 3, minimum=1, maximum=rules.MAX_ATTEMPTS),
        backoff_s=t.number("backoff_s", 1.0, minimum=0.0, maximum=rules.MAX_BACKOFF_S),
        timeout_s=t.number(
            "timeout_s", 60.0, minimum=0.0, maximum=rules.MAX_TIMEOUT_S, positive=True
        ),
    )


def _read_api_key_env(t: Table) -> str:
    """The NAME of the variable holding the key. A pasted key fails here, and is never echoed:
    it would end up in the stored plan, in every record's judge_error and on stderr."""
    name = t.take("api_key_env", JudgeConfig.api_key_env, (str,), "a string")
    if not rules.ENV_NAME_RE.fullmatch(name):
        t.fail(
            "api_key_env",
            "must name an environment variable (letters, digits, _), not hold a key",
        )
    return str(name)


def _read_upload(t: Table) -> UploadConfig:
    gcs = t.text("gcs", "")
    if gcs and not GCS_URI_RE.fullmatch(gcs):
        t.fail("gcs", f'must look like "gs://bucket/prefix", got {gcs!r}')
    return UploadConfig(
        gcs=gcs.rstrip("/"),
        every_trials=t.integer("every_trials", 50, minimum=1),
        min_interval_s=t.number("min_interval_s", 30.0, minimum=0.0, maximum=rules.MAX_INTERVAL_S),
        preemption_url=t.url("preemption_url"),
        preemption_poll_s=t.number(
            "preemption_poll_s", 5.0, minimum=0.0, maximum=rules.MAX_TIMEOUT_S, positive=True
        ),
    )


def _read_adaptive(t: Table, first_round: int) -> AdaptiveConfig:
    cfg = AdaptiveConfig(
        enabled=t.take("enabled", False, (bool,), "a boolean"),
        target_halfwidth=t.number("target_halfwidth", 0.05, 0.0, 0.5, positive=True),
        max_trials_per_cell=t.integer("max_trials_per_cell", 400, 1, rules.MAX_TOTAL_TRIALS),
        round_trials=t.integer("round_trials", 20, 1, rules.MAX_TOTAL_TRIALS),
        min_coherent=t.number("min_coherent", 0.0, 0.0, 1.0),
        confirm_top=t.integer("confirm_top", 0, 0, 1000),
        confirm_trials=t.integer("confirm_trials", 100, 1, rules.MAX_TOTAL_TRIALS),
    )
    if cfg.enabled and cfg.max_trials_per_cell < first_round:
        t.fail(
            "max_trials_per_cell",
            f"must be >= [sweep] trials ({first_round}, the first round), "
            f"got {cfg.max_trials_per_cell}",
        )
    return cfg
