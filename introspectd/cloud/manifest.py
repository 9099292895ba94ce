"""The snapshot manifest: the commit marker of one upload, and its JSON form.

Manifest (JSON, `{run folder}/manifest.json`):

    {"version": 1, "seq": 7, "created_at": "2026-01-23T14:30:25.120431+00:00",
     "writer": "a1b2c3d4", "plan_hash": "...", "counts": {"fear": 120, ...},
     "db": "state.sqlite",
     "objects": {"state.sqlite": {"object": "objects/00000007-a1b2c3d4-5e6f/state.sqlite",
                                  "crc32c": "mnG7TA==", "generation": 1700000000000000,
                                  "size": 401408},
                 "fear.jsonl": {...}},
     "previous": {"seq": 6, "created_at": "...", "counts": {...}, "db": "state.sqlite",
                  "objects": {...}} | null}

- `seq` grows by one per committed upload; `writer` is a random id of the uploading process.
- `counts` is what the uploader was told at request time (e.g. completed trials per concept);
  the snapshot may be a little ahead of it, never behind.
- `objects` maps a local file name to its object; `db` names the entry that is the database.
  `object` is relative to the run folder, so a run can be restored from a copied prefix.
  `crc32c` is base64 of the big-endian CRC32C, as GCS reports it.
- `previous` is the prior manifest's file set (one level, no further history), so a restore can
  fall back to it when an object of the latest set is missing or corrupt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from introspectd.text import loads_text

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ObjectRef:
    object: str  # relative to the run folder
    crc32c: str
    generation: int
    size: int


@dataclass(frozen=True)
class FileSet:
    """One consistent set of uploaded files: what a restore installs."""

    seq: int
    created_at: str
    counts: dict[str, int]
    db: str  # the key in `objects` that is the database
    objects: dict[str, ObjectRef]


@dataclass(frozen=True)
class Manifest(FileSet):
    plan_hash: str = ""
    writer: str = ""
    previous: FileSet | None = None
    generation: int = 0  # the manifest object's GCS generation; not part of the JSON

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "seq": self.seq,
            "created_at": self.created_at,
            "writer": self.writer,
            "plan_hash": self.plan_hash,
            **_fileset_json(self),
            "previous": None
            if self.previous is None
            else {
                "seq": self.previous.seq,
                "created_at": self.previous.created_at,
                **_fileset_json(self.previous),
            },
        }
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, generation: int) -> Manifest:
        raw = loads_text(data)
        if not isinstance(raw, dict):  # `[]` or `null`: a hand edit or a foreign file
            raise ValueError(f"manifest is not a JSON object but {type(raw).__name__}")
        if raw.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported manifest version {raw.get('version')!r}")
        prev = raw.get("previous")
        if prev is not None and not isinstance(prev, dict):
            raise ValueError(f"manifest's previous is not a JSON object but {type(prev).__name__}")
        return cls(
            **_fileset_fields(raw),
            plan_hash=str(raw["plan_hash"]),
            writer=str(raw.get("writer", "")),
            previous=None if prev is None else FileSet(**_fileset_fields(prev)),
            generation=generation,
        )

    def as_fileset(self) -> FileSet:
        return FileSet(self.seq, self.created_at, self.counts, self.db, self.objects)


def _fileset_json(fs: FileSet) -> dict[str, Any]:
    objects = {
        k: {"object": r.object, "crc32c": r.crc32c, "generation": r.generation, "size": r.size}
        for k, r in sorted(fs.objects.items())
    }
    return {"counts": dict(fs.counts), "db": fs.db, "objects": objects}


def _fileset_fields(raw: dict[str, Any]) -> dict[str, Any]:
    for key in ("objects", "counts"):
        if not isinstance(raw[key], dict):
            raise ValueError(f"manifest's {key} is not a JSON object")
    objects = {
        str(k): ObjectRef(str(v["object"]), str(v["crc32c"]), int(v["generation"]), int(v["size"]))
        for k, v in raw["objects"].items()
    }
    for key in objects:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"manifest names an object {key!r} that is not a plain file name")
    if raw["db"] not in objects:
        raise ValueError(f"manifest names db {raw['db']!r} but has no such object")
    return {
        "seq": int(raw["seq"]),
        "created_at": str(raw["created_at"]),
        "db": str(raw["db"]),
        "counts": {str(k): int(v) for k, v in raw["counts"].items()},
        "objects": objects,
    }
