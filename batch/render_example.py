"""Render batch/seed-sweep.job.json: the seed's 11,520-trial sweep over 8 spot L4 tasks.

The plan is built here rather than read from examples/ so the example only changes when this
script does; the stamp is fixed so the output is byte-for-byte reproducible (tests check it).

    .venv/bin/python batch/render_example.py        # rewrites batch/seed-sweep.job.json
"""

from __future__ import annotations

from pathlib import Path

from introspectd.cloud.batchjob import JobOptions, job_json, render_job
from introspectd.protocol.plan import ModelConfig, Plan, RunConfig, SweepConfig, UploadConfig

OUT = Path(__file__).with_name("seed-sweep.job.json")
PLAN_URI = "gs://introspection-sweeps/plans/seed-sweep.toml"
IMAGE = "us-central1-docker.pkg.dev/my-project/introspectd/introspectd:latest"
SECRET = "projects/my-project/secrets/openai-api-key/versions/latest"
TASKS = 8
STAMP = "20260123_143022"  # what `batch render` would take from the clock


def seed_plan() -> Plan:
    """The seed's sweep: 4 concepts x 6 layers x 6 strengths x 40 trials x 2 = 11,520 trials."""
    return Plan(
        path=Path("examples/seed-sweep.toml"),
        run=RunConfig(experiment_id="2026-01-23-layer-strength-sweep"),
        model=ModelConfig(name="Qwen/Qwen2.5-3B-Instruct", slug="3b"),
        sweep=SweepConfig(),  # the defaults are the seed's sweep
        upload=UploadConfig(gcs="gs://introspection-sweeps"),
    )


def example_job() -> dict:
    return render_job(PLAN_URI, seed_plan(), TASKS, IMAGE, JobOptions(secret=SECRET, stamp=STAMP))


def main() -> None:
    OUT.write_text(job_json(example_job()), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
