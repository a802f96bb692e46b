"""The listening report in a real headless browser: Debian's Chromium driven by Playwright (issue #13).

No browser is downloaded (``playwright install`` is never run): the test launches /usr/bin/chromium, which `.ci/run`
installs, and skips only when that binary is absent. The screenshot goes to $WAVALIGN_SCREENSHOT (default: the
test's tmp folder).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
import soundfile as sf
from test_report import eval_run

from evalsuite.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio"]
INJECTED = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2"> Paris </table>'

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's chromium is not installed "
                                "(/usr/bin/chromium; apt-get install chromium, as .ci/run does)")


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


def _ids(page) -> list[str]:
    return page.eval_on_selector_all("table.items > tbody > tr", "rows => rows.map(r => r.cells[1].textContent)")


def _visible_ids(page) -> list[str]:
    return page.eval_on_selector_all("table.items > tbody > tr:not([hidden])",
                                     "rows => rows.map(r => r.cells[1].textContent)")


def test_report_of_a_real_eval_run_in_chromium(page, tmp_path):
    run = eval_run(tmp_path, "model-a", {"q1": INJECTED, "q2": "Jupiter", "q3": "B"},
                   {"q1": 0.5, "q2": 1.25, "q3": 0.75})
    (run / "responses" / "q2.wav").unlink()  # a missing answer file: a marked cell and a failed row, no player
    report = tmp_path / "report.html"
    write_report([run], report)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(r.url))
    page.goto(report.as_uri())

    # every player loads, with the real length of its file
    page.wait_for_function("Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)",
                           timeout=15000)
    players = page.eval_on_selector_all("audio", "els => els.map(a => [a.getAttribute('src'), a.duration])")
    assert len(players) == 5  # 3 questions + the 2 answers whose file is there
    assert "missing: responses/q2.wav" in page.inner_text("table.items > tbody > tr:nth-child(2)")
    for src, duration in players:
        path = report.parent / urllib.parse.unquote(src)
        assert duration == pytest.approx(sf.info(str(path)).duration, abs=0.01), src

    # the injected markup is text: nothing ran, nothing was built from it
    assert page.evaluate("window.__pwned") is None
    assert INJECTED.split(" Paris")[0] in page.inner_text("table.items > tbody > tr:first-child > td.answer")
    assert page.eval_on_selector_all("table.items img", "els => els.length") == 0

    # sorting by a score column reorders the rows (accuracy: q1 1, q2 0, q3 1)
    assert _ids(page) == ["q1", "q2", "q3"]
    header = page.locator("table.items th", has_text="accuracy")
    header.click()
    assert _ids(page)[0] == "q2"
    header.click()
    assert _ids(page)[-1] == "q2"
    page.locator("table.items th", has_text="#").click()
    assert _ids(page) == ["q1", "q2", "q3"]

    # the filter, the category and failures only hide rows
    page.fill("input.filter", "jupiter")
    assert _visible_ids(page) == ["q2"] and "1 of 3 rows shown" in page.inner_text(".count")
    page.fill("input.filter", "")
    page.select_option("select.category", "mcq")
    assert _visible_ids(page) == ["q3"]
    page.select_option("select.category", "")
    page.check("input.failures-only")
    assert _visible_ids(page) == ["q2"]
    page.uncheck("input.failures-only")
    assert _visible_ids(page) == ["q1", "q2", "q3"]

    # keyboard: j/k move the current row, space plays its answer
    page.locator("h1").click()
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.eval_on_selector("tr.current", "r => r.cells[1].textContent") == "q2"
    page.keyboard.press("k")
    assert page.eval_on_selector("tr.current", "r => r.cells[1].textContent") == "q1"
    page.keyboard.press(" ")
    page.wait_for_function("!document.querySelector('tr.current td.answer audio').paused", timeout=5000)

    shot = Path(os.environ.get("WAVALIGN_SCREENSHOT") or tmp_path / "report.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert problems == []


def test_two_runs_compared_in_chromium(page, tmp_path):
    a = eval_run(tmp_path, "model-a", {"q1": "It is Paris.", "q2": "Jupiter", "q3": "A"}, {"q1": 0.5})
    b = eval_run(tmp_path, "model-b", {"q1": "It is Paris.", "q2": "mars", "q3": "B"}, {"q1": 0.6, "q3": 0.9})
    report = tmp_path / "sub" / "compare.html"
    write_report([a, b], report, embed=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(report.as_uri())
    page.wait_for_function("Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)",
                           timeout=15000)
    durations = page.eval_on_selector_all("audio", "els => els.map(a => Math.round(a.duration * 100) / 100)")
    assert sorted(durations) == sorted([0.4, 0.4, 0.4, 0.5, 0.6, 0.9])  # questions, a's q1, b's q1 and q3
    assert page.eval_on_selector_all("ol.top li a", "els => els.map(a => a.textContent)") == ["q2", "q3"]
    page.locator("table.items th", has_text="difference").click()
    page.locator("table.items th", has_text="difference").click()  # descending: what differs most first
    assert _ids(page)[0] in ("q2", "q3") and _ids(page)[-1] == "q1"
    assert errors == []
