"""The plan's `[judge]` table: which judge grades the answers, how hard to push it, and what it
may cost. The grading itself is judge/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from introspectd.errors import BadInput
from introspectd.protocol import plan_checks as rules
from introspectd.protocol import plan_keys
from introspectd.protocol.plan_keys import default
from introspectd.protocol.plan_table import Table

JUDGE_APIS = plan_keys.key("judge", "api").choices
OPENAI_URL = "https://api.openai.com/v1"
# The openai SDK follows this variable when given no base_url; we resolve it ourselves
# (`JudgeConfig.endpoint`) so that where requests go is said at start and stored.
BASE_URL_ENV = "OPENAI_BASE_URL"


@dataclass(frozen=True)
class JudgeConfig:
    model: str = default("judge", "model")
    base_url: str = default("judge", "base_url")
    api_key_env: str = default("judge", "api_key_env")
    api: str = default("judge", "api")
    prompt_version: str = default("judge", "prompt_version")  # v2: judge/prompt_v2.py
    fewshot: str = default("judge", "fewshot")
    fewshot_n: int = default("judge", "fewshot_n")
    concurrency: int = default("judge", "concurrency")
    # The adaptive limiter never goes below this many requests in flight, whatever the 429s
    # (judge/limiter.py): for an endpoint known to allow it, whose 429s are someone else's.
    min_concurrency: int = default("judge", "min_concurrency")
    max_attempts: int = default("judge", "max_attempts")
    backoff_s: float = default("judge", "backoff_s")
    timeout_s: float = default("judge", "timeout_s")
    # "flagged": the labelled records whose label.use_as_fewshot is true
    fewshot_select: str = default("judge", "fewshot_select")
    # The spending cap (judge/budget.py): user-set prices in USD per million tokens; no
    # built-in prices. budget_usd = 0 means no cap.
    price_in_per_mtok: float = default("judge", "price_in_per_mtok")
    price_out_per_mtok: float = default("judge", "price_out_per_mtok")
    budget_usd: float = default("judge", "budget_usd")

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
    model = t.read("model")
    if not model:
        t.fail("model", "must not be empty")
    concurrency = t.read("concurrency")
    return JudgeConfig(
        model=model,
        base_url=t.url("base_url"),
        api_key_env=_read_api_key_env(t),
        api=t.read("api"),
        prompt_version=t.read("prompt_version"),
        fewshot=t.read("fewshot"),
        fewshot_n=t.read("fewshot_n"),
        concurrency=concurrency,
        min_concurrency=_read_min_concurrency(t, concurrency),
        max_attempts=t.read("max_attempts"),
        backoff_s=t.read("backoff_s"),
        timeout_s=t.read("timeout_s"),
        fewshot_select=_read_fewshot_select(t),
        price_in_per_mtok=t.read("price_in_per_mtok"),
        price_out_per_mtok=t.read("price_out_per_mtok"),
        budget_usd=t.read("budget_usd"),
    )


def _read_min_concurrency(t: Table, concurrency: int) -> int:
    value: int = t.read("min_concurrency")
    if value > concurrency:
        t.fail("min_concurrency", f"must be <= concurrency ({concurrency}), got {value}")
    return value


def _read_fewshot_select(t: Table) -> str:
    value = t.text("fewshot_select", default("judge", "fewshot_select"))
    if value not in plan_keys.key("judge", "fewshot_select").choices:
        t.fail("fewshot_select", f'must be "flagged" (or left out); got {value!r}')
    return value


def _read_api_key_env(t: Table) -> str:
    """The NAME of the variable holding the key. A pasted key fails here, and is never echoed:
    it would end up in the stored plan, in every record's judge_error and on stderr."""
    name = t.take("api_key_env", default("judge", "api_key_env"), (str,), "a string")
    if not rules.ENV_NAME_RE.fullmatch(name):
        t.fail(
            "api_key_env",
            "must name an environment variable (letters, digits, _), not hold a key",
        )
    return str(name)
