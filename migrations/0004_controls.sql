-- Control arms and the forced-choice (logit) measure.
-- `arm` is the trial's arm (injection, control, random). The old `kind` column keeps its CHECK
-- (injection | control) and now says only whether something was added ("random" rows store
-- "injection"): relaxing a CHECK in SQLite means rebuilding the table, which would rewrite a
-- million-row run on upgrade and conflict with other migrations' columns. NULL arm = kind.
ALTER TABLE trials ADD COLUMN arm TEXT;
-- NULL: the plan's own question; i: factual control question i (protocol/factual.py).
ALTER TABLE trials ADD COLUMN question INTEGER;
-- Logit-mode read-out: p_yes = P(yes) / (P(yes) + P(no)) and the two raw probabilities.
ALTER TABLE trials ADD COLUMN p_yes REAL;
ALTER TABLE trials ADD COLUMN prob_yes REAL;
ALTER TABLE trials ADD COLUMN prob_no REAL;
