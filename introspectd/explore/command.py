"""`introspectd explore`: open what to browse (a plan's run, or JSONL files), then serve it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from introspectd.errors import BadInput
from introspectd.explore.server import bind, serve
from introspectd.explore.sources import Source, source_from_plan, sources_from_jsonl
from introspectd.protocol.plan import Plan


def explore(plan: Plan | None, inputs: list[Path], host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM. Bad input (no run, no files, a port in use) is BadInput,
    raised before the URL is printed."""
    if (plan is None) == (not inputs):
        raise BadInput("explore: give --plan P, or JSONL files/folders (not both)")
    bind(host, port).close()  # a port in use fails before a large JSONL load, not after
    with tempfile.TemporaryDirectory(prefix="introspectd-explore-") as scratch:
        sources: list[Source] = (
            [source_from_plan(plan)] if plan else sources_from_jsonl(inputs, Path(scratch))
        )
        try:
            serve(sources, host, port)
        finally:
            for source in sources:
                source.close()
