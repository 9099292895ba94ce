"""`batch render`: the Cloud Batch v1 job, checked against the REST reference's field names/types.

The schema below is transcribed from
https://cloud.google.com/batch/docs/reference/rest/v1/projects.locations.jobs for the messages a
job body can hold (output-only fields left out). An unknown key is an error, so a misspelt field
fails here instead of being silently dropped by the API.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from introspectd.batchjob import JobOptions, job_json, render_job, render_warnings
from introspectd.errors import BadInput
from introspectd.plan import STAMP_RE, JudgeConfig, Plan, RunConfig, UploadConfig
from introspectd.trials import expand_trials, resolve_layers

REPO = Path(__file__).resolve().parent.parent
PLAN_URI = "gs://bucket/plans/sweep.toml"
IMAGE = "us-central1-docker.pkg.dev/p/introspectd/introspectd:1"
SECRET = "projects/p/secrets/openai-api-key/versions/latest"

INT64 = "int64"  # JSON number, or a decimal string (proto3 JSON for int64)
INT32 = "int32"
DURATION = "duration"  # "3600s"
STR, BOOL = str, bool


def enum(*values: str) -> tuple[str, frozenset[str]]:
    return ("enum", frozenset(values))


def list_of(item: Any) -> tuple[str, Any]:
    return ("list", item)


def map_of(item: Any) -> tuple[str, Any]:
    return ("map", item)


ENVIRONMENT = {
    "variables": map_of(STR),
    "secretVariables": map_of(STR),
    "encryptedVariables": {"keyName": STR, "cipherText": STR},
}
CONTAINER = {
    "imageUri": STR,
    "commands": list_of(STR),
    "entrypoint": STR,
    "volumes": list_of(STR),
    "options": STR,
    "blockExternalNetwork": BOOL,
    "username": STR,
    "password": STR,
    "enableImageStreaming": BOOL,
}
RUNNABLE = {
    "container": CONTAINER,
    "script": {"path": STR, "text": STR},
    "barrier": {"name": STR},
    "displayName": STR,
    "ignoreExitStatus": BOOL,
    "background": BOOL,
    "alwaysRun": BOOL,
    "environment": ENVIRONMENT,
    "timeout": DURATION,
    "labels": map_of(STR),
}
LIFECYCLE_POLICY = {
    "action": enum("ACTION_UNSPECIFIED", "RETRY_TASK", "FAIL_TASK"),
    "actionCondition": {"exitCodes": list_of(INT32)},
}
TASK_SPEC = {
    "runnables": list_of(RUNNABLE),
    "computeResource": {"cpuMilli": INT64, "memoryMib": INT64, "bootDiskMib": INT64},
    "maxRunDuration": DURATION,
    "maxRetryCount": INT32,
    "lifecyclePolicies": list_of(LIFECYCLE_POLICY),
    "environments": map_of(STR),
    "volumes": list_of(map_of(object)),
    "environment": ENVIRONMENT,
}
TASK_GROUP = {
    "taskSpec": TASK_SPEC,
    "taskCount": INT64,
    "parallelism": INT64,
    "schedulingPolicy": enum("SCHEDULING_POLICY_UNSPECIFIED", "AS_SOON_AS_POSSIBLE", "IN_ORDER"),
    "taskEnvironments": list_of(ENVIRONMENT),
    "taskCountPerNode": INT64,
    "requireHostsFile": BOOL,
    "permissiveSsh": BOOL,
    "runAsNonRoot": BOOL,
}
DISK = {"image": STR, "snapshot": STR, "type": STR, "sizeGb": INT64, "diskInterface": STR}
INSTANCE_POLICY = {
    "machineType": STR,
    "minCpuPlatform": STR,
    "provisioningModel": enum("PROVISIONING_MODEL_UNSPECIFIED", "STANDARD", "SPOT", "PREEMPTIBLE"),
    "accelerators": list_of(
        {"type": STR, "count": INT64, "installGpuDrivers": BOOL, "driverVersion": STR}
    ),
    "bootDisk": DISK,
    "disks": list_of(map_of(object)),
    "reservation": STR,
}
ALLOCATION_POLICY = {
    "location": {"allowedLocations": list_of(STR)},
    "instances": list_of(
        {
            "policy": INSTANCE_POLICY,
            "instanceTemplate": STR,
            "installGpuDrivers": BOOL,
            "installOpsAgent": BOOL,
            "blockProjectSshKeys": BOOL,
        }
    ),
    "serviceAccount": {"email": STR, "scopes": list_of(STR)},
    "labels": map_of(STR),
    "network": map_of(object),
    "placement": map_of(object),
    "tags": list_of(STR),
}
LOGS_POLICY = {
    "destination": enum("DESTINATION_UNSPECIFIED", "CLOUD_LOGGING", "PATH"),
    "logsPath": STR,
    "cloudLoggingOption": {"useGenericTaskMonitoredResource": BOOL},
}
JOB = {
    "priority": INT64,
    "taskGroups": list_of(TASK_GROUP),
    "allocationPolicy": ALLOCATION_POLICY,
    "labels": map_of(STR),
    "logsPolicy": LOGS_POLICY,
    "notifications": list_of(map_of(object)),
}


def schema_errors(value: Any, schema: Any, path: str = "job") -> list[str]:
    """Every place where `value` does not fit `schema`, as 'path: problem'."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        errors = [f"{path}.{key}: not a Batch v1 field" for key in value if key not in schema]
        for key, item in value.items():
            if key in schema:
                errors += schema_errors(item, schema[key], f"{path}.{key}")
        return errors
    if isinstance(schema, tuple):
        kind, inner = schema
        if kind == "enum":
            return [] if value in inner else [f"{path}: {value!r} is not one of {sorted(inner)}"]
        if kind == "list":
            if not isinstance(value, list):
                return [f"{path}: expected a list, got {type(value).__name__}"]
            return [
                e
                for i, item in enumerate(value)
                for e in schema_errors(item, inner, f"{path}[{i}]")
            ]
        if not isinstance(value, dict):  # map
            return [f"{path}: expected a map, got {type(value).__name__}"]
        return [e for k, v in value.items() for e in schema_errors(v, inner, f"{path}[{k!r}]")]
    return _scalar_errors(value, schema, path)


def _scalar_errors(value: Any, schema: Any, path: str) -> list[str]:
    if schema is object:
        return []
    if schema in (INT64, INT32):
        is_int = isinstance(value, int) and not isinstance(value, bool)
        ok = is_int or (schema == INT64 and isinstance(value, str) and value.isdecimal())
        return [] if ok else [f"{path}: expected an integer, got {value!r}"]
    if schema == DURATION:
        ok = isinstance(value, str) and re.fullmatch(r"\d+(\.\d{1,9})?s", value) is not None
        return [] if ok else [f"{path}: expected a duration like '3600s', got {value!r}"]
    if schema is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r}"]
    ok = isinstance(value, str)
    return [] if ok else [f"{path}: expected a string, got {value!r}"]


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
    assert schema_errors(job, JOB) == []
    assert json.loads(job_json(job)) == job  # plain JSON, nothing that needs a custom encoder


def test_the_schema_check_catches_misspelt_and_mistyped_fields() -> None:
    job = render()
    task_spec(job)["maxRetryCounts"] = 3
    task_spec(job)["computeResource"]["cpuMilli"] = 1.5
    instance(job)["policy"]["provisioningModel"] = "spot"
    instance(job)["installGpuDrivers"] = "true"
    task_spec(job)["maxRunDuration"] = 3600
    assert len(schema_errors(job, JOB)) == 5


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
    assert schema_errors(job, JOB) == []
    sweep = example.seed_plan().sweep
    trials = expand_trials(
        sweep.concepts, resolve_layers(sweep.layers, 36), sweep.strengths, sweep.trials
    )
    assert len(trials) == 11_520
    assert job["taskGroups"][0]["taskCount"] == example.TASKS
