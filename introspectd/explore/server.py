"""`introspectd explore`: a local, read-only web server over one or more `Source`s.

Starlette answers a JSON API and the one page (assets/); uvicorn serves it on a socket bound
here first, so a port in use is one line (BadInput) before anything starts. Uvicorn's own
SIGINT/SIGTERM handling stops it cleanly; `serve` then returns. Every request passes guard.py's
check (its Host, or a token when serving the network) first.
"""

from __future__ import annotations

import errno
import math
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from introspectd.errors import BadInput
from introspectd.explore.assets import browser_json, page_html
from introspectd.explore.guard import Access, Guard, access_for, url_host
from introspectd.explore.sources import Source
from introspectd.protocol.factual import FACTUAL_QUESTIONS
from introspectd.run.db import browse

Handler = Callable[[Request], Response]


class _BadQuery(ValueError):
    """A query parameter that does not parse: 400 with its message."""


def _flag(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name, "")
    if value in ("", "any"):
        return None
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise _BadQuery(f"{name}: expected true or false, got {value!r}")


def _number(request: Request, name: str, kind: type, default: Any = None) -> Any:
    value = request.query_params.get(name, "")
    if value == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        raise _BadQuery(f"{name}: expected a number, got {value[:40]!r}") from None
    if kind is int and number not in browse.SQL_INTEGER:
        raise _BadQuery(f"{name}: {value[:40]} is out of range (a 64-bit integer)")
    if kind is float and not math.isfinite(number):
        raise _BadQuery(f"{name}: expected a finite number, got {value[:40]!r}")
    return number


def trial_filter(request: Request) -> browse.TrialFilter:
    q = request.query_params
    return browse.TrialFilter(
        concept=q.get("concept") or None,
        layer=_number(request, "layer", int),
        strength=_number(request, "strength", float),
        arm=q.get("arm") or None,
        answer=q.get("answer") or None,
        coherent=_flag(request, "coherent"),
        refused=_flag(request, "refused"),
        is_failed=_flag(request, "failed"),
        **browse.search_filter(q.get("q", "")),
    )


class BrowserJSON(JSONResponse):
    """JSON a browser reads exactly: big integers (seeds) as strings (assets.browser_json)."""

    def render(self, content: Any) -> bytes:
        return super().render(browser_json(content))


def list_item(trial: dict[str, Any], text: str | None) -> dict[str, Any]:
    """A trial as a list shows it: where searched for `text`, the excerpt around its first
    match, from the answer or else the judge's reasoning (the page highlights it)."""
    answer = trial["response"] or ""
    reasoning = (trial["judge"] or {}).get("reasoning")
    shown, of = browse.excerpt(answer, text), "answer"
    if shown is None and isinstance(reasoning, str):
        shown, of = browse.excerpt(reasoning, text), "reasoning"
    return {**trial, "response": answer[:300], "excerpt": shown or answer[:300], "excerpt_of": of}


class ExplorerApp:
    def __init__(self, sources: list[Source]) -> None:
        self.sources = {s.model: s for s in sources}
        self.default = sources[0].model
        routes = [
            Route("/", self.page),
            Route("/api/meta", self._sync(self.meta)),
            Route("/api/cells", self._sync(self.cells)),
            Route("/api/trials", self._sync(self.trials)),
            Route("/api/trial", self._sync(self.trial)),
        ]
        self.app = Starlette(routes=routes)

    def _sync(self, handler: Callable[[Request, Source], Any]) -> Callable[..., Any]:
        """A JSON endpoint; SQLite reads run in a worker thread, one at a time per source."""
        from starlette.concurrency import run_in_threadpool

        async def endpoint(request: Request) -> Response:
            model = request.query_params.get("model") or self.default
            source = self.sources.get(model)
            if source is None:
                return BrowserJSON({"error": f"no model {model!r}"}, status_code=404)

            def locked() -> Any:
                with source.lock:
                    return handler(request, source)

            try:
                body = await run_in_threadpool(locked)
            except _BadQuery as e:
                return BrowserJSON({"error": str(e)}, status_code=400)
            if body is None:
                return BrowserJSON({"error": "not found"}, status_code=404)
            return BrowserJSON(body, headers={"Cache-Control": "no-store"})

        return endpoint

    async def page(self, request: Request) -> Response:
        return HTMLResponse(page_html(embedded=None))

    def meta(self, request: Request, source: Source) -> dict[str, Any]:
        return {
            "models": list(self.sources),
            "model": source.model,
            "concepts": browse.concepts(source.store),
            "arms": browse.arms(source.store),
            "counts": browse.status_counts(source.store),
        }

    def cells(self, request: Request, source: Source) -> dict[str, Any]:
        concept = request.query_params.get("concept") or ""
        return {
            "concept": concept,
            "cells": browse.cells(source.store, concept),
            "counts": browse.status_counts(source.store),
        }

    def trials(self, request: Request, source: Source) -> dict[str, Any]:
        where = trial_filter(request)
        offset = _number(request, "offset", int, 0)
        limit = _number(request, "limit", int, 50)
        items = browse.page_trials(source.store, where, offset, limit)
        return {
            "total": browse.count_trials(source.store, where),
            "offset": offset,
            "items": [list_item(t, where.text) for t in items],
        }

    def trial(self, request: Request, source: Source) -> dict[str, Any] | None:
        found = browse.get_trial(source.store, request.query_params.get("id", ""))
        if found is None:
            return None
        seed = source.seed(found["id"])
        question = found["question"]
        return {
            **found,
            "model": source.model,
            "seed": None if seed is None else str(seed),  # 63 bits: a browser would round it
            "question_text": FACTUAL_QUESTIONS[question].text
            if question is not None and 0 <= question < len(FACTUAL_QUESTIONS)
            else None,
            "config": source.trial_config(found),
            "mention": source.mention(found),
        }


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or BadInput naming what is wrong with host or port."""
    if not 0 <= port <= 65535:
        raise BadInput(f"--port: {port} is not a port number (0..65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise BadInput(f"--host: cannot resolve {host!r} ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
        raise BadInput(f"--port: {host}:{port} {why}") from None
    sock.listen(128)
    return sock


class _Server(uvicorn.Server):
    """SIGINT/SIGTERM are how a user stops the explorer: a clean stop and exit 0. (Uvicorn
    re-raises the signal once stopped, which `stopping` would turn into exit 75.)"""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def announce(host: str, port: int, access: Access) -> None:
    """The URL (stdout, flushed); serving the network, a warning first (stderr)."""
    shown = url_host(host)
    query = ""
    if access.token is not None:
        print(
            f"warning: --host {host}: every transcript is served to the network; only "
            "requests with the token in the URL below are answered",
            file=sys.stderr,
            flush=True,
        )
        if access.hosts is None:  # 0.0.0.0 is no address to browse to: the machine's name is
            shown = url_host(socket.gethostname())
        query = f"?token={access.token}"
    print(f"explorer at http://{shown}:{port}/{query} (Ctrl-C to stop)", flush=True)


def serve(sources: list[Source], host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; prints the URL first (stdout, flushed)."""
    sock = bind(host, port)
    address, bound_port = sock.getsockname()[:2]
    access = access_for(host, address, bound_port)
    announce(host, bound_port, access)
    app = Guard(ExplorerApp(sources).app, access)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
