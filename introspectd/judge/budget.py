"""The judge's spending cap: spend = stored token counts × the user's prices. Pure.

introspectd ships no prices (they change, and differ by account); with no prices set the spend
is 0 and there is no cap. Requests already in flight when the cap is reached still complete,
so the final spend can pass the cap by at most `concurrency` requests' worth.
"""

from __future__ import annotations

from introspectd.protocol.plan import JudgeConfig

BUDGET_REACHED = "budget reached"
TOKENS_PER_PRICE_UNIT = 1_000_000


def spend_usd(cfg: JudgeConfig, prompt_tokens: int, completion_tokens: int) -> float:
    return (
        prompt_tokens * cfg.price_in_per_mtok + completion_tokens * cfg.price_out_per_mtok
    ) / TOKENS_PER_PRICE_UNIT


def is_capped(cfg: JudgeConfig) -> bool:
    return cfg.budget_usd > 0


def is_budget_reached(cfg: JudgeConfig, spent: float) -> bool:
    return is_capped(cfg) and spent >= cfg.budget_usd


def budget_reason(cfg: JudgeConfig, spent: float) -> str:
    """A failed row's judge_error: starts with BUDGET_REACHED, says how to go on."""
    return (
        f"{BUDGET_REACHED} (${spent:.4f} of ${cfg.budget_usd:g}); raise [judge] budget_usd "
        "and run `introspectd rejudge`"
    )
