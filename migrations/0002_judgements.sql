-- Every judgement ever made, so `rejudge --all` keeps the old grade beside the new one.
CREATE TABLE judgements (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    trial_id          TEXT    NOT NULL REFERENCES trials (id),
    judge_model       TEXT    NOT NULL,
    prompt_version    TEXT    NOT NULL,
    fewshot_hash      TEXT    NOT NULL,
    result_json       TEXT,
    error             TEXT,
    attempts          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT    NOT NULL
);
CREATE INDEX judgements_trial ON judgements (trial_id);
