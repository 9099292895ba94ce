"""The explorer's page in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
driven by Selenium; nothing is downloaded). Skips with one line where no browser is installed.
A screenshot is left in tests/artefacts/ (gitignored)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from explorer_server import (
    CHROMEDRIVER,
    CHROMIUM,
    LAYERS,
    STRENGTHS,
    chrome,
    explorer,
    grid_records,
    logit_run,
    read_jsonl,
    study_records,
    write_jsonl,
)
from helpers import REPO, run_cli

from introspectd.protocol.trials import trial_seed
from introspectd.report import scale
from introspectd.run.db import Store

ARTEFACTS = REPO / "tests" / "artefacts"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium + chromedriver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser() -> Iterator[Any]:
    with chrome() as driver:
        yield driver


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


# --- search, colours, seeds and logit runs (issue 22) ----------------------------------------


def _search(driver: Any, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.NAME, "q")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)
    _rendered(driver, "q=" + text.replace(":", "%3A"))


def _column_totals(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [h.text for h in driver.find_elements(By.CSS_SELECTOR, ".column h3")]


def _check_search(driver: Any, url: str, records: list[dict]) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "#concept=ocean")
    _rendered(driver)
    ocean = [r for r in records if r["concept"] == "ocean"]
    _search(driver, "ocean")  # every ocean id holds "ocean"; only trial 0's answers do
    want = {r["id"] for r in ocean if r["config"]["trial"] == 0}
    assert set(_listed(driver)) == want and _column_totals(driver) == [
        "injection (6)",
        "control (6)",
    ]
    hits = driver.find_elements(By.CSS_SELECTOR, ".item mark.hit")
    assert len(hits) == len(want) and {h.text.lower() for h in hits} == {"ocean"}

    _search(driver, "seaweed")  # only in the judge's reasoning
    want = {r["id"] for r in ocean if r["was_injected"] and r["config"]["trial"] == 3}
    assert set(_listed(driver)) == want
    items = driver.find_elements(By.CSS_SELECTOR, ".item")
    assert all("judge:" in i.text and i.find_element(By.CSS_SELECTOR, "mark.hit") for i in items)
    items[0].click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#trial-pane .reasoning mark.hit"))

    _search(driver, "id:injection_L3")  # ids only through `id:`
    want = {r["id"] for r in ocean if "injection_L3" in r["id"]}
    assert set(_listed(driver)) == want and len(want) == 15


def _cell_points(records: list[dict], concept: str) -> dict[tuple[str, str], float]:
    """Net detection per cell in points, counted from the records themselves."""
    out = {}
    for layer in LAYERS:
        for s in STRENGTHS:
            cell = [
                r
                for r in records
                if r["concept"] == concept
                and r["judge"]
                and (r["config"]["layer"], r["config"]["strength"]) == (layer, s)
            ]
            inj = [r["judge"]["answer"] == "pass" for r in cell if r["was_injected"]]
            ctl = [r["judge"]["answer"] != "pass" for r in cell if not r["was_injected"]]
            key = (str(layer), f"{s:g}")
            out[key] = 100 * (sum(inj) / len(inj) - sum(ctl) / len(ctl))
    return out


def _heat_cells(driver: Any) -> list[dict[str, str]]:
    """Each cell's layer, strength, value line and computed background, read in one script:
    the server's page redraws its heatmap every 3 s, so element handles go stale."""
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('td.cell')].map((td) => ({"
            "layer: td.dataset.layer, strength: td.dataset.strength,"
            "value: td.firstChild.textContent, background: getComputedStyle(td).backgroundColor}))"
        )
    )


def _legend(driver: Any) -> tuple[str, str]:
    """The legend's text and its bar's gradient (one script, as `_heat_cells`)."""
    text, gradient = driver.execute_script(
        "const l = document.getElementById('legend');"
        "return [l.innerText, getComputedStyle(l.querySelector('.bar')).backgroundImage]"
    )
    return str(text), str(gradient)


def _check_colours(driver: Any, url: str, records: list[dict]) -> None:
    """One scale (report/scale.py) and one unit (points), with a legend saying so."""

    driver.get(url + "#concept=ocean")
    _rendered(driver)
    expected = _cell_points(records, "ocean")
    assert {v > 0 for v in expected.values()} == {True, False} and min(expected.values()) < 0
    cells = _heat_cells(driver)
    assert len(cells) == len(expected)
    for cell in cells:
        value = expected[(cell["layer"], cell["strength"])]
        assert cell["value"] == scale.fmt_points(value)
        shown = cell["background"]
        r, g, b = (int(x) for x in shown[shown.index("(") + 1 : shown.index(")")].split(",")[:3])
        want = scale.colour_at(value)
        assert max(abs(x - y) for x, y in zip((r, g, b), want, strict=True)) <= 1, (value, shown)
        if value != 0:
            assert (b > r) == (value > 0), (value, shown)  # blue: positive, as the figures
    legend, gradient = _legend(driver)
    assert scale.UNIT in legend and "+100" in legend and "-100" in legend
    assert gradient.count("rgb(") == len(scale.STOPS)
    assert f"rgb({', '.join(map(str, scale.colour_at(-scale.LIMIT)))})" in gradient


def test_search_colours_and_legend_on_the_server(browser: Any, tmp_path: Path) -> None:
    records = study_records()
    write_jsonl(tmp_path / "a.jsonl", records)
    with explorer(str(tmp_path / "a.jsonl")) as server:
        _check_search(browser, server.url + "/", records)
        _check_colours(browser, server.url + "/", records)


def test_search_colours_and_legend_in_explorer_html(browser: Any, tmp_path: Path) -> None:
    records = study_records()
    write_jsonl(tmp_path / "in" / "a.jsonl", records)
    result = run_cli("report", str(tmp_path / "in"), "--out", str(tmp_path / "r"), "--explorer")
    assert result.returncode == 0, result.stderr
    url = (tmp_path / "r" / "explorer.html").as_uri()
    _check_search(browser, url, records)
    _check_colours(browser, url, records)


@pytest.fixture(scope="module")
def logit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return logit_run(tmp_path_factory.mktemp("logit"))


def _unrounded_seed(folder: Path) -> tuple[str, int]:
    """A trial whose seed a JavaScript number cannot hold, and that seed."""
    store = Store(folder / "state.sqlite", read_only=True)
    try:
        run = store.get_run()
    finally:
        store.close()
    assert run is not None
    for r in read_jsonl(folder):
        seed = trial_seed(run.spec["seed"], r["id"].removeprefix(f"{run.stamp}_"))
        if int(float(seed)) != seed:
            return r["id"], seed
    raise AssertionError("every seed fits a double")


def _check_seed(driver: Any, url: str, folder: Path) -> None:
    from selenium.webdriver.common.by import By

    trial_id, seed = _unrounded_seed(folder)
    driver.get(url + f"#concept=ocean&trial={trial_id}")
    _rendered(driver, "trial=")
    shown = driver.find_element(By.XPATH, "//dt[text()='seed']/following-sibling::dd[1]").text
    assert shown == str(seed)  # not 4723781911357946000 for 4723781911357945726


def _check_logit(driver: Any, url: str, folder: Path) -> None:
    """The heatmap shows mean p_yes, injection − control (detection question), in points; a
    cell's list and a trial show each trial's p_yes."""
    from selenium.webdriver.common.by import By

    records = [r for r in read_jsonl(folder) if "factual" not in r]
    driver.get(url + "#concept=ocean")
    _rendered(driver)
    measure, title = driver.execute_script(  # one script: the heatmap is redrawn every 3 s
        "return [document.querySelector('table.heat').dataset.measure,"
        "document.getElementById('heatmap-title').textContent]"
    )
    assert measure == "logit" and "p_yes" in title
    cells = _heat_cells(driver)
    assert len(cells) == 2
    for shown in cells:
        cell = [r for r in records if str(r["config"]["layer"]) == shown["layer"]]

        def mean(arm: str, cell: list[dict] = cell) -> float:
            ps = [r["p_yes"] for r in cell if r["arm"] == arm]
            return sum(ps) / len(ps)

        assert shown["value"] == scale.fmt_points(100 * (mean("injection") - mean("control")))
    driver.execute_script("document.querySelector('td.cell[data-layer=\"4\"]').click()")
    _rendered(driver, "layer=4")
    by_id = {r["id"]: r for r in read_jsonl(folder)}
    items = driver.find_elements(By.CSS_SELECTOR, ".item")
    assert len(items) == 2 * 20  # a page of each arm's 2 trials and 20 factual questions
    for item in items:
        p_yes = by_id[item.get_attribute("data-id")]["p_yes"]
        assert item.text.startswith(f"p_yes {100 * p_yes:.1f}%"), item.text
    items[-1].click()  # a factual control question
    _wait(driver, lambda d: "p_yes" in d.find_element(By.ID, "trial-pane").text)
    pane = driver.find_element(By.ID, "trial-pane").text
    record = by_id[items[-1].get_attribute("data-id")]
    assert "nothing to judge" in pane and f"{100 * record['p_yes']:.1f}%" in pane
    assert record["factual"]["text"] in pane


def test_seed_and_logit_view_on_the_server(browser: Any, logit: tuple[Path, Path]) -> None:
    plan, folder = logit
    with explorer("--plan", str(plan)) as server:
        _check_seed(browser, server.url + "/", folder)
        _check_logit(browser, server.url + "/", folder)


def test_seed_and_logit_view_in_explorer_html(
    browser: Any, logit: tuple[Path, Path], tmp_path: Path
) -> None:
    _, folder = logit  # the run database beside the files gives the seeds
    result = run_cli("report", str(folder), "--out", str(tmp_path / "r"), "--explorer")
    assert result.returncode == 0, result.stderr
    url = (tmp_path / "r" / "explorer.html").as_uri()
    _check_seed(browser, url, folder)
    _check_logit(browser, url, folder)


# --- the first mention of the concept (issue 25) ---------------------------------------------

WAVES = "🌊 Waves rolled in. I notice the ocean, and the sea."  # the emoji: 2 UTF-16 units
CALM = "Calm. I see the sea, then the ocean."


def _mention_records() -> list[dict]:
    """The grid, with two answers of ocean, layer 1, strength 2: one without `mention` (the
    built-in list finds "Waves" first), one whose record says its first mention is "ocean", as
    a plan's `[mentions] ocean = ["ocean"]` would (the built-in list would say "sea")."""
    records = grid_records()
    for r in records:
        if r["id"] == "s_ocean_injection_L1_S2.0_t0":
            r["response"] = WAVES
        elif r["id"] == "s_ocean_control_L1_S2.0_t0":
            r["response"] = CALM
            r["mention"] = {"first_char": CALM.index("ocean"), "text": "ocean"}
    return records


def _first_mention(driver: Any, url: str, trial_id: str, search: str = "") -> list[Any]:
    """The marked mention's text, the answer's text before it, every other mark's class and
    text, and the "first mention" fact, once the trial is drawn."""
    query = f"&q={search}" if search else ""
    driver.get("about:blank")
    driver.get(url + f"#concept=ocean{query}&trial={trial_id}")
    _rendered(driver, "trial=")
    return list(
        driver.execute_script(
            "const m = document.querySelector('#trial-pane pre mark.mention');"
            "if (!m) return null;"
            "const before = document.createRange();"
            "before.setStart(m.closest('pre'), 0); before.setEndBefore(m);"
            "const others = [...document.querySelectorAll('#trial-pane pre mark:not(.mention)')];"
            "const fact = [...document.querySelectorAll('#trial-pane dt')]"
            "  .find((dt) => dt.textContent === 'first mention').nextElementSibling.textContent;"
            "return [m.textContent, before.toString(),"
            "  others.map((o) => [o.className, o.textContent]), fact,"
            "  document.querySelectorAll('#trial-pane mark.mention').length];"
        )
    )


def _check_mentions(driver: Any, url: str) -> None:
    got = _first_mention(driver, url, "s_ocean_injection_L1_S2.0_t0", search="sea")
    # Python's offset 2 (code points) is the page's 3 (UTF-16): the mark still lands on "Waves".
    assert got[:2] == ["Waves", "🌊 "]
    assert got[2] == [["", "ocean"], ["hit", "sea"]]  # the concept word, the search: apart
    assert got[3:] == ["“Waves” at character 2", 1]
    got = _first_mention(driver, url, "s_ocean_control_L1_S2.0_t0")
    assert got == ["ocean", "Calm. I see the sea, then the ", [], "“ocean” at character 30", 1]


def test_first_mention_marked_on_the_server(browser: Any, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", _mention_records())
    with explorer(str(tmp_path / "a.jsonl")) as server:
        _check_mentions(browser, server.url + "/")


def test_first_mention_marked_in_explorer_html(browser: Any, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", _mention_records())
    result = run_cli("report", str(tmp_path / "in"), "--out", str(tmp_path / "r"), "--explorer")
    assert result.returncode == 0, result.stderr
    _check_mentions(browser, (tmp_path / "r" / "explorer.html").as_uri())
