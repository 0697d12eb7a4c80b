"""report.html in a real browser: headless Chromium, driven by Selenium, over a generated report.

No console errors, every figure decodes, every in-page link has a target, and the tables stay
readable at 1,280 and 390 px wide (nothing overflows the page outside the scrolling table boxes).
Needs the Debian packages chromium and chromium-driver (`make test` installs them where apt-get
works); without them the test is skipped, and under CI=true it fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.report import write_report

#: Flags that work in containers without a display, a GPU, a sandbox or a network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WIDTHS = (1280, 390)


def _missing(what: str) -> None:
    message = f"{what}; install with `apt-get install -y chromium chromium-driver` and `pip install selenium`"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (required under CI=true)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _missing("chromium or chromedriver is not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    options = Options()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> Path:
    from test_report import make_fake_run

    run_dir = make_fake_run(
        tmp_path_factory.mktemp("browser-run"),
        ["gaussian", "kde", "gan", "supervised_diffusion"],
        ["8gaussians", "pinwheel", "moons"],
        [0, 1],
        failed=("kde", "pinwheel"),
    )
    write_report(run_dir, formats=("md", "html"))
    return run_dir / "report.html"


def _load(driver, page: Path, width: int) -> None:
    """Open ``page`` in a viewport ``width`` CSS pixels wide (device metrics, not the window size)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    driver.get(page.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"


def test_no_console_errors_and_every_figure_decodes(browser, report_page):
    _load(browser, report_page, 1280)
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    figures = sorted(p.name for p in (report_page.parent / "figures").glob("*.png"))
    assert len(images) == len(figures) >= 4  # samples, densities, speed/quality, critical difference
    assert all(complete and w > 0 and h > 0 for _, complete, w, h in images), images
    assert "fig_critical_difference" in {alt for alt, *_ in images}


def test_every_navigation_anchor_resolves(browser, report_page):
    _load(browser, report_page, 1280)
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));"
    )
    internal = [h for h in links if h.startswith("#")]
    assert len(internal) >= 5 and len(internal) == len(links)  # nothing leaves the page
    unresolved = browser.execute_script(
        "return arguments[0].filter(h => !document.getElementById(decodeURIComponent(h.slice(1))));", internal
    )
    assert not unresolved, unresolved
    # the report opens with the answer: the summary comes before the tables and the configuration
    order = browser.execute_script(
        "return ['summary', 'tables', 'run'].map(id => document.getElementById(id).getBoundingClientRect().top);"
    )
    assert order == sorted(order)


@pytest.mark.parametrize("width", WIDTHS)
def test_tables_readable_without_page_overflow(browser, report_page, width):
    _load(browser, report_page, width)
    layout = browser.execute_script("""
        const doc = document.documentElement;
        const tables = Array.from(document.querySelectorAll('table'));
        const boxes = tables.map(t => t.closest('.scroll'));
        const inner = window.innerWidth;
        return {
          viewport: inner, pageWidth: doc.scrollWidth,
          unboxed: tables.filter((t, i) => !boxes[i] && t.getBoundingClientRect().right > inner + 1).length,
          boxRights: boxes.filter(b => b).map(b => b.getBoundingClientRect().right),
          boxWidths: boxes.filter(b => b).map(b => b.clientWidth),
          fonts: tables.map(t => parseFloat(getComputedStyle(t.querySelector('td, th')).fontSize)),
          wide: Array.from(document.body.querySelectorAll('*')).filter(e => !e.closest('.scroll')
                  && e.getBoundingClientRect().right > inner + 1).map(e => e.tagName + '.' + e.className),
        };""")
    assert layout["viewport"] == width
    assert layout["pageWidth"] <= width, layout["wide"][:10]  # no horizontal scrolling of the page itself
    assert not layout["wide"] and not layout["unboxed"], layout["wide"][:10]
    assert layout["boxRights"] and max(layout["boxRights"]) <= width + 1
    assert min(layout["boxWidths"]) >= min(300, width - 60)  # each table box uses the page's width
    assert min(layout["fonts"]) >= 11  # CSS pixels: legible without zooming


@pytest.mark.parametrize("width", WIDTHS)
def test_the_verdict_opens_the_page_and_reads_at_any_width(browser, report_page, width):
    _load(browser, report_page, width)
    verdict = browser.execute_script("""
        const list = document.querySelector('ul.verdict');
        const heading = document.getElementById('verdict');
        const items = Array.from(list.querySelectorAll('li'));
        const box = list.getBoundingClientRect();
        return {
          firstSection: document.querySelector('h2').id, headingTop: heading.getBoundingClientRect().top,
          left: box.left, right: box.right, height: window.innerHeight, inner: window.innerWidth,
          items: items.map(li => li.innerText), font: parseFloat(getComputedStyle(items[0]).fontSize),
          overflowing: items.filter(li => li.scrollWidth > li.clientWidth + 1).length,
        };""")
    assert verdict["firstSection"] == "verdict"
    assert verdict["headingTop"] < verdict["height"] / 2  # on the first screen, not below the fold
    assert 0 <= verdict["left"] and verdict["right"] <= verdict["inner"] and not verdict["overflowing"]
    assert [item.split(" (")[0] for item in verdict["items"]] == [
        "Density",
        "Sample quality",
        "Fit time",
        "Sampling rate",
    ]
    assert "No likelihood (not ranked): gan" in verdict["items"][0]
    assert verdict["font"] >= 14  # CSS pixels: the answer reads without zooming
