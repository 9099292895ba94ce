-- Judge provenance (issue 13): which judge graded what, and how well it agrees with humans.
-- The judge's fingerprint (judge/provenance.py) on every judgement; '' for those made before.
ALTER TABLE judgements ADD COLUMN judge_fingerprint TEXT NOT NULL DEFAULT '';
CREATE INDEX judgements_fingerprint ON judgements (judge_fingerprint, trial_id);
-- Calibrations against human labels (`introspectd calibrate`), newest last per fingerprint.
CREATE TABLE calibrations (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    judge_fingerprint TEXT    NOT NULL,
    calibration_json  TEXT    NOT NULL,
    created_at        TEXT    NOT NULL
);
CREATE INDEX calibrations_fingerprint ON calibrations (judge_fingerprint, id);
