"""The browser page (GET /) in headless Chromium: upload a lot, see the grid, open one wafer.

Uses Debian's /usr/bin/chromium through Playwright (never `playwright install`: no download). Without
Chromium or Playwright the test is skipped and says why; .ci/run installs Chromium.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from servetools import default_app, running_server

CHROMIUM = os.environ.get("WAFERSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "serve_page.png"


def _browser_or_skip():
    if not Path(CHROMIUM).is_file():
        reason = f"Chromium is not installed ({CHROMIUM} missing): apt-get install -y chromium"
        print(reason)
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright for Python is not installed: pip install -e .[test]"
        print(reason)
        pytest.skip(reason)
    return sync_playwright


def test_page_upload_grid_and_detail(tmp_path):
    sync_playwright = _browser_or_skip()
    import waferscope.data as wd
    from waferscope.data.io_parquet import write_parquet

    lot = wd.load("synthetic:n=36,seed=7")
    path = tmp_path / "lot_0007.parquet"
    write_parquet(lot, path)
    app = default_app()
    with running_server(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # the page must not reach beyond this server (no CDN): fail any other request
            foreign = []
            page.route("**/*", lambda route: (route.continue_() if route.request.url.startswith(url)
                                              else (foreign.append(route.request.url), route.abort())))
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('models').textContent.includes('classifier')")
            models = page.inner_text("#models")  # the real model names, never "bundled None"
            assert "None" not in models and "bundled (" in models
            page.set_input_files("#file", str(path))
            page.wait_for_selector(".wafer", timeout=20000)
            page.wait_for_function("document.getElementById('status').textContent.includes('36 wafers')")
            cards = page.query_selector_all(".wafer")
            assert len(cards) == 36
            shown = [c.get_attribute("data-class") for c in cards]
            ids = [c.get_attribute("data-id") for c in cards]
            assert ids == list(lot.ids)
            # the grid shows the service's classes for these maps
            from fastapi.testclient import TestClient

            expected = [w["class"] for w in TestClient(app).post(
                "/v1/classify", json={"maps": [m.tolist() for m in lot.maps]}).json()["wafers"]]
            assert shown == expected
            legend = page.inner_text("#legend")
            assert all(c in legend for c in set(expected))
            # every card drew its map: a canvas at the die grid's size
            w, h = page.eval_on_selector(".wafer canvas", "c => [c.width, c.height]")
            assert (h, w) == lot.maps[0].shape
            # open one wafer
            cards[3].click()
            page.wait_for_selector("#detail[data-ready='1']", timeout=20000)
            assert page.inner_text("#detail-id") == lot.ids[3]
            assert expected[3] in page.inner_text("#detail-class")
            assert len(page.query_selector_all("#probs tr")) == 9
            assert "anomaly score" in page.inner_text("#detail-score")
            painted = page.evaluate("""() => ['cv-map','cv-cam','cv-anom'].map(id => {
                const c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; })""")
            assert all(n > 0 for n in painted), painted
            assert not errors, errors
            assert not foreign, foreign
            if os.environ.get("WAFERSCOPE_SCREENSHOT"):  # regenerate docs/img/serve_page.png
                page.screenshot(path=str(SCREENSHOT), full_page=False)
            # /docs renders the API reference with every other host unreachable (an air-gapped network)
            page.goto(url + "/docs")
            page.wait_for_function("document.getElementById('ops').textContent.includes('/v1/classify')", timeout=10000)
            assert "/v1/score" in page.inner_text("#ops") and "heatmap" in page.inner_text("#ops")
            assert not foreign, foreign
            # a page on another origin cannot make this browser upload to the service: the no-cors
            # form POST it can send arrives with its Origin and is refused (403) before it is read
            evil = browser.new_page()
            seen = []
            evil.on("response", lambda r: seen.append((r.url, r.status)))
            # another origin on loopback (Chromium itself blocks public pages from reaching loopback)
            evil.goto(url.replace("127.0.0.1", "localhost") + "/health")
            evil.evaluate("""async (target) => {
                const fd = new FormData(); fd.append("file", new Blob([new Uint8Array(64)]), "a.npy");
                try { await fetch(target, {method: "POST", mode: "no-cors", body: fd}); } catch (e) {} }""",
                          url + "/v1/classify")
            evil.wait_for_timeout(200)
            assert (url + "/v1/classify", 403) in seen, seen
        finally:
            browser.close()
