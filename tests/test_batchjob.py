"""`batch render`: the Cloud Batch v1 job, parsed by the official `google-cloud-batch` client.

`batch_v1.Job.from_json(..., ignore_unknown_fields=False)` refuses an unknown or mistyped field,
so a misspelt field fails here instead of being silently dropped by the API.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from google.cloud import batch_v1
from google.protobuf import json_format

from introspectd.cloud.batchjob import JobOptions, job_json, render_job, render_warnings
from introspectd.errors import BadInput
from introspectd.protocol.plan import STAMP_RE, JudgeConfig, Plan, RunConfig, UploadConfig
from introspectd.protocol.trials import expand_trials, resolve_layers

REPO = Path(__file__).resolve().parent.parent
PLAN_URI = "gs://bucket/plans/sweep.toml"
IMAGE = "us-central1-docker.pkg.dev/p/introspectd/introspectd:1"
SECRET = "projects/p/secrets/openai-api-key/versions/latest"


def batch_v1_errors(job: dict[str, Any]) -> str | None:
    """Why the official client's `batch_v1.Job` refuses `job` (unknown or mistyped fields), or
    None when it parses: the same protobuf descriptors the Batch API itself is generated from."""
    try:
        batch_v1.Job.from_json(json.dumps(job), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        return str(exc)
    return None


def make_plan(**changes: Any) -> Plan:
    base = Plan(
        path=Path("sweep.toml"),
        run=RunConfig(experiment_id="exp-1"),
        upload=UploadConfig(gcs="gs://bucket/results"),
    )
    return replace(base, **changes)


def render(plan: Plan | None = None, tasks: int = 4, **options: Any) -> dict[str, Any]:
    options.setdefault("stamp", "20260123_143022")
    return render_job(PLAN_URI, plan or make_plan(), tasks, IMAGE, JobOptions(**options))


def task_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["taskGroups"][0]["taskSpec"]
    return spec


def instance(job: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = job["allocationPolicy"]["instances"][0]
    return found


OPTION_CASES = [
    {},
    {"secret": SECRET},
    {"spot": False, "zones": ["us-central1-a", "us-central1-c"], "max_retry_count": 0},
    {
        "machine_type": "n1-standard-8",
        "gpu_type": "nvidia-tesla-t4",
        "gpu_count": 2,
        "region": "europe-west4",
        "cpu_milli": 4000,
        "memory_mib": 8192,
        "parallelism": 2,
    },
    {"machine_type": "e2-standard-4", "gpu_count": 0, "env": {"HF_HUB_OFFLINE": "1"}},
]


@pytest.mark.parametrize("options", OPTION_CASES)
def test_rendered_job_fits_the_batch_v1_schema(options: dict[str, Any]) -> None:
    job = render(**options)
    assert batch_v1_errors(job) is None
    assert json.loads(job_json(job)) == job  # plain JSON, nothing that needs a custom encoder


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a dotted path of a rendered job ("task.computeResource.cpuMilli")."""

    def apply(job: dict[str, Any]) -> None:
        head, *middle, last = path.split(".")
        node = {"task": task_spec, "instance": instance}[head](job)
        for key in middle:
            node = node[key]
        node[last] = value

    return apply


@pytest.mark.parametrize(
    ("field", "mistake"),
    [
        ("maxRetryCounts", _set("task.maxRetryCounts", 3)),
        ("cpuMilli", _set("task.computeResource.cpuMilli", 1.5)),
        ("provisioningModel", _set("instance.policy.provisioningModel", "spot")),
        ("installGpuDrivers", _set("instance.installGpuDrivers", "true")),
        ("maxRunDuration", _set("task.maxRunDuration", 3600)),
    ],
)
def test_the_official_type_refuses_misspelt_and_mistyped_fields(
    field: str, mistake: Callable[[dict[str, Any]], None]
) -> None:
    job = render()
    mistake(job)
    error = batch_v1_errors(job)
    assert error is not None and field in error


def test_the_job_runs_the_plan_on_every_task() -> None:
    job = render(tasks=12)
    group = job["taskGroups"][0]
    assert (group["taskCount"], group["parallelism"], group["taskCountPerNode"]) == (12, 12, 1)
    container = task_spec(job)["runnables"][0]["container"]
    assert container["imageUri"] == IMAGE
    assert [container["entrypoint"], *container["commands"]] == [
        "introspectd",
        "run",
        "--plan",
        PLAN_URI,
        "--no-progress",
    ]
    assert job["logsPolicy"] == {"destination": "CLOUD_LOGGING"}


def test_preemption_and_resumable_exits_retry_and_everything_else_fails() -> None:
    spec = task_spec(render(max_retry_count=5))
    assert spec["maxRetryCount"] == 5
    # Batch takes one policy; RETRY_TASK fails the task on any exit code it does not list.
    assert spec["lifecyclePolicies"] == [
        {"action": "RETRY_TASK", "actionCondition": {"exitCodes": [50001, 75]}}
    ]


def test_machine_gpu_and_provisioning() -> None:
    job = render()
    assert instance(job)["policy"]["machineType"] == "g2-standard-8"
    assert instance(job)["policy"]["provisioningModel"] == "SPOT"
    assert instance(job)["policy"]["accelerators"] == [{"type": "nvidia-l4", "count": 1}]
    assert instance(job)["installGpuDrivers"] is True
    assert task_spec(job)["computeResource"] == {"cpuMilli": 7000, "memoryMib": 28672}
    assert job["allocationPolicy"]["location"] == {"allowedLocations": ["regions/us-central1"]}
    standard = render(spot=False, zones=["us-central1-b"], max_run_duration_s=7200)
    assert instance(standard)["policy"]["provisioningModel"] == "STANDARD"
    assert standard["allocationPolicy"]["location"]["allowedLocations"] == ["zones/us-central1-b"]
    assert task_spec(standard)["maxRunDuration"] == "7200s"
    cpu = render(machine_type="e2-standard-4", gpu_count=0)
    assert "accelerators" not in instance(cpu)["policy"]
    assert instance(cpu)["installGpuDrivers"] is False


def test_the_judge_key_comes_from_secret_manager_under_the_plans_name() -> None:
    plan = make_plan(judge=JudgeConfig(api_key_env="JUDGE_KEY"))
    environment = task_spec(render(plan, secret=SECRET))["environment"]
    assert environment["secretVariables"] == {"JUDGE_KEY": SECRET}
    assert "JUDGE_KEY" not in environment["variables"]
    short = task_spec(render(secret="projects/p/secrets/k"))["environment"]
    assert short["secretVariables"] == {"OPENAI_API_KEY": "projects/p/secrets/k/versions/latest"}
    assert "secretVariables" not in task_spec(render())["environment"]


def test_every_task_gets_one_stamp() -> None:
    variables = task_spec(render())["environment"]["variables"]
    assert variables["INTROSPECTD_STAMP"] == "20260123_143022"
    assert "INTROSPECTD_EXPERIMENT_ID" not in variables  # the plan names its experiment
    pinned = make_plan(run=RunConfig(experiment_id="exp-1", stamp="20250101_000000"))
    assert (
        task_spec(render(pinned, stamp=""))["environment"]["variables"]["INTROSPECTD_STAMP"]
        == "20250101_000000"
    )
    fresh = render(stamp="")["taskGroups"][0]["taskSpec"]["environment"]["variables"]
    assert STAMP_RE.match(fresh["INTROSPECTD_STAMP"])


def test_a_plan_without_experiment_id_gets_one_from_the_stamp() -> None:
    job = render(make_plan(run=RunConfig()))
    assert task_spec(job)["environment"]["variables"]["INTROSPECTD_EXPERIMENT_ID"] == (
        "2026-01-23-sweep"
    )
    assert job["labels"] == {"app": "introspectd", "experiment": "2026-01-23-sweep"}
    variables = task_spec(render(make_plan(run=RunConfig()), stamp=""))["environment"]["variables"]
    stamp = variables["INTROSPECTD_STAMP"]
    assert variables["INTROSPECTD_EXPERIMENT_ID"] == f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}-sweep"


@pytest.mark.parametrize(
    ("plan_uri", "plan", "tasks", "options", "flag"),
    [
        ("sweep.toml", None, 4, {}, "--plan"),
        (PLAN_URI, make_plan(upload=UploadConfig()), 4, {}, "gcs"),
        (PLAN_URI, None, 0, {}, "--tasks"),
        (PLAN_URI, None, 10_001, {}, "--tasks"),
        (PLAN_URI, None, 4, {"parallelism": 5}, "--parallelism"),
        (PLAN_URI, None, 4, {"secret": "openai-api-key"}, "--secret"),
        (PLAN_URI, None, 4, {"gpu_count": 2}, "--gpu-count"),
        (PLAN_URI, None, 4, {"gpu_type": "nvidia-tesla-t4"}, "--gpu-type"),
        (PLAN_URI, None, 4, {"zones": ["europe-west4-a"]}, "--zones"),
        (PLAN_URI, None, 4, {"region": "us central"}, "--region"),
        (PLAN_URI, None, 4, {"max_retry_count": 11}, "--max-retries"),
        (PLAN_URI, None, 4, {"max_run_duration_s": 0}, "--max-run-duration"),
        (PLAN_URI, None, 4, {"memory_mib": 0}, "--memory-mib"),
        (PLAN_URI, None, 4, {"stamp": "2026-01-23"}, "--stamp"),
        (PLAN_URI, None, 4, {"env": {"INTROSPECTD_STAMP": "20260101_000000"}}, "--env"),
        (PLAN_URI, None, 4, {"env": {"OPENAI_API_KEY": "sk-123"}}, "--env"),
        (PLAN_URI, None, 4, {"env": {"A B": "1"}}, "--env"),
        (
            PLAN_URI,
            make_plan(run=RunConfig(stamp="20250101_000000")),
            4,
            {"stamp": "20260101_000000"},
            "--stamp",
        ),
    ],
)
def test_bad_options_are_one_clear_line(
    plan_uri: str, plan: Plan | None, tasks: int, options: dict[str, Any], flag: str
) -> None:
    options.setdefault("stamp", "20260123_143022")
    with pytest.raises(BadInput) as err:
        render_job(plan_uri, plan or make_plan(), tasks, IMAGE, JobOptions(**options))
    message = str(err.value)
    assert flag in message and "\n" not in message


def test_warnings_for_a_job_that_would_waste_its_run() -> None:
    plan = make_plan()
    assert render_warnings(plan, JobOptions(secret=SECRET)) == []
    assert any("OPENAI_API_KEY" in w for w in render_warnings(plan, JobOptions()))
    assert (
        render_warnings(make_plan(judge=JudgeConfig(base_url="http://judge:8000/v1")), JobOptions())
        == []
    )
    assert any(
        "retr" in w for w in render_warnings(plan, JobOptions(secret=SECRET, max_retry_count=0))
    )


def load_example_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "render_example", REPO / "batch" / "render_example.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_job_in_batch_equals_a_fresh_render() -> None:
    example = load_example_script()
    committed = (REPO / "batch" / "seed-sweep.job.json").read_text(encoding="utf-8")
    assert committed == job_json(example.example_job()), (
        "batch/seed-sweep.job.json is stale: run `.venv/bin/python batch/render_example.py`"
    )
    job = json.loads(committed)
    assert batch_v1_errors(job) is None
    sweep = example.seed_plan().sweep
    trials = expand_trials(
        sweep.concepts, resolve_layers(sweep.layers, 36), sweep.strengths, sweep.trials
    )
    assert len(trials) == 11_520
    assert job["taskGroups"][0]["taskCount"] == example.TASKS
