"""`introspectd batch render`: a Cloud Batch job for a plan."""

from __future__ import annotations

import argparse
import sys

from introspectd.errors import EXIT_OK, BadInput


def cmd_batch_render(args: argparse.Namespace) -> int:
    from introspectd.app.plans import load_plan
    from introspectd.cloud.batchjob import JobOptions, job_json, render_job, render_warnings

    env = dict(item.split("=", 1) for item in args.env if "=" in item)
    if len(env) != len(args.env):
        raise BadInput("--env: expected K=V")
    plan = load_plan(args.plan)
    options = JobOptions(
        machine_type=args.machine_type,
        gpu_type=args.gpu_type,
        gpu_count=args.gpu_count,
        spot=not args.standard,
        region=args.region,
        zones=tuple(z for z in args.zones.split(",") if z),
        secret=args.secret,
        max_run_duration_s=args.max_run_duration,
        max_retry_count=args.max_retries,
        cpu_milli=args.cpu_milli,
        memory_mib=args.memory_mib,
        boot_disk_gib=args.boot_disk_gib,
        parallelism=args.parallelism,
        stamp=args.stamp,
        env=env,
    )
    job = render_job(args.plan, plan, args.tasks, args.image, options)
    for warning in render_warnings(plan, options):
        print(f"introspectd: warning: {warning}", file=sys.stderr)
    sys.stdout.write(job_json(job))
    return EXIT_OK
