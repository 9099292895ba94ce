"""The explorer's page in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
driven by Selenium; nothing is downloaded). Skips with one line where no browser is installed.
A screenshot is left in tests/artefacts/ (gitignored)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from explorer_server import LAYERS, STRENGTHS, explorer, grid_records, write_jsonl
from helpers import REPO, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTEFACTS = REPO / "tests" / "artefacts"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium + chromedriver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--disable-gpu",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        state = driver.execute_script(
            "return [location.hash, document.body.dataset.rendered, document.body.dataset.error]"
        )
        raise AssertionError(f"page state (url, drawn, error): {state}") from None


def _rendered(driver: Any, fragment: str = "", absent: str = "\0") -> None:
    """Until the page has drawn the state its URL names (it sets data-rendered then), one
    whose URL has `fragment` and not `absent`."""
    _wait(
        driver,
        lambda d: d.execute_script(
            "const r = document.body.dataset.rendered; return r === location.hash && "
            "r.includes(arguments[0]) && !r.includes(arguments[1])",
            fragment,
            absent,
        ),
    )


def _listed(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.get_attribute("data-id") for e in driver.find_elements(By.CSS_SELECTOR, ".item")]


def _cell_ids(records: list[dict], concept: str, layer: int, strength: float, **judge: Any) -> set:
    return {
        r["id"]
        for r in records
        if r["concept"] == concept
        and r["config"]["layer"] == layer
        and r["config"]["strength"] == strength
        and all((r["judge"] or {}).get(k) == v for k, v in judge.items())
    }


def _check_page(driver: Any, url: str, records: list[dict], screenshot: Path | None) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver.get(url)
    _rendered(driver)
    cells = driver.find_elements(By.CSS_SELECTOR, "td.cell")
    assert len(cells) == len(LAYERS) * len(STRENGTHS)
    assert {(c.get_attribute("data-layer"), c.get_attribute("data-strength")) for c in cells} == {
        (str(layer), str(int(s)) if s.is_integer() else str(s))
        for layer in LAYERS
        for s in STRENGTHS
    }

    # One script, not find-then-click: the page redraws the heatmap as counts refresh.
    driver.execute_script(
        'document.querySelector(\'td.cell[data-layer="3"][data-strength="4"]\').click()'
    )
    _rendered(driver, "layer=3")
    assert set(_listed(driver)) == _cell_ids(records, "ocean", 3, 4.0)
    assert driver.execute_script("return window.pwned") is None  # answers are text, not HTML

    Select(driver.find_element(By.NAME, "answer")).select_by_value("pass")
    _rendered(driver, "answer=pass")
    assert set(_listed(driver)) == _cell_ids(records, "ocean", 3, 4.0, answer="pass")
    search = driver.find_element(By.NAME, "q")
    search.send_keys("lighthouse")
    _rendered(driver, "q=lighthouse")
    want = {i for i in _cell_ids(records, "ocean", 3, 4.0, answer="pass") if i.endswith("_t1")}
    assert set(_listed(driver)) == want and want

    search.send_keys(Keys.CONTROL, "a")
    search.send_keys(Keys.DELETE)  # as a user empties it (clear() fires no input event)
    _rendered(driver, "answer=pass", absent="q=")
    driver.find_element(By.ID, "cell-title").click()  # focus off the search box
    ActionChains(driver).send_keys("j").perform()
    _wait(driver, lambda d: "trial=" in d.current_url)
    first = _listed(driver)[0]
    _wait(driver, lambda d: first in d.find_element(By.ID, "trial-pane").text)
    pane = driver.find_element(By.ID, "trial-pane")
    assert "reasoning for t" in pane.text and "prompt version" in pane.text
    marks = [m.text.lower() for m in pane.find_elements(By.TAG_NAME, "mark")]
    assert marks and set(marks) == {"ocean"}
    trial_url = driver.current_url

    driver.back()  # the open trial replaced the cleared search; back returns to the search
    _rendered(driver, "q=lighthouse")
    assert set(_listed(driver)) == want
    driver.get("about:blank")  # a fresh page, then the shared URL
    driver.get(trial_url)
    _rendered(driver, "trial=")
    assert first in driver.find_element(By.ID, "trial-pane").text
    assert set(_listed(driver)) == _cell_ids(records, "ocean", 3, 4.0, answer="pass")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))


def test_server_page_heatmap_cells_filters_urls(browser: Any, tmp_path: Path) -> None:
    records = grid_records()
    write_jsonl(tmp_path / "a.jsonl", records)
    with explorer(str(tmp_path / "a.jsonl")) as server:
        _check_page(browser, server.url + "/", records, ARTEFACTS / "explorer.png")
        assert server.stop() == 0
    assert (ARTEFACTS / "explorer.png").stat().st_size > 10_000


def test_static_explorer_html_works_from_a_file(browser: Any, tmp_path: Path) -> None:
    records = grid_records()
    write_jsonl(tmp_path / "in" / "a.jsonl", records)
    result = run_cli("report", str(tmp_path / "in"), "--out", str(tmp_path / "r"), "--explorer")
    assert result.returncode == 0, result.stderr
    _check_page(
        browser,
        (tmp_path / "r" / "explorer.html").as_uri(),
        records,
        ARTEFACTS / "explorer-static.png",
    )
