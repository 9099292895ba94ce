"""The judge's HTTP client: the SDK's own, with a cap on how much of a reply is read.

Without a cap a judge that rambles (a 70 MiB `reasoning`) is read whole into memory, once per
request in flight, and then has to cross the judge child's pipe and land in the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import openai

# A judgement is a few hundred bytes; with the chat or Responses envelope and usage a reply is
# 1-3 KiB. 2 MiB is ~1000x that, so no honest reply comes near it, while hundreds of requests in
# flight with replies at the cap still fit in memory (256 x 2 MiB = 512 MiB).
MAX_REPLY_BYTES = 2 << 20


class ReplyTooLarge(openai.OpenAIError):
    """The reply body passed MAX_REPLY_BYTES; the rest is not read. An OpenAIError, so the SDK
    passes it on as it is instead of calling it a connection error."""

    def __init__(self) -> None:
        super().__init__(f"judge reply too large (over {MAX_REPLY_BYTES >> 20} MiB, not read)")


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > MAX_REPLY_BYTES:
                raise ReplyTooLarge()
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _cap_reply(response: httpx2.Response) -> None:
    """Response hook: runs once the headers are in, before the SDK reads the body."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_REPLY_BYTES:
        raise ReplyTooLarge()
    # The cap counts bytes as they come off the wire (before any gzip is undone).
    assert isinstance(response.stream, httpx2.AsyncByteStream)
    response.stream = _CappedStream(response.stream)


def capped_http_client() -> httpx2.AsyncClient:
    """What `openai.AsyncOpenAI(http_client=...)` gets: the SDK's default client plus the cap."""
    return openai.DefaultAsyncHttpxClient(event_hooks={"response": [_cap_reply]})
