"""Which weights a run used, as plain facts: no torch, no network.

A GGUF file (builtin:smollm2 too) is known by its sha256, already computed for the run's hash;
a built-in random model by the sha256 of the weights file it was built into; a hub id by the
commit of its copy in the local Hugging Face cache (offline: never a request); a directory by
that commit when it is a cache snapshot, and by the sha256 of its weight files when they are
small enough to hash at start (large ones would cost minutes of every start).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from introspectd.protocol.models import ModelRef

MAX_HASHED_BYTES = 1 << 30  # weight files of a directory are hashed up to 1 GiB in all
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def model_identity(ref: ModelRef) -> dict[str, Any]:
    """`{"name", "kind", "revision", "sha256", "note"}`; a fact not known is None."""
    facts: dict[str, Any] = {"name": ref.name, "revision": None, "sha256": None, "note": None}
    source = Path(ref.source)
    if ref.gguf is not None:
        return facts | {"kind": "gguf", "sha256": ref.gguf_sha256, "file": str(ref.gguf)}
    if ref.builtin is not None:
        return facts | {"kind": "builtin", "sha256": weights_sha256(source)[0]}
    if source.is_dir():
        digest, note = weights_sha256(source)
        return (
            facts
            | {"kind": "directory", "revision": snapshot_commit(source)}
            | {
                "sha256": digest,
                "note": note,
            }
        )
    revision = cached_commit(ref.source)
    note = None if revision else "not in the local Hugging Face cache"
    return facts | {"kind": "hub", "revision": revision, "note": note}


def weights_sha256(directory: Path) -> tuple[str | None, str | None]:
    """sha256 over the weight files in name order (each name, then its bytes), and a note
    when they were not hashed."""
    files = sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    total = sum(p.stat().st_size for p in files)
    if not files:
        return None, "no weight files found"
    if total > MAX_HASHED_BYTES:
        return None, f"weights not hashed ({total / 2**30:.1f} GiB, over 1 GiB)"
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest(), None


def snapshot_commit(directory: Path) -> str | None:
    """A directory inside the hub cache (`.../snapshots/<commit>/`) names its commit."""
    resolved = directory.resolve()
    if resolved.parent.name == "snapshots" and len(resolved.name) == 40:
        return resolved.name
    return None


def cached_commit(repo: str) -> str | None:
    """The commit of `repo`'s config.json in the local cache, without any request."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, "config.json")
    except Exception:  # a malformed cache or id: provenance says "unknown", the run goes on
        return None
    return snapshot_commit(Path(cached).parent) if isinstance(cached, str) else None
