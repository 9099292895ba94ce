-- `[sweep] strength_unit = "residual"`: delta = strength × mean‖h_L‖ × unit(concept vector).
-- mean‖h_L‖ is each layer's mean residual norm at the last token of the baseline words' vector
-- prompts (generate/runner.py), computed once and kept with the vectors, so a resumed run,
-- and every record's `config.residual_norm`, use the same value.
CREATE TABLE residual_norms (
    layer INTEGER PRIMARY KEY,
    norm  REAL    NOT NULL
);
