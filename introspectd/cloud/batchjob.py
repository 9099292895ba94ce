"""`introspectd batch render`: a Google Cloud Batch v1 job (JSON) that runs a plan over N tasks.

Every task runs the same container command, `introspectd run --plan <gs:// URI> --no-progress`;
Batch gives each task `BATCH_TASK_INDEX`/`BATCH_TASK_COUNT`, which pick its shard (shard.py).
Field names follow https://cloud.google.com/batch/docs/reference/rest/v1/projects.locations.jobs.

Environment contract with `introspectd run` (the plan file travels as a URI and is read, not
rewritten, by every task, so what `render` fixes must travel beside it):

* `INTROSPECTD_STAMP` — the id stamp (YYYYMMDD_HHMMSS) every task must use, so the N shards
  produce ids from one id space and `export` can merge and check them. It is the plan's
  `run.stamp` when set, else `JobOptions.stamp`, else the time of rendering (UTC). `run` uses it
  when the plan has no stamp and the run's database does not exist yet.
* `INTROSPECTD_EXPERIMENT_ID` — set only when the plan has no `run.experiment_id`: the default
  "<date>-sweep" would otherwise be each task's own start date, and a task retried after
  midnight would write to a different directory. Here it is the stamp's date, e.g.
  `2026-01-23-sweep`.
* the judge key, under the plan's `judge.api_key_env` name, as a Batch `secretVariables` entry
  read from Secret Manager when the task starts; the key itself never appears in the job.

Retries: exit code 50001 is Batch's "VM preempted", 75 is introspectd's "interrupted after a
final upload, safe to resume". Both retry (up to `max_retry_count`); the task restores its state
from GCS and goes on. Batch accepts one lifecycle policy per task, and a RETRY_TASK policy fails
the task on every exit code it does not list, so a bad plan (2) or a bug (1) fails fast instead
of burning GPU hours on retries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from introspectd.errors import BadInput
from introspectd.protocol.plan import ENV_EXPERIMENT_ID, ENV_STAMP, STAMP_RE, Plan

EXIT_PREEMPTED = 50001  # set by Batch when a spot VM is reclaimed
EXIT_RESUMABLE = 75  # errors.EXIT_INTERRUPTED
RETRY_EXIT_CODES = (EXIT_PREEMPTED, EXIT_RESUMABLE)
MAX_TASKS = 10_000  # Batch's limit on taskCount per task group
SECRET_RE = re.compile(r"^projects/[^/\s]+/secrets/[^/\s]+(/versions/[^/\s]+)?$")
REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
MACHINE_RE = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
# GPUs that come built into a G2 machine type (Compute Engine "GPU machine types").
G2_L4_COUNT = {4: 1, 8: 1, 12: 1, 16: 1, 24: 2, 32: 1, 48: 4, 96: 8}


@dataclass(frozen=True)
class JobOptions:
    machine_type: str = "g2-standard-8"
    gpu_type: str = "nvidia-l4"
    gpu_count: int = 1
    spot: bool = True
    region: str = "us-central1"
    zones: Sequence[str] = ()  # empty: any zone of the region
    secret: str = ""  # Secret Manager path of the judge key: projects/P/secrets/S[/versions/V]
    max_run_duration_s: int = 24 * 3600
    max_retry_count: int = 3
    cpu_milli: int | None = None  # None: most of the machine (see _compute_resource)
    memory_mib: int | None = None
    boot_disk_gib: int = 100  # image (~10 GB) + model weights + local state
    parallelism: int | None = None  # None: all tasks at once
    stamp: str = ""  # "" : the plan's run.stamp, else now (UTC)
    env: Mapping[str, str] = field(default_factory=dict)  # extra plain variables, every task


def render_job(plan_uri: str, plan: Plan, tasks: int, image: str, options: JobOptions) -> dict:
    """The Batch v1 job body for `gcloud batch jobs submit NAME --config=job.json`."""
    _check(plan_uri, plan, tasks, image, options)
    # Read the clock once: the stamp and the experiment id derived from it must agree.
    options = replace(options, stamp=job_stamp(plan, options))
    job: dict[str, Any] = {
        "taskGroups": [_task_group(plan_uri, plan, tasks, image, options)],
        "allocationPolicy": _allocation_policy(options),
        "labels": {"app": "introspectd", "experiment": _label(experiment_id(plan, options))},
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }
    return job


def job_json(job: dict) -> str:
    """The one text form of a job, so `batch render` and batch/seed-sweep.job.json agree."""
    return json.dumps(job, indent=2) + "\n"


def job_stamp(plan: Plan, options: JobOptions) -> str:
    return plan.run.stamp or options.stamp or datetime.now(UTC).strftime("%Y%m%d_%H%M%S")


def experiment_id(plan: Plan, options: JobOptions) -> str:
    if plan.run.experiment_id:
        return plan.run.experiment_id
    stamp = job_stamp(plan, options)
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}-sweep"


def render_warnings(plan: Plan, options: JobOptions) -> list[str]:
    """Legal but probably unintended choices, for the CLI to print on stderr."""
    warnings = []
    if not options.secret and not plan.judge.base_url:
        warnings.append(
            f"no --secret: the tasks get no {plan.judge.api_key_env}, so every "
            "OpenAI judge call will fail (rejudge later, or pass --secret)"
        )
    if options.spot and options.max_retry_count == 0:
        warnings.append("spot VMs with max retry count 0: a preempted task is not retried")
    return warnings


def _check(plan_uri: str, plan: Plan, tasks: int, image: str, options: JobOptions) -> None:
    if not plan_uri.startswith("gs://") or len(plan_uri) <= len("gs://"):
        raise BadInput(
            f"--plan: a Cloud Batch task reads the plan from GCS; upload it and pass "
            f"its gs:// URI, got {plan_uri!r}"
        )
    if not plan.upload.gcs:
        raise BadInput(
            f"{plan.path}: [upload] gcs: must be set for Cloud Batch, or the "
            "results stay on VMs that are deleted when their task ends"
        )
    if not 1 <= tasks <= MAX_TASKS:
        raise BadInput(f"--tasks: must be between 1 and {MAX_TASKS}, got {tasks}")
    if not image or any(c.isspace() for c in image):
        raise BadInput(f"--image: expected a container image URI, got {image!r}")
    if options.parallelism is not None and not 1 <= options.parallelism <= tasks:
        raise BadInput(
            f"--parallelism: must be between 1 and --tasks ({tasks}), got {options.parallelism}"
        )
    if options.stamp and not STAMP_RE.fullmatch(options.stamp):
        raise BadInput(f"--stamp: must look like YYYYMMDD_HHMMSS, got {options.stamp!r}")
    if plan.run.stamp and options.stamp and options.stamp != plan.run.stamp:
        raise BadInput(
            f"--stamp: {options.stamp} differs from {plan.path}'s [run] stamp {plan.run.stamp}"
        )
    _check_machine(options)
    _check_limits(options)
    _check_env(plan, options)


def _check_machine(options: JobOptions) -> None:
    if options.secret and not SECRET_RE.match(options.secret):
        raise BadInput(
            f"--secret: expected projects/PROJECT/secrets/NAME[/versions/VERSION], "
            f"got {options.secret!r}"
        )
    if not MACHINE_RE.match(options.machine_type):
        raise BadInput(
            f"--machine-type: expected a Compute Engine machine type like "
            f"g2-standard-8, got {options.machine_type!r}"
        )
    if not REGION_RE.match(options.region):
        raise BadInput(f"--region: expected a region like us-central1, got {options.region!r}")
    if options.gpu_count < 0:
        raise BadInput(f"--gpu-count: must be >= 0, got {options.gpu_count}")
    for zone in options.zones:
        if not ZONE_RE.match(zone) or not zone.startswith(options.region + "-"):
            raise BadInput(f"--zones: {zone!r} is not a zone of --region {options.region}")
    g2 = re.fullmatch(r"g2-standard-(\d+)", options.machine_type)
    if g2 and options.gpu_count and int(g2.group(1)) in G2_L4_COUNT:
        # G2 machines come with their L4s; a request for anything else is rejected by Batch
        # only after the job is queued.
        want = G2_L4_COUNT[int(g2.group(1))]
        if (options.gpu_type, options.gpu_count) != ("nvidia-l4", want):
            raise BadInput(
                f"--gpu-type/--gpu-count: {options.machine_type} has {want} "
                f"nvidia-l4, got {options.gpu_count} {options.gpu_type}"
            )


def _check_limits(options: JobOptions) -> None:
    if not 0 <= options.max_retry_count <= 10:  # Batch's range for maxRetryCount
        raise BadInput(f"--max-retries: must be between 0 and 10, got {options.max_retry_count}")
    if options.max_run_duration_s < 60:
        raise BadInput(
            f"--max-run-duration: must be at least 60 seconds, got {options.max_run_duration_s}"
        )
    for name, value in (
        ("--cpu-milli", options.cpu_milli),
        ("--memory-mib", options.memory_mib),
        ("--boot-disk-gib", options.boot_disk_gib),
    ):
        if value is not None and value < 1:
            raise BadInput(f"{name}: must be >= 1, got {value}")


def _check_env(plan: Plan, options: JobOptions) -> None:
    for name in options.env:
        if name in (ENV_STAMP, ENV_EXPERIMENT_ID):
            raise BadInput(f"--env: {name} is set by batch render itself")
        if name == plan.judge.api_key_env:
            raise BadInput(
                f"--env: {name} is the judge key; pass it with --secret (a Secret "
                "Manager path) so it never appears in the job"
            )
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise BadInput(f"--env: {name!r} is not an environment variable name")


def _task_group(
    plan_uri: str, plan: Plan, tasks: int, image: str, options: JobOptions
) -> dict[str, Any]:
    return {
        "taskCount": tasks,
        "parallelism": options.parallelism or tasks,
        # One task per VM: tasks on one VM would share its GPU.
        "taskCountPerNode": 1,
        "taskSpec": {
            "runnables": [
                {
                    "container": {
                        "imageUri": image,
                        "entrypoint": "introspectd",
                        "commands": ["run", "--plan", plan_uri, "--no-progress"],
                    },
                }
            ],
            "computeResource": _compute_resource(options),
            "maxRunDuration": f"{options.max_run_duration_s}s",
            "maxRetryCount": options.max_retry_count,
            "lifecyclePolicies": [
                {
                    "action": "RETRY_TASK",
                    "actionCondition": {"exitCodes": list(RETRY_EXIT_CODES)},
                }
            ],
            "environment": _environment(plan, options),
        },
    }


def _environment(plan: Plan, options: JobOptions) -> dict[str, Any]:
    variables = {
        ENV_STAMP: job_stamp(plan, options),
        # Logs reach Cloud Logging line by line instead of in 8 KiB lumps.
        "PYTHONUNBUFFERED": "1",
        **options.env,
    }
    if not plan.run.experiment_id:
        variables[ENV_EXPERIMENT_ID] = experiment_id(plan, options)
    environment: dict[str, Any] = {"variables": variables}
    if options.secret:
        secret = options.secret
        if "/versions/" not in secret:
            secret += "/versions/latest"
        environment["secretVariables"] = {plan.judge.api_key_env: secret}
    return environment


def _compute_resource(options: JobOptions) -> dict[str, int]:
    """What one task asks of its VM; with one task per VM it only has to fit the machine.

    Defaults take most of a `*-standard-N` machine (4 GiB per vCPU on G2/N2, 3.75 on N1),
    leaving a vCPU and an eighth of the memory to the OS and the Batch agent; other machine
    types get Batch's own defaults unless given.
    """
    cpu_milli, memory_mib = 2000, 2000
    shape = re.fullmatch(r"(g2|n1|n2)-standard-(\d+)", options.machine_type)
    if shape:
        vcpus = int(shape.group(2))
        gib_per_vcpu = 3.75 if shape.group(1) == "n1" else 4.0
        cpu_milli = max(1000, (vcpus - 1) * 1000)
        memory_mib = int(vcpus * gib_per_vcpu * 1024 * 7 / 8)
    return {
        "cpuMilli": options.cpu_milli or cpu_milli,
        "memoryMib": options.memory_mib or memory_mib,
    }


def _allocation_policy(options: JobOptions) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "machineType": options.machine_type,
        "provisioningModel": "SPOT" if options.spot else "STANDARD",
        "bootDisk": {"sizeGb": options.boot_disk_gib},
    }
    if options.gpu_count:
        policy["accelerators"] = [{"type": options.gpu_type, "count": options.gpu_count}]
    if options.zones:
        locations = [f"zones/{zone}" for zone in options.zones]
    else:
        locations = [f"regions/{options.region}"]
    return {
        "instances": [{"policy": policy, "installGpuDrivers": options.gpu_count > 0}],
        "location": {"allowedLocations": locations},
    }


def _label(value: str) -> str:
    """A Compute Engine label value: lowercase letters, digits, '_' and '-', at most 63."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]
