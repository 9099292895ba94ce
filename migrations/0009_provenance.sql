-- Provenance (issue 24): what made a run's generations. One row per process that loaded the
-- model (a resumed run on another machine adds its own): introspectd's version and commit,
-- torch, transformers, CUDA, device names, the model's revision or file sha256 and the
-- judge's fingerprint, as one JSON object, so a new fact needs no migration.
CREATE TABLE provenance (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at TEXT NOT NULL,
    data_json TEXT NOT NULL
);
