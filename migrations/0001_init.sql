-- The run, its concept vectors and one row per planned trial.
CREATE TABLE run (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    stamp         TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    model_name    TEXT NOT NULL,
    plan_json     TEXT NOT NULL,
    spec_json     TEXT NOT NULL,
    spec_hash     TEXT NOT NULL,
    baseline_json TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE vectors (
    concept TEXT    NOT NULL,
    layer   INTEGER NOT NULL,
    dim     INTEGER NOT NULL,
    norm    REAL    NOT NULL,
    data    BLOB    NOT NULL,  -- float32, little-endian
    PRIMARY KEY (concept, layer)
);

CREATE TABLE trials (
    id             TEXT PRIMARY KEY,
    ordinal        INTEGER NOT NULL UNIQUE,
    concept        TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('injection', 'control')),
    layer          INTEGER NOT NULL,
    strength       REAL    NOT NULL,
    trial          INTEGER NOT NULL,
    status         TEXT    NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'generated', 'judged', 'judge_failed')),
    response       TEXT,
    num_new_tokens INTEGER,
    generated_at   TEXT,
    judge_json     TEXT,
    judge_error    TEXT,
    judged_at      TEXT
);
CREATE INDEX trials_status ON trials (status, ordinal);
CREATE INDEX trials_concept ON trials (concept, ordinal);
