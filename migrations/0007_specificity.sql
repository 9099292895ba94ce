-- The specificity designs (protocol/specificity.py).
-- NULL: any other question; X: the mismatch design's "are you thinking about X?".
ALTER TABLE trials ADD COLUMN about TEXT;
-- measure = "choice": the options in letter order and P(letter) of each, renormalised over the
-- options, and their summed P before that, as JSON {"options": [...], "probs": [...], "mass": m};
-- NULL for every other measure.
ALTER TABLE trials ADD COLUMN choice_json TEXT;
