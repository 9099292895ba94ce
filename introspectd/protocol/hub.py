"""Files from the Hugging Face hub (a model's config.json, a GGUF file), from the local cache
or downloaded, with every way of failing one line, at once, naming what to check.

huggingface_hub alone retries a network error five times with backoff: a mistyped id on a
machine without network took 24 s and printed ten warnings (each twice) before its error.
"""

from __future__ import annotations

from pathlib import Path

from introspectd.errors import BadInput
from introspectd.logs import route_library_logs

# A reachable hub answers a HEAD in well under a second; a black-holed network never does.
PROBE_TIMEOUT_S = 10.0


def hub_file(repo: str, filename: str, where: str) -> Path:
    """`filename` of hub repository `repo`; `where` begins each error line (plan file, key)."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    route_library_logs("huggingface_hub")  # its warnings once, in our format, not twice
    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return Path(cached)
    if constants.HF_HUB_OFFLINE:
        raise BadInput(
            f"{where}: {filename} is not in the local Hugging Face cache, and HF_HUB_OFFLINE "
            "is set: check the id, or unset HF_HUB_OFFLINE to download it"
        )
    _probe(repo, filename, where)
    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as exc:  # the hub answered the probe, then failed: still one line
        raise BadInput(f"{where}: cannot fetch {filename}: {_first_line(exc)}") from None


def _probe(repo: str, filename: str, where: str) -> None:
    """One request, no retries, a short timeout: is the hub there, and does it have the file?"""
    import httpx
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    try:
        reply = httpx.head(
            hf_hub_url(repo, filename),
            headers=build_hf_headers(),
            timeout=PROBE_TIMEOUT_S,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise BadInput(
            f"{where}: cannot reach {constants.ENDPOINT} ({_first_line(exc)}): check the "
            "network (and HF_ENDPOINT, a proxy), check the id, or set HF_HUB_OFFLINE=1 to use "
            "only what is already in the local cache"
        ) from None
    if reply.status_code in (401, 403, 404):
        raise BadInput(
            f"{where}: {constants.ENDPOINT} has no {filename} for {repo!r} "
            f"(HTTP {reply.status_code}): check the id (a typo?); a gated or private model "
            "needs HF_TOKEN"
        )


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
