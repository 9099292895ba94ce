-- Adaptive sweeps: confirmation trials (`…_c0`) re-run chosen cells on fresh trials. A trial's
-- round is not stored: it follows from its index and the plan's hashed [adaptive] settings.
ALTER TABLE trials ADD COLUMN is_confirmation INTEGER NOT NULL DEFAULT 0;
