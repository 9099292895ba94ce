"""A model directory written once into a cache, safe when several runs start together: each
writer fills a private directory beside the destination and renames it into place; a loser
of the race keeps the winner's copy."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

DONE_MARKER = "model.safetensors"  # written last by save_pretrained-style writers


def write_once(dest: Path, write: Callable[[Path], None]) -> Path:
    """`dest`, filled by `write(work_dir)` unless an earlier writer already did."""
    if (dest / DONE_MARKER).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        write(work)
        try:
            os.rename(work, dest)
        except OSError:
            if not (dest / DONE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
