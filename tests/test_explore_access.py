"""Who the explorer answers: on a loopback address only requests sent to its own names (a
DNS-rebinding page's are refused), and on the network only requests with its token. Raw HTTP,
then real Chromium."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import pytest
from explorer_server import CHROMEDRIVER, CHROMIUM, chrome, explorer, grid_records, write_jsonl


def _status(port: int, path: str, host: str | None = None, **headers: str) -> tuple[int, str]:
    """(status, body) of GET path on 127.0.0.1:port with that Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.fixture
def records_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "a.jsonl", grid_records())


def test_a_foreign_host_header_is_refused(records_file: Path) -> None:
    with explorer(str(records_file)) as server:
        port = server.port
        assert port is not None
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", None):
            assert _status(port, "/api/meta", host)[0] == 200, host
        for host in (f"rebind.example:{port}", "rebind.example", f"127.0.0.1:{port + 1}", ""):
            for path in ("/", "/api/trials?concept=ocean"):
                status, body = _status(port, path, host)
                assert status == 403, (host, path)
                assert body.startswith("forbidden:") and body.count("\n") == 1
                assert "lighthouse" not in body
        assert server.stop() == 0


def test_serving_the_network_warns_and_needs_the_token(records_file: Path) -> None:
    with explorer(str(records_file), "--host", "0.0.0.0") as server:
        port, token = server.port, server.token
        assert port is not None and token, server.printed
        assert _status(port, "/api/meta")[0] == 403
        assert _status(port, "/api/meta?token=wrong")[0] == 403
        assert _status(port, "/", f"anything.example:{port}")[0] == 403
        assert _status(port, f"/?token={token}", f"anything.example:{port}")[0] == 200
        assert _status(port, "/api/meta", **{"X-Introspectd-Token": token})[0] == 200
        assert server.stop() == 0
        warning = server.proc.stderr.read() if server.proc.stderr else ""
    assert "warning: --host 0.0.0.0" in warning and "network" in warning


needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium + chromedriver (apt-get install chromium chromium-driver)",
)


def _page_state(driver: Any) -> tuple[str, str | None]:
    return driver.find_element("tag name", "body").text, driver.execute_script(
        "return document.body.dataset.heatmap || null"
    )


@needs_chromium
def test_a_rebinding_page_reads_nothing_in_chromium(records_file: Path) -> None:
    """The browser sends rebind.example's requests to 127.0.0.1, as after a DNS rebinding:
    neither the page nor the API answers them."""
    from selenium.webdriver.support.ui import WebDriverWait

    with (
        explorer(str(records_file)) as server,
        chrome("--host-resolver-rules=MAP rebind.example 127.0.0.1") as driver,
    ):
        driver.get(f"http://rebind.example:{server.port}/")
        text, heatmap = _page_state(driver)
        assert text.startswith("forbidden:") and heatmap is None
        fetched = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/api/trials?concept=ocean').then(async r => done([r.status, await r.text()]))"
        )
        assert fetched[0] == 403 and "lighthouse" not in fetched[1]
        driver.get(f"http://localhost:{server.port}/")  # the explorer's own name still works
        WebDriverWait(driver, 30).until(lambda d: _page_state(d)[1] == "ready")


@needs_chromium
def test_the_network_page_works_with_its_token_only(records_file: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    with explorer(str(records_file), "--host", "0.0.0.0") as server, chrome() as driver:
        driver.get(f"{server.url}/#concept=ocean")
        assert _page_state(driver)[0].startswith("forbidden:")
        driver.get(f"{server.url}/?token={server.token}#concept=ocean&layer=3&strength=4")
        WebDriverWait(driver, 30).until(lambda d: _page_state(d)[1] == "ready")
        # The page's own API requests carry the token: the cell's transcripts are listed.
        WebDriverWait(driver, 30).until(
            lambda d: len(d.find_elements("css selector", ".item")) == 10
        )
