"""The plan's `[judge]` table: which judge grades the answers, how hard to push it, and what it
may cost. The grading itself is judge/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from introspectd.errors import BadInput
from introspectd.protocol import plan_checks as rules
from introspectd.protocol.plan_checks import Table

JUDGE_APIS = ("chat", "responses")
OPENAI_URL = "https://api.openai.com/v1"
# The openai SDK follows this variable when given no base_url; we resolve it ourselves
# (`JudgeConfig.endpoint`) so that where requests go is said at start and stored.
BASE_URL_ENV = "OPENAI_BASE_URL"


@dataclass(frozen=True)
class JudgeConfig:
    model: str = "gpt-5-mini"
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    api: str = "chat"
    prompt_version: str = "v2"  # v2: the blind prompt (judge/prompt_v2.py); v1 stays selectable
    fewshot: str = ""
    fewshot_n: int = 0
    concurrency: int = 32
    # The adaptive limiter never goes below this many requests in flight, whatever the 429s
    # (judge/limiter.py): for an endpoint known to allow it, whose 429s are someone else's.
    min_concurrency: int = 1
    max_attempts: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    fewshot_select: str = ""  # "flagged": the labelled records whose label.use_as_fewshot is true
    # The spending cap (judge/budget.py): user-set prices in USD per million tokens; no
    # built-in prices. budget_usd = 0 means no cap.
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    budget_usd: float = 0.0

    def api_key(self) -> str | None:
        """The key from the variable `api_key_env` names; never stored anywhere."""
        return os.environ.get(self.api_key_env) or None

    def is_enabled(self, api_key: str | None) -> bool:
        """No key and no base_url means judging is off (the offline quickstart)."""
        return bool(api_key) or bool(self.base_url)

    def endpoint(self) -> str:
        """Where judge requests go: [judge] base_url, else $OPENAI_BASE_URL, else OpenAI.
        A malformed $OPENAI_BASE_URL is BadInput (one line), not a run of connection errors."""
        if self.base_url:
            return self.base_url
        from_env = os.environ.get(BASE_URL_ENV, "")
        if from_env and not rules.URL_RE.fullmatch(from_env):
            # Not echoed: a URL may carry a password.
            raise BadInput(f"${BASE_URL_ENV}: must be an http:// or https:// URL")
        return from_env or OPENAI_URL

    def endpoint_source(self) -> str:
        """Which setting `endpoint` came from, in words for the start line."""
        if self.base_url:
            return "from [judge] base_url"
        return f"from ${BASE_URL_ENV}" if os.environ.get(BASE_URL_ENV) else "the default endpoint"

    def endpoint_host(self) -> str:
        """The endpoint's host[:port] alone, safe to log and store: a URL may carry a user and
        password, or a token in its path. "" when $OPENAI_BASE_URL is malformed."""
        try:
            return urlsplit(self.endpoint()).netloc.rpartition("@")[2]
        except BadInput:
            return ""


def read_judge(t: Table) -> JudgeConfig:
    model = t.text("model", JudgeConfig.model)
    if not model:
        t.fail("model", "must not be empty")
    concurrency = t.integer("concurrency", 32, minimum=1, maximum=rules.MAX_JUDGE_CONCURRENCY)
    return JudgeConfig(
        model=model,
        base_url=t.url("base_url"),
        api_key_env=_read_api_key_env(t),
        api=t.text("api", "chat", JUDGE_APIS),
        prompt_version=t.text("prompt_version", JudgeConfig.prompt_version),
        fewshot=t.text("fewshot", ""),
        fewshot_n=t.integer("fewshot_n", 0, minimum=0, maximum=rules.MAX_FEWSHOT),
        concurrency=concurrency,
        min_concurrency=_read_min_concurrency(t, concurrency),
        max_attempts=t.integer("max_attempts", 3, minimum=1, maximum=rules.MAX_ATTEMPTS),
        backoff_s=t.number("backoff_s", 1.0, minimum=0.0, maximum=rules.MAX_BACKOFF_S),
        timeout_s=t.number(
            "timeout_s", 60.0, minimum=0.0, maximum=rules.MAX_TIMEOUT_S, positive=True
        ),
        fewshot_select=_read_fewshot_select(t),
        price_in_per_mtok=t.number("price_in_per_mtok", 0.0, minimum=0.0, maximum=MAX_PRICE),
        price_out_per_mtok=t.number("price_out_per_mtok", 0.0, minimum=0.0, maximum=MAX_PRICE),
        budget_usd=t.number("budget_usd", 0.0, minimum=0.0, maximum=MAX_BUDGET_USD),
    )


FEWSHOT_SELECTS = ("", "flagged")
MAX_PRICE = 10_000.0  # USD per million tokens: far above any real price, below a typo's 1e308
MAX_BUDGET_USD = 1e9


def _read_min_concurrency(t: Table, concurrency: int) -> int:
    value = t.integer("min_concurrency", 1, minimum=1, maximum=rules.MAX_JUDGE_CONCURRENCY)
    if value > concurrency:
        t.fail("min_concurrency", f"must be <= concurrency ({concurrency}), got {value}")
    return value


def _read_fewshot_select(t: Table) -> str:
    value = t.text("fewshot_select", "")
    if value not in FEWSHOT_SELECTS:
        t.fail("fewshot_select", f'must be "flagged" (or left out); got {value!r}')
    return value


def _read_api_key_env(t: Table) -> str:
    """The NAME of the variable holding the key. A pasted key fails here, and is never echoed:
    it would end up in the stored plan, in every record's judge_error and on stderr."""
    name = t.take("api_key_env", JudgeConfig.api_key_env, (str,), "a string")
    if not rules.ENV_NAME_RE.fullmatch(name):
        t.fail(
            "api_key_env",
            "must name an environment variable (letters, digits, _), not hold a key",
        )
    return str(name)
