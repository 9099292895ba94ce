"""The words of `introspectd --help` and of each command's `--help`: a description and an
example per command (cli.py holds the options and their one-line helps), and the formatter that
shows every default. Kept apart so the parser in cli.py stays readable."""

from __future__ import annotations

import argparse

PROG = "introspectd"
DESCRIPTION = """\
Concept-injection introspection sweeps on open-weight LLMs: generate with a concept vector
added to the residual stream, judge the answers online, and report the detection rates.

Exit codes: 0 done, 2 bad input (one line says what and where), 75 interrupted or a transient
failure (run the same command again: it resumes), 1 anything else."""
EPILOG = """\
examples:
  introspectd run --plan examples/quickstart.toml --local
  introspectd report data/sweeps/quickstart/smollm2 --out data/sweeps/quickstart/smollm2/report
  introspectd explore --plan examples/quickstart.toml

`introspectd COMMAND --help` describes each command."""

# command -> (one line for the command list, description, example lines)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": (
        "run (or resume) a sweep",
        "Generate every trial of the plan's sweep, judge each answer as it arrives, and write\n"
        "seed-format JSONL files. Stopped or killed, the same command resumes where it was.",
        "introspectd run --plan sweep.toml --local\n"
        "introspectd run --plan sweep.toml --concept ocean --trials 4 --no-progress",
    ),
    "confirm": (
        "re-run a run's K best cells on fresh trials",
        "Finish the plan's exploration, then give its K best cells (by the lower bound of\n"
        "injection pass rate minus control false positives) N fresh confirmation trials each.",
        "introspectd confirm --plan sweep.toml --top 3 --trials 200",
    ),
    "status": (
        "counts of a run by status and concept",
        "How many trials of the plan's run are pending, generated, judged or failed, by concept;\n"
        "read-only, safe beside a running sweep.",
        "introspectd status --plan sweep.toml\n"
        "introspectd status --plan sweep.toml --from gs://BUCKET/sweeps --json",
    ),
    "export": (
        "write seed-format JSONL files of a run",
        "Write the run's results as one seed-format JSONL file per concept, from the local\n"
        "database or gathered from every shard's GCS snapshot.",
        "introspectd export --plan sweep.toml --out results/\n"
        "introspectd export --plan sweep.toml --from gs://BUCKET/sweeps --out results/",
    ),
    "rejudge": (
        "judge rows whose judge is null",
        "Judge every generated answer that has no judgement (judging was off, or failed), in\n"
        "the run's database, or in a JSONL file written to a new one.",
        "introspectd rejudge --plan sweep.toml\n"
        "introspectd rejudge --input old.jsonl --output judged.jsonl --plan sweep.toml",
    ),
    "calibrate": (
        "measure the plan's judge against human labels",
        "Grade a human-labelled set with the plan's judge and store its agreement, so reports\n"
        "can show rates corrected for the judge's errors.",
        "introspectd calibrate --plan sweep.toml --labels labelled.jsonl --split dev",
    ),
    "report": (
        "metrics, tables and figures from JSONL results",
        "Read seed-format JSONL files or folders and write summary.json, report.md and\n"
        "heatmaps over layer × strength, with 95% intervals.",
        "introspectd report data/sweeps/exp/3b --out report/\n"
        "introspectd report results/ --out report/ --calibration calibration.json --explorer",
    ),
    "explore": (
        "browse a run's transcripts in a web browser",
        "Serve a local web app over a run's transcripts: the heatmap, filters, text search, and\n"
        "every answer with its judgement.",
        "introspectd explore --plan sweep.toml\nintrospectd explore results/ --port 9000",
    ),
    "batch": (
        "Google Cloud Batch helpers",
        "Helpers for running a sweep as a Google Cloud Batch job, one shard per task.",
        "introspectd batch render --plan gs://BUCKET/plans/sweep.toml --tasks 8 --image IMAGE",
    ),
    "batch render": (
        "print a Cloud Batch job as JSON",
        "Print the Cloud Batch job that runs the plan's sweep in N shards, for\n"
        "`gcloud batch jobs submit --config`.",
        "introspectd batch render --plan gs://BUCKET/plans/sweep.toml --tasks 8 --image IMAGE \\\n"
        "  --secret projects/P/secrets/openai-api-key/versions/latest > job.json",
    ),
}


def command_texts(name: str) -> tuple[str, str, str]:
    """Command `name`'s help line, description and epilog (its examples)."""
    line, description, example = COMMANDS[name]
    examples = "\n".join(f"  {e}" for e in example.splitlines())
    return line, description, f"example:\n{examples}"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written (line breaks kept), and each option's default
    after its help unless it has none to show (None, False, an empty list or string)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default in (None, False, "", [])
            or default is argparse.SUPPRESS
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)"
