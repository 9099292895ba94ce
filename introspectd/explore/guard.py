"""Who may read the explorer: a check of every request before the app sees it.

A web page on any site can make the browser connect to 127.0.0.1 by re-pointing its own name
there (DNS rebinding); the browser then treats the explorer as that site and lets the page read
every transcript. The request still says which name it was sent to (its Host header), so on a
loopback address only the explorer's own names are answered: localhost, 127.0.0.1, [::1] and
the host given, each with the port.

Bound to any other address (`--host 0.0.0.0`), the explorer serves the network: names are not
known in advance (the machine's own, its addresses), so each request must carry a token instead,
generated at start and printed in the URL; a rebinding page cannot know it.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_PARAM = "token"
TOKEN_HEADER = b"x-introspectd-token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class Access:
    """`hosts`: the Host headers answered (None: any); `token`: what requests must carry."""

    hosts: frozenset[str] | None
    token: str | None

    @property
    def is_public(self) -> bool:
        return self.token is not None


def url_host(host: str) -> str:
    """`host` as it is written in a URL and a Host header (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def access_for(host: str, address: str, port: int) -> Access:
    """The rule for a socket bound at `address` (what `host` resolved to) and `port`."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id is not part of it
    names = {*LOOPBACK_NAMES, url_host(host).lower(), url_host(address).lower()}
    # Browsers leave out port 80; every other port is in the header.
    hosts = {f"{name}:{port}" for name in names} | (names if port == 80 else set())
    if ip.is_loopback:
        return Access(frozenset(hosts), None)
    token = secrets.token_urlsafe(24)
    return Access(None if ip.is_unspecified else frozenset(hosts), token)


class Guard:
    """ASGI middleware: 403 and one line for a request `access` does not allow."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await PlainTextResponse(refusal + "\n", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str | None:
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if self.access.hosts is not None and host not in self.access.hosts:
            return f"forbidden: Host {host!r} is not this explorer's address"
        if self.access.token is not None and not self._has_token(scope, headers):
            return "forbidden: this explorer needs the token its URL was printed with"
        return None

    def _has_token(self, scope: Scope, headers: dict[Any, Any]) -> bool:
        assert self.access.token is not None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = headers.get(TOKEN_HEADER, b"").decode("latin-1") or query.get(TOKEN_PARAM, [""])[0]
        return secrets.compare_digest(given.encode(), self.access.token.encode())
