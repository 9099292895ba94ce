"""`introspectd explore`: a local, read-only web server over one or more `Source`s.

Starlette answers a JSON API and the one page (assets/); uvicorn serves it on a socket bound
here first, so a port in use is one line (BadInput) before anything starts. Uvicorn's own
SIGINT/SIGTERM handling stops it cleanly; `serve` then returns.
"""

from __future__ import annotations

import errno
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
from introspectd.explore.assets import page_html
from introspectd.explore.sources import Source
from introspectd.run import browse

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
        return kind(value)
    except ValueError:
        raise _BadQuery(f"{name}: expected a number, got {value!r}") from None


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
        text=q.get("q") or None,
    )


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
                return JSONResponse({"error": f"no model {model!r}"}, status_code=404)

            def locked() -> Any:
                with source.lock:
                    return handler(request, source)

            try:
                body = await run_in_threadpool(locked)
            except _BadQuery as e:
                return JSONResponse({"error": str(e)}, status_code=400)
            if body is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(body, headers={"Cache-Control": "no-store"})

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
            "items": [{**t, "response": (t["response"] or "")[:300]} for t in items],
        }

    def trial(self, request: Request, source: Source) -> dict[str, Any] | None:
        found = browse.get_trial(source.store, request.query_params.get("id", ""))
        if found is None:
            return None
        return {
            **found,
            "model": source.model,
            "seed": source.seed(found["id"]),
            "config": source.trial_config(found),
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


def serve(sources: list[Source], host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; prints the URL first (stdout, flushed)."""
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"explorer at http://{shown}:{bound_port}/ (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(
        ExplorerApp(sources).app, log_level="warning", access_log=False, lifespan="off"
    )
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
