"""A real browser opens a built report: every figure renders, no JavaScript error, a screenshot.

Headless Debian Chromium driven by Playwright (``executable_path``, so Playwright
never downloads a browser). The README's test command installs ``chromium``
where apt can; the test skips, saying why, only where no browser is installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reports.build import build_report

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def test_report_renders_in_headless_chromium(small_run: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium installed (apt-get install chromium failed or was not possible)")
    out = tmp_path / "report.html"
    sections = build_report([small_run], out)
    n_figures = sum(1 for s in sections for c in s.charts if c.figure is not None)
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(out.resolve().as_uri(), wait_until="load")
            page.wait_for_function(
                "n => document.querySelectorAll('.plotly-graph-div .main-svg').length >= n",
                arg=n_figures,
                timeout=30_000,
            )
            missing = page.evaluate(
                "[...document.querySelectorAll('.plotly-graph-div')]"
                ".filter(d => !d.querySelector('svg.main-svg')).map(d => d.id)"
            )
            n_divs = page.evaluate("document.querySelectorAll('.plotly-graph-div').length")
            n_traces = page.evaluate(
                "document.querySelectorAll('.plotly-graph-div g.trace, "
                ".plotly-graph-div g.points').length"
            )
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert n_divs == n_figures and missing == []
    assert n_traces >= n_figures  # each figure drew data, not just empty axes
    assert errors == []
    assert shot.stat().st_size > 50_000
