"""Which model a plan names, where its files are, and its shape; no weights, no torch."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from introspectd.errors import BadInput
from introspectd.protocol import gguf_source as gguf
from introspectd.protocol import hub
from introspectd.text import loads_text

PRESETS: dict[str, str] = {
    "0.5b": "Qwen/Qwen2.5-0.5B-Instruct",
    "1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "3b": "Qwen/Qwen2.5-3B-Instruct",
    "7b": "Qwen/Qwen2.5-7B-Instruct",
    "14b": "Qwen/Qwen2.5-14B-Instruct",
    "32b": "Qwen/Qwen2.5-32B-Instruct",
    "72b": "Qwen/Qwen2.5-72B-Instruct",
}
BUILTIN_PREFIX = "builtin:"
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelRef:
    name: str  # as the record's config.model shows it: hub id, builtin name or dir
    source: str  # what from_pretrained receives: hub id or directory
    slug: str
    builtin: str | None  # "tiny", "small", ... for built-in random models
    # A GGUF file, de-quantized once into `source` (protocol/gguf_source.py), and its hash.
    gguf: Path | None = None
    gguf_sha256: str = ""


def cache_root() -> Path:
    root = os.environ.get("INTROSPECTD_CACHE") or Path.home() / ".cache" / "introspectd"
    return Path(root)


def resolve_model(name: str, slug: str, file: str, gguf_file: str = "") -> ModelRef:
    """Map a plan's model name to a hub id, a local directory, a GGUF file (local, or
    `gguf_file` in hub repository `name`) or a built-in model."""
    from introspectd.protocol.builtin_specs import BUILTIN_SPECS

    if gguf_file:
        if not HUB_ID_RE.match(name):
            raise BadInput(
                f"{file}: [model] gguf_file: names a file in a hub repository; "
                f"name must then be a hub id like 'org/name', got {name!r}"
            )
        path = gguf.hub_gguf_path(name, gguf_file, file)
        return _gguf_ref(f"{name}/{gguf_file}", path, slug or _slugify(path.stem), file)
    if name.lower().endswith(".gguf"):
        path = gguf.local_gguf_path(name, file)
        return _gguf_ref(str(path), path, slug or _slugify(path.stem), file)
    if name.startswith(BUILTIN_PREFIX):
        key = name[len(BUILTIN_PREFIX) :]
        if key in gguf.BUILTIN_GGUF:
            path = gguf.packaged_gguf_path(key, file)
            return _gguf_ref(name, path, slug or key, file)
        if key not in BUILTIN_SPECS:
            raise BadInput(
                f"{file}: [model] name: unknown built-in model {name!r}; known: "
                + ", ".join(BUILTIN_PREFIX + k for k in [*BUILTIN_SPECS, *gguf.BUILTIN_GGUF])
            )
        source = str(cache_root() / f"builtin-{key}-{BUILTIN_SPECS[key].version}")
        return ModelRef(name, source, slug or key, key)
    if name.lower() in PRESETS:
        hub_id = PRESETS[name.lower()]
        return ModelRef(hub_id, hub_id, slug or name.lower(), None)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInput(f"{file}: [model] name: directory {name!r} has no config.json")
        return ModelRef(str(path.resolve()), str(path.resolve()), slug or _slugify(path.name), None)
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace(
        "/", "", 1
    )
    if HUB_ID_RE.match(name) and not looks_like_path:
        preset = {v: k for k, v in PRESETS.items()}.get(name)
        return ModelRef(name, name, slug or preset or _slugify(name.split("/")[1]), None)
    raise BadInput(
        f"{file}: [model] name: {name!r} is neither a preset ("
        f"{', '.join(PRESETS)}), a built-in model, a hub id like 'org/name', "
        "an existing directory, nor a .gguf file"
    )


def _gguf_ref(name: str, path: Path, slug: str, file: str) -> ModelRef:
    sha256 = gguf.gguf_sha256(path, file)
    source = gguf.dequantized_dir(path, sha256, cache_root())
    return ModelRef(name, str(source), slug, None, gguf=path, gguf_sha256=sha256)


def _slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "model"


def read_model_config(ref: ModelRef, file: str) -> dict[str, Any]:
    """The model's config.json, fetched alone for a hub id: bad layers fail before weights load."""
    if ref.builtin is not None:
        from introspectd.protocol.builtin_specs import BUILTIN_SPECS

        return BUILTIN_SPECS[ref.builtin].config_dict()
    path = Path(ref.source) / "config.json"
    if ref.gguf is not None and not path.is_file():
        return gguf.gguf_config(ref.gguf, file)  # not de-quantized yet
    if not path.is_file():
        path = hub.hub_file(ref.source, "config.json", f"{file}: [model] name: {ref.source!r}")
    try:
        config: dict[str, Any] = loads_text(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: unreadable model config: {exc}") from None
    return config


def check_context(config: dict[str, Any], max_new_tokens: int, name: str, file: str) -> None:
    """Refuse `max_new_tokens` the model cannot hold: the prompt needs room too, and the
    batcher preallocates every row's tokens up front."""
    for scope in (config, config.get("text_config") or {}):
        context = scope.get("max_position_embeddings")
        if isinstance(context, int) and not isinstance(context, bool):
            if max_new_tokens >= context:
                raise BadInput(
                    f"{file}: [sweep] max_new_tokens: {max_new_tokens} does not fit in "
                    f"{name}'s context of {context} tokens (prompt included)"
                )
            return


def num_layers(config: dict[str, Any]) -> int:
    for scope in (config, config.get("text_config") or {}):
        if isinstance(scope.get("num_hidden_layers"), int):
            return int(scope["num_hidden_layers"])
    raise BadInput("model config has no num_hidden_layers; is this a decoder-only model?")
