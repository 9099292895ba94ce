-- Prompt batteries ([sweep] prompts, protocol/prompt_battery.py): the trial's prompt name;
-- NULL for a run with one prompt (its ids carry no prompt part).
ALTER TABLE trials ADD COLUMN prompt TEXT;
