"""The web page in a real (headless) Chromium: choose a photo, see the result grid.

Uses the system's /usr/bin/chromium (the Debian package; `playwright install` is never run) and
a real uvicorn server on a free localhost port, so the page, its JavaScript and the multipart
upload are exercised exactly as a shopper's browser would. Leaves a screenshot in
reports/browser/search.png for a person to look at.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from serving_helpers import build_index, free_port

from shoplens.config import compose_config

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "reports" / "browser" / "search.png"

pytestmark = [
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"{CHROMIUM} not installed (apt-get install chromium) - browser test skipped",
    ),
]


@pytest.fixture(scope="module")
def server(trained):
    """uvicorn serving create_app(cfg) in a thread; yields (base URL, config)."""
    uvicorn = pytest.importorskip("uvicorn")
    from shoplens.serving.app import create_app

    cfg = compose_config(build_index(trained))
    port = free_port()
    config = uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", cfg
    srv.should_exit = True
    thread.join(10)


def test_upload_a_photo_and_see_matching_products(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    url, cfg = server
    row = pd.read_parquet(Path(cfg.paths.catalog_dir) / "manifest.parquet").iloc[5]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(url)
            page.wait_for_function("document.querySelector('#category').options.length > 1")
            page.set_input_files("#file", row["path"])
            page.wait_for_selector("#results .card")
            page.wait_for_function(
                "[...document.querySelectorAll('#results img')].every(i => i.complete)"
            )
            cards = page.locator("#results .card")
            assert cards.count() == 12
            assert row["product_id"] in cards.first.inner_text()
            assert "matches" in page.locator("#status").inner_text()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
