"""`[sweep] vectors_file`: your own directions (SAE decoder rows, probes...) in place of the
computed concept vectors.

A safetensors file of 1-D tensors named `{concept}/{layer}` ("ocean/12"). It is read here
without torch (the format is a JSON header and raw little-endian data; numpy reads the
data), so a wrong file is one line before any weights load: a name not of that form, a
dtype other than F32/F16/BF16/F64, a shape other than the model's hidden size, a value that
is not finite, a zero vector, or a (concept, layer) the sweep injects that it lacks. Pairs
beyond the sweep's are ignored, so one file can serve several sweeps.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from introspectd.errors import BadInput
from introspectd.protocol.results import VectorTable
from introspectd.protocol.sweep import SweepConfig

NAME_RE = re.compile(r"(?P<concept>[a-z][a-z0-9 '-]*)/(?P<layer>\d{1,6})")
_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit


class VectorFile:
    """The tensors of one vectors file, as float32 arrays by (concept, layer)."""

    def __init__(self, path: Path, where: str) -> None:
        self.path, self.where = path, where  # `where`: "plan.toml: [sweep] vectors_file"
        self.vectors = self._read()

    def fail(self, why: str) -> BadInput:
        return BadInput(f"{self.where}: {self.path}: {why}")

    def _read(self) -> dict[tuple[str, int], np.ndarray]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise self.fail("file not found") from None
        except OSError as exc:
            raise self.fail(f"cannot read ({exc.strerror})") from None
        header, body = self._split(data)
        vectors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            match = NAME_RE.fullmatch(name)
            if match is None:
                raise self.fail(
                    f"tensor {name!r} is not named {{concept}}/{{layer}}, e.g. ocean/12"
                )
            vectors[(match["concept"], int(match["layer"]))] = self._array(name, entry, body)
        return vectors

    def _split(self, data: bytes) -> tuple[dict[str, Any], bytes]:
        """The JSON header and the data after it; anything else is not a safetensors file."""
        if len(data) < 8:
            raise self.fail("not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", data[:8])
        if size > min(MAX_HEADER_BYTES, len(data) - 8):
            raise self.fail("not a safetensors file (bad header length)")
        try:
            header = json.loads(data[8 : 8 + size])
        except (UnicodeDecodeError, ValueError):
            raise self.fail("not a safetensors file (header is not JSON)") from None
        if not isinstance(header, dict):
            raise self.fail("not a safetensors file (header is not a table)")
        return header, data[8 + size :]

    def _array(self, name: str, entry: Any, body: bytes) -> np.ndarray:
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise self.fail(f"tensor {name!r}: malformed header entry") from None
        if dtype not in _DTYPES:
            raise self.fail(f"tensor {name!r} is {dtype}; give F32, F16, BF16 or F64")
        if not isinstance(shape, list) or len(shape) != 1:
            raise self.fail(f"tensor {name!r} has shape {shape}; each vector is 1-D [hidden]")
        if not 0 <= begin <= end <= len(body):
            raise self.fail(f"tensor {name!r}: data lies outside the file")
        raw = np.frombuffer(body[begin:end], dtype=_DTYPES[dtype])
        if raw.size != shape[0]:
            raise self.fail(f"tensor {name!r}: {raw.size} values for shape {shape}")
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            return (raw.astype("<u4") << 16).view("<f4")
        return raw.astype("<f4")

    def check(self, pairs: set[tuple[str, int]], hidden_size: int) -> None:
        """Every pair the sweep injects is here, of the model's hidden size, finite, non-zero."""
        lacking = sorted(pairs - self.vectors.keys())
        if lacking:
            concept, layer = lacking[0]
            raise self.fail(
                f"has no tensor {concept}/{layer}, which the sweep injects "
                f"({len(lacking)} of its {len(pairs)} (concept, layer) pairs are missing)"
            )
        for concept, layer in sorted(pairs):
            vector = self.vectors[(concept, layer)]
            name = f"{concept}/{layer}"
            if vector.shape[0] != hidden_size:
                raise self.fail(
                    f"tensor {name} has {vector.shape[0]} values; the model's hidden size "
                    f"is {hidden_size}"
                )
            if not np.isfinite(vector).all():
                raise self.fail(f"tensor {name} holds values that are not finite (nan or inf)")
            if not np.any(vector):
                raise self.fail(f"tensor {name} is all zeros: it would steer nothing")

    def table(self, pairs: set[tuple[str, int]]) -> VectorTable:
        """The store's form of the pairs asked for (checked first: `check`)."""
        table: VectorTable = {}
        for key in pairs:
            vector = self.vectors[key]
            norm = float(np.linalg.norm(vector.astype(np.float64)))
            table[key] = (vector.astype("<f4").tobytes(), int(vector.shape[0]), norm)
        return table


def hidden_size(config: dict[str, Any]) -> int | None:
    """The residual stream's width from a model's config.json (its text config for a
    multimodal one); None when it names none of the usual keys."""
    for scope in (config, config.get("text_config") or {}):
        for key in ("hidden_size", "n_embd", "d_model"):
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def where(plan_file: str) -> str:
    return f"{plan_file}: [sweep] vectors_file"


def check_plan_file(
    sweep: SweepConfig, plan_file: str, config: dict[str, Any], layers: list[int]
) -> None:
    """The plan's vectors file (if any) against the model's config and the resolved layers."""
    if not sweep.vectors_file:
        return
    width = hidden_size(config)
    if width is None:
        raise BadInput(f"{where(plan_file)}: the model's config names no hidden size")
    pairs = {(concept, layer) for concept in sweep.concepts for layer in layers}
    VectorFile(Path(sweep.vectors_file), where(plan_file)).check(pairs, width)


def file_sha256(sweep: SweepConfig, plan_file: str) -> str:
    """The file's content decides the generations, so the run's spec holds its hash."""
    path = Path(sweep.vectors_file)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise BadInput(f"{where(plan_file)}: {path}: cannot read ({exc.strerror})") from None
    return digest.hexdigest()
