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

from introspectd.errors import BadInput, Transient
from introspectd.prompts import PROMPT_VERSIONS

INJECT_STYLES = ("generation", "all", "from_marker")
JUDGE_APIS = ("chat", "responses")
VECTOR_PROMPTS = ("plain", "chat")
DTYPES = ("auto", "float32", "float16", "bfloat16")
STAMP_RE = re.compile(r"^\d{8}_\d{6}$")
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CONCEPT_RE = re.compile(r"^[a-z][a-z0-9 '-]*$")

Layers = str | list[int | float]


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
class Plan:
    path: Path | str  # a str for gs:// plans, which Path would mangle
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)

    def generation_spec(self) -> dict[str, Any]:
        """What decides the trials and their generations; judge/upload/batch settings do not."""
        sweep = dataclasses.asdict(self.sweep)
        sweep.pop("batch_size")
        return {
            "model": {"name": self.model.name, "dtype": self.model.dtype},
            "sweep": sweep,
            "seed": self.run.seed,
        }

    def to_json(self) -> str:
        data = {
            name: dataclasses.asdict(getattr(self, name))
            for name in ("run", "model", "sweep", "judge", "upload")
        }
        return json.dumps(data, sort_keys=True)


def spec_hash(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _Table:
    """One TOML table being read: each `take_*` consumes a key; `finish` rejects the rest."""

    def __init__(self, file: str, name: str, data: Any) -> None:
        self.file, self.name = file, name
        if not isinstance(data, dict):
            self.fail("", f"must be a table, got {_type_name(data)}")
        self.data = dict(data)

    def fail(self, key: str, why: str) -> None:
        where = f"[{self.name}] {key}".rstrip() if self.name else key
        raise BadInput(f"{self.file}: {where}: {why}")

    def _take(self, key: str, default: Any, kinds: tuple[type, ...], kind_name: str) -> Any:
        if key not in self.data:
            return default
        value = self.data.pop(key)
        if isinstance(value, bool) and bool not in kinds:
            self.fail(key, f"must be {kind_name}, got a boolean")
        if not isinstance(value, kinds):
            self.fail(key, f"must be {kind_name}, got {_type_name(value)} {value!r}")
        return value

    def text(self, key: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value: str = self._take(key, default, (str,), "a string")
        if choices and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def integer(self, key: str, default: int, minimum: int | None = None) -> int:
        value: int = self._take(key, default, (int,), "an integer")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def number(
        self, key: str, default: float, positive: bool = False, minimum: float = 0.0
    ) -> float:
        value = float(self._take(key, default, (int, float), "a number"))
        if positive and value <= 0:
            self.fail(key, f"must be > 0, got {value}")
        if value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def array(self, key: str, default: Any) -> Any:
        return self._take(key, default, (list,), "a list")

    def finish(self) -> None:
        if self.data:
            unknown = sorted(self.data)[0]
            self.fail(unknown, "unknown key (check the spelling; see DESIGN.md for the plan keys)")


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def load_plan(path: str | Path) -> Plan:
    """A local plan file, or a `gs://bucket/plan.toml` (plans travel with Cloud Batch jobs)."""
    file = str(path)
    text = _read_gcs_text(file) if file.startswith("gs://") else _read_local_text(Path(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{file}: malformed TOML: {exc}") from None
    return parse_plan(data, file, file if file.startswith("gs://") else Path(path))


def _read_local_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: plan file not found") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read plan file ({exc.strerror})") from None


def _read_gcs_text(uri: str) -> str:
    from google.api_core import exceptions

    from introspectd.gcs import make_client, make_retry, parse_gcs_uri, transient_reason

    bucket, name = parse_gcs_uri(uri)
    try:
        # Retries as bounded as the snapshots' (the library's default goes on for 120 s).
        blob = make_client().bucket(bucket).blob(name)
        return str(blob.download_as_text(retry=make_retry(15.0), timeout=20.0))
    except exceptions.NotFound:
        raise BadInput(f"{uri}: plan file not found") from None
    except Exception as exc:
        reason = transient_reason(exc)  # an outage: exit 75, so Cloud Batch retries the task
        if reason is not None:
            raise Transient(f"{uri}: cannot read plan file now ({reason})") from None
        if isinstance(exc, exceptions.GoogleAPIError):
            raise BadInput(f"{uri}: cannot read plan file ({type(exc).__name__})") from None
        raise


def parse_plan(data: dict[str, Any], file: str, path: Path | str | None = None) -> Plan:
    top = _Table(file, "", data)
    sections = {
        name: _Table(file, name, top.data.pop(name, {}))
        for name in ("run", "model", "sweep", "judge", "upload")
    }
    top.finish()
    plan = Plan(
        path=path or Path(file),
        run=_read_run(sections["run"]),
        model=_read_model(sections["model"]),
        sweep=_read_sweep(sections["sweep"]),
        judge=_read_judge(sections["judge"]),
        upload=_read_upload(sections["upload"]),
    )
    for table in sections.values():
        table.finish()
    return plan


def _read_run(t: _Table) -> RunConfig:
    experiment_id = t.text("experiment_id", "") or None
    if experiment_id is not None and not SAFE_NAME_RE.match(experiment_id):
        t.fail(
            "experiment_id",
            f"must be a plain path component (letters, digits, . _ -); got {experiment_id!r}",
        )
    stamp = t.text("stamp", "")
    if stamp and not STAMP_RE.match(stamp):
        t.fail("stamp", f"must look like YYYYMMDD_HHMMSS, got {stamp!r}")
    output_dir = t.text("output_dir", "data/sweeps")
    if not output_dir:
        t.fail("output_dir", "must not be empty")
    return RunConfig(
        experiment_id=experiment_id,
        output_dir=output_dir,
        seed=t.integer("seed", 0, minimum=0),
        stamp=stamp,
    )


def _read_model(t: _Table) -> ModelConfig:
    name = t.text("name", ModelConfig.name)
    if not name:
        t.fail("name", "must not be empty")
    slug = t.text("slug", "")
    if slug and not SAFE_NAME_RE.match(slug):
        t.fail("slug", f"must be a plain path component (letters, digits, . _ -); got {slug!r}")
    return ModelConfig(
        name=name, slug=slug, dtype=t.text("dtype", "auto", DTYPES), device=t.text("device", "auto")
    )


def _read_sweep(t: _Table) -> SweepConfig:
    concepts = t.array("concepts", list(SweepConfig.concepts))
    if not concepts:
        t.fail("concepts", "must name at least one concept")
    for concept in concepts:
        if not isinstance(concept, str) or not CONCEPT_RE.match(concept):
            t.fail("concepts", f"each concept must be a lowercase word, got {concept!r}")
    duplicates = sorted({c for c in concepts if concepts.count(c) > 1})
    if duplicates:
        t.fail("concepts", f"duplicate concept {duplicates[0]!r}")
    strengths = t.array("strengths", list(SweepConfig.strengths))
    if not strengths:
        t.fail("strengths", "must list at least one strength")
    for s in strengths:
        if isinstance(s, bool) or not isinstance(s, int | float) or s <= 0:
            t.fail("strengths", f"each strength must be a number > 0, got {s!r}")
    strengths = [float(s) for s in strengths]
    if len(set(strengths)) != len(strengths):
        t.fail("strengths", "duplicate strength")
    prompt_version = t.text("prompt_version", "v2")
    prompt_user = t.text("prompt_user", "")
    if not prompt_user and prompt_version not in PROMPT_VERSIONS:
        t.fail(
            "prompt_version",
            f"must be one of {', '.join(PROMPT_VERSIONS)} (or give "
            f"prompt_user for your own prompt); got {prompt_version!r}",
        )
    batch_size: str | int = t._take("batch_size", "auto", (str, int), '"auto" or an integer')
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        t.fail("batch_size", f'must be "auto" or an integer >= 1, got {batch_size!r}')
    sweep = SweepConfig(
        concepts=tuple(concepts),
        layers=_read_layers(t),
        strengths=tuple(strengths),
        trials=t.integer("trials", 40, minimum=1),
        prompt_version=prompt_version,
        prompt_system=t.text("prompt_system", ""),
        prompt_user=prompt_user,
        inject_style=t.text("inject_style", "generation", INJECT_STYLES),
        marker=t.text("marker", "Trial 1"),
        vector_prompt=t.text("vector_prompt", "plain", VECTOR_PROMPTS),
        max_new_tokens=t.integer("max_new_tokens", 200, minimum=1),
        temperature=t.number("temperature", 1.0),
        batch_size=batch_size,
    )
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


def _read_layers(t: _Table) -> str | tuple[int | float, ...]:
    layers = t._take("layers", "default", (str, list), '"default" or a list of layers')
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


def _read_judge(t: _Table) -> JudgeConfig:
    return JudgeConfig(
        model=t.text("model", JudgeConfig.model),
        base_url=t.text("base_url", ""),
        api_key_env=t.text("api_key_env", "OPENAI_API_KEY"),
        api=t.text("api", "chat", JUDGE_APIS),
        prompt_version=t.text("prompt_version", JudgeConfig.prompt_version),
        fewshot=t.text("fewshot", ""),
        fewshot_n=t.integer("fewshot_n", 0, minimum=0),
        concurrency=t.integer("concurrency", 32, minimum=1),
        max_attempts=t.integer("max_attempts", 3, minimum=1),
        backoff_s=t.number("backoff_s", 1.0),
        timeout_s=t.number("timeout_s", 60.0, positive=True),
    )


def _read_upload(t: _Table) -> UploadConfig:
    gcs = t.text("gcs", "")
    if gcs and not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/.*)?$", gcs):
        t.fail("gcs", f'must look like "gs://bucket/prefix", got {gcs!r}')
    return UploadConfig(
        gcs=gcs.rstrip("/"),
        every_trials=t.integer("every_trials", 50, minimum=1),
        min_interval_s=t.number("min_interval_s", 30.0),
        preemption_url=t.text("preemption_url", ""),
        preemption_poll_s=t.number("preemption_poll_s", 5.0, positive=True),
    )
