"""The multiple-choice read-out of `[sweep] measure = "choice"` (protocol/specificity.py asks
the question): P(letter) of each option at the first answer position, from the same steered
forward pass as the logit measure's P(yes)."""

from __future__ import annotations

import torch

from introspectd.protocol.results import ChoiceReadout


def letter_spellings(letter: str) -> tuple[str, ...]:
    """How an answer may open with a letter: bare, or after a space."""
    return (letter, f" {letter}")


def option_probs(
    logits: torch.Tensor, letter_ids: list[list[int]], options: list[tuple[str, ...]]
) -> list[ChoiceReadout]:
    """Per row of `logits` `[B, V]`: P of each of its options' letters (summed over the letter's
    spellings, `letter_ids[i]` for letter i), renormalised over the row's options."""
    probs = logits.float().softmax(dim=-1)
    out = []
    for row, row_options in zip(probs, options, strict=True):
        mass = torch.stack([row[letter_ids[i]].sum() for i in range(len(row_options))])
        total = float(mass.sum())
        shares = mass / max(total, torch.finfo(torch.float32).tiny)
        out.append(ChoiceReadout(row_options, tuple(float(p) for p in shares.tolist()), total))
    return out
