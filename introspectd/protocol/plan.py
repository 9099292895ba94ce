"""The plan file: load a TOML sweep description, validate every key, and hash what decides trials.

Every problem is a `BadInput` whose message is one line naming the file, the key and the fault,
raised before any model work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.protocol import (
    chat_templates,
    concept_sets,
    controls,
    prompt_battery,
    specificity,
)
from introspectd.protocol import plan_checks as rules
from introspectd.protocol.plan_adaptive import AdaptiveConfig, read_adaptive
from introspectd.protocol.plan_checks import (
    ENV_EXPERIMENT_ID,
    ENV_STAMP,
    STAMP_RE,
    check_env_overrides,
    env_experiment_id,
    env_stamp,
)
from introspectd.protocol.plan_judge import JudgeConfig, read_judge
from introspectd.protocol.plan_keys import SECTIONS as TABLES
from introspectd.protocol.plan_keys import default
from introspectd.protocol.plan_mentions import MentionsConfig, read_mentions
from introspectd.protocol.plan_table import Table
from introspectd.protocol.prompt_battery import run_prompts
from introspectd.protocol.prompts import PROMPT_VERSIONS
from introspectd.protocol.sweep import SweepConfig

GCS_URI_RE = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/\S*)?")
# Re-exported: the rules live in plan_checks.py, the [judge], [adaptive] and [mentions]
# tables in plan_judge.py, plan_adaptive.py and plan_mentions.py.
__all__ = [
    "ENV_EXPERIMENT_ID",
    "ENV_STAMP",
    "STAMP_RE",
    "AdaptiveConfig",
    "JudgeConfig",
    "MentionsConfig",
    "SweepConfig",
    "check_env_overrides",
    "env_experiment_id",
    "env_stamp",
]


@dataclass(frozen=True)
class RunConfig:
    experiment_id: str | None = None  # "" in the plan: <date>-sweep, decided at creation
    output_dir: str = default("run", "output_dir")
    seed: int = default("run", "seed")
    stamp: str = default("run", "stamp")


@dataclass(frozen=True)
class ModelConfig:
    name: str = default("model", "name")
    slug: str = default("model", "slug")
    dtype: str = default("model", "dtype")
    device: str = default("model", "device")
    # Across several devices (accelerate): "" = one device; else an accelerate device_map
    # strategy. max_memory caps each device ("0", "1", ..., "cpu", "disk"), e.g. "20GiB".
    device_map: str = default("model", "device_map")
    max_memory: tuple[tuple[str, str], ...] = ()
    offload_folder: str = default("model", "offload_folder")
    gguf_file: str = default("model", "gguf_file")  # protocol/gguf_source.py
    chat_template: str = default("model", "chat_template")  # protocol/chat_templates.py


@dataclass(frozen=True)
class UploadConfig:
    gcs: str = default("upload", "gcs")
    every_trials: int = default("upload", "every_trials")
    min_interval_s: float = default("upload", "min_interval_s")
    preemption_url: str = default("upload", "preemption_url")
    preemption_poll_s: float = default("upload", "preemption_poll_s")


@dataclass(frozen=True)
class Plan:
    path: Path | str  # a str for gs:// plans, which Path would mangle
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    # Which words count as an answer mentioning its concept (the report's judge-free signal):
    # it decides no trial, so generation_spec leaves it out.
    mentions: MentionsConfig = field(default_factory=MentionsConfig)

    def generation_spec(self) -> dict[str, Any]:
        """What decides the trials and their generations; judge/upload/batch settings do not."""
        sweep = dataclasses.asdict(self.sweep)
        sweep.pop("batch_size")
        controls.strip_default_controls(sweep)
        concept_sets.strip_sources(sweep)
        template = {"chat_template": self.model.chat_template} if self.model.chat_template else {}
        return {
            "model": {"name": self.model.name, "dtype": self.model.dtype} | template,
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
        """The plan as the run's database stores it, with the judge endpoint's host (which may
        come from $OPENAI_BASE_URL, not the plan): where this run's answers were sent."""
        data: dict[str, Any] = {
            # [mentions] as the plan wrote it; [prompts] is in sweep (custom_prompts).
            name: dataclasses.asdict(getattr(self, name))
            for name in TABLES
            if name not in ("mentions", "prompts")
        }
        data["mentions"] = self.mentions.as_dict()  # {concept: words}
        data["judge"]["endpoint_host"] = self.judge.endpoint_host()
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
    except RecursionError:  # tomllib recurses per nesting level: `a = [[[[…`
        raise BadInput(f"{file}: malformed TOML: nested too deeply") from None
    if not data:  # every table has defaults, but an empty file is a mistake, not a sweep
        raise BadInput(
            f"{file}: the plan is empty; a plan names at least its [model] and [sweep] "
            "(see examples/quickstart.toml)"
        )
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
    sections = {name: Table(file, name, top.data.pop(name, {})) for name in TABLES}
    top.finish()
    base_dir = concept_sets.plan_dir(path or file)
    sweep = _read_sweep(sections["sweep"], sections["prompts"], base_dir)
    plan = Plan(
        path=path or Path(file),
        run=_read_run(sections["run"]),
        model=_read_model(sections["model"]),
        sweep=sweep,
        judge=read_judge(sections["judge"]),
        upload=_read_upload(sections["upload"]),
        adaptive=read_adaptive(sections["adaptive"], sweep),
        mentions=read_mentions(sections["mentions"], sweep.concepts),
    )
    pooled_check = (plan.judge.prompt_version, plan.adds_trials_as_it_goes)
    controls.check_pooled(sections["sweep"], sweep, *pooled_check)
    for table in sections.values():
        table.finish()
    return plan


def _read_run(t: Table) -> RunConfig:
    experiment_id = t.read("experiment_id") or None
    if experiment_id is not None:
        _check(t, "experiment_id", rules.experiment_id_problem(experiment_id))
    stamp = t.read("stamp")
    if stamp:
        _check(t, "stamp", rules.stamp_problem(stamp))
    output_dir = t.read("output_dir")
    if not output_dir:
        t.fail("output_dir", "must not be empty")
    return RunConfig(
        experiment_id=experiment_id,
        output_dir=output_dir,
        seed=t.read("seed"),
        stamp=stamp,
    )


def _check(t: Table, key: str, problem: str | None) -> None:
    if problem is not None:
        t.fail(key, problem)


def _read_model(t: Table) -> ModelConfig:
    name = t.read("name")
    if not name:
        t.fail("name", "must not be empty")
    slug = t.read("slug")
    if slug:
        _check(t, "slug", rules.name_problem(slug, rules.SAFE_NAME_RE, rules.PLAIN_NAME))
    device = t.read("device")
    if not rules.DEVICE_RE.fullmatch(device):
        t.fail("device", f"must be auto, cpu, mps, cuda or cuda:N; got {device!r}")
    dtype = t.read("dtype")
    placement = _read_placement(t, device)
    gguf_file = t.read("gguf_file")
    if gguf_file and not gguf_file.lower().endswith(".gguf"):
        t.fail("gguf_file", f"must name a .gguf file in the repository; got {gguf_file!r}")
    template = chat_templates.read_chat_template(t)
    return ModelConfig(name, slug, dtype, device, *placement, gguf_file, template)


MEMORY_RE = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B)", re.IGNORECASE)
MEMORY_DEVICE_RE = re.compile(r"\d+|cpu|disk|mps|(cuda|xpu):\d+")


def _read_placement(t: Table, device: str) -> tuple[str, tuple[tuple[str, str], ...], str]:
    """[model] device_map, max_memory, offload_folder: layers across devices (accelerate)."""
    device_map = t.read("device_map")
    if device_map and device != "auto":
        t.fail("device_map", f"places the layers itself: leave device unset (got {device!r})")
    memory = t.take("max_memory", {}, (dict,), 'a table like {"0" = "20GiB", cpu = "60GiB"}')
    for key, value in memory.items():
        if not MEMORY_DEVICE_RE.fullmatch(key):
            t.fail("max_memory", f"{key!r} is not a device (0, 1, ..., cpu, disk, cuda:N)")
        if not isinstance(value, str) or not MEMORY_RE.fullmatch(value):
            t.fail("max_memory", f'{key} = {value!r}: give a size such as "20GiB" or "500MB"')
    if memory and not device_map:
        t.fail("max_memory", 'caps a device_map: set device_map = "auto" too')
    folder = t.read("offload_folder")
    return device_map, tuple(sorted(memory.items())), folder


def _read_sweep(t: Table, prompt_tables: Table, base_dir: Path) -> SweepConfig:
    given = set(t.data)
    custom_prompts = prompt_battery.read_prompt_tables(prompt_tables)
    concepts, concepts_file = concept_sets.read_concepts(t, base_dir)
    baseline, baseline_file = concept_sets.read_baseline(t, base_dir, concepts)
    strengths = _read_strengths(t)
    prompt_version = t.read("prompt_version")
    prompt_user = t.read("prompt_user")
    if not prompt_user and prompt_version not in PROMPT_VERSIONS:
        t.fail(
            "prompt_version",
            f"must be one of {', '.join(PROMPT_VERSIONS)} (or give "
            f"prompt_user for your own prompt); got {prompt_version!r}",
        )
    batch_size: str | int = t.take(
        "batch_size", default("sweep", "batch_size"), (str, int), '"auto" or an integer'
    )
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
        trials=t.read("trials"),
        prompt_version=prompt_version,
        prompt_system=t.read("prompt_system"),
        prompt_user=prompt_user,
        inject_style=t.read("inject_style"),
        marker=t.read("marker"),
        vector_prompt=t.read("vector_prompt"),
        concepts_file=concepts_file,
        baseline_words=baseline,
        baseline_file=baseline_file,
        vectors_file=concept_sets.read_path(t, "vectors_file", base_dir),
        max_new_tokens=t.read("max_new_tokens"),
        temperature=t.read("temperature"),
        batch_size=batch_size,
        arms=controls.read_arms(t),
        measure=controls.read_measure(t),
        factual_controls=controls.read_factual_controls(t),
        mismatch=t.read("mismatch"),
        choice_distractors=t.read("choice_distractors"),
        distractors=specificity.read_distractors(t),
        prompts=prompt_battery.read_prompt_names(t, custom_prompts),
        prefill=t.read("prefill"),
        custom_prompts=custom_prompts,
        **controls.read_pooling_and_unit(t),
    )
    if "inject_style" not in given:  # the prompts' own default (the paper's: from_marker)
        style = prompt_battery.default_inject_style(run_prompts(sweep), sweep.inject_style)
        sweep = dataclasses.replace(sweep, inject_style=style)
    prompt_battery.check_battery(t, sweep, given)
    controls.check_controls(t, sweep, tuple(PROMPT_VERSIONS))
    specificity.check_specificity(t, sweep)
    _check_size(t, sweep)
    prompt_battery.check_markers(t, sweep)
    return sweep


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
    num_arms = len(sweep.arms)
    num_prompts = max(1, len(prompt_battery.battery_names(sweep)))
    total = cells * (sweep.trials * num_prompts + controls.num_questions(sweep)) * num_arms
    if total > rules.MAX_TOTAL_TRIALS:
        t.fail(
            "trials",
            f"{len(sweep.concepts)} concepts x {num_layers} layers x {len(sweep.strengths)} "
            f"strengths x {sweep.trials} trials x {num_arms} arms = {total} trials, more than "
            f"{rules.MAX_TOTAL_TRIALS}; split the sweep into several experiments",
        )


def _read_layers(t: Table) -> str | tuple[int | float, ...]:
    layers = t.take("layers", SweepConfig.layers, (str, list), '"default" or a list of layers')
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


def _read_upload(t: Table) -> UploadConfig:
    gcs = t.read("gcs")
    if gcs and not GCS_URI_RE.fullmatch(gcs):
        t.fail("gcs", f'must look like "gs://bucket/prefix", got {gcs!r}')
    return UploadConfig(
        gcs=gcs.rstrip("/"),
        every_trials=t.read("every_trials"),
        min_interval_s=t.read("min_interval_s"),
        preemption_url=t.url("preemption_url"),
        preemption_poll_s=t.read("preemption_poll_s"),
    )
