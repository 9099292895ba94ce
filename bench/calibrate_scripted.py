"""`introspectd calibrate` on the shared labelled set with the scripted judge (issue 13).

The judge is tests/judge_server.py's `labelled_judge`: it grades exactly like the human labels
except for the records named with --flip, so the printed confusion matrix and kappa are known
in advance and check the whole path (blind requests, verdict rule, agreement figures, storage).

    python bench/calibrate_scripted.py [--split test] [--flip ID ...] [--out cal.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from judge_server import JudgeServer, labelled_judge  # noqa: E402

LABELS = REPO.parent / "shared" / "data" / "labelled_responses.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", default=str(LABELS))
    parser.add_argument("--split", default="test")
    parser.add_argument("--flip", nargs="*", default=None, help="ids the judge grades wrongly")
    parser.add_argument("--out", help="keep the calibration JSON here (for report --calibration)")
    args = parser.parse_args()
    records = [json.loads(line) for line in Path(args.labels).read_text().splitlines() if line]
    chosen = [r for r in records if r["split"] == args.split]
    flips = args.flip
    if flips is None:  # default: the first two human passes and the first human fail
        passes = [r["id"] for r in chosen if r["label"]["answer"] == "pass"]
        fails = [r["id"] for r in chosen if r["label"]["answer"] == "fail"]
        flips = passes[:2] + fails[:1]
    print(f"flipped: {', '.join(flips)}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        JudgeServer(responder=labelled_judge(records, flipped=set(flips))) as server,
    ):
        plan = Path(tmp) / "plan.toml"
        plan.write_text(
            textwrap.dedent(f"""
            [run]
            output_dir = "{tmp}/out"
            experiment_id = "calibration"
            [model]
            name = "builtin:tiny"
            [sweep]
            concepts = ["celebration", "ocean", "fear", "silence"]
            layers = [1]
            strengths = [2.0]
            trials = 1
            [judge]
            model = "scripted-labels"
            base_url = "{server.base_url}"
            concurrency = 8
            """)
        )
        cmd = [
            sys.executable,
            "-m",
            "introspectd.cli",
            "calibrate",
            "--plan",
            str(plan),
            "--labels",
            args.labels,
            "--split",
            args.split,
            "--out",
            str(Path(args.out).resolve()) if args.out else f"{tmp}/cal.json",
        ]
        done = subprocess.run(cmd, cwd=REPO, env=os.environ, text=True, capture_output=True)
        print(done.stdout, done.stderr, sep="")
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
