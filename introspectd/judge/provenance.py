"""Which judge graded a row: a short fingerprint stored with every judgement and calibration.

Two judgements share a fingerprint when the same model, API, prompt version and few-shot
examples produced them. The base_url is left out on purpose: the same model reached through a
proxy or another region is the same judge, and a URL may carry credentials or hosts that have
no place in a stored result.
"""

from __future__ import annotations

import hashlib
import json

from introspectd.protocol.plan import JudgeConfig

FINGERPRINT_CHARS = 12


def judge_fingerprint(cfg: JudgeConfig, fewshot_hash: str) -> str:
    """sha256 over (model, api, prompt_version, fewshot_hash), first FINGERPRINT_CHARS hex."""
    canon = json.dumps(
        [cfg.model, cfg.api, cfg.prompt_version, fewshot_hash], separators=(",", ":")
    )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:FINGERPRINT_CHARS]
