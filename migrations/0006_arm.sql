-- One word for a trial's arm. Rows from before 0004_controls.sql hold NULL in `arm` (meaning
-- `kind`): they get their arm, so every query reads `arm` alone. The old column cannot be
-- dropped (its CHECK names it; dropping means rebuilding the table), so it is renamed to say
-- what it is: `legacy_kind`, injection | control, written only to satisfy that CHECK.
UPDATE trials SET arm = kind WHERE arm IS NULL;
ALTER TABLE trials RENAME COLUMN kind TO legacy_kind;
