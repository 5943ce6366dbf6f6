"""What the browser tests share: Chromium, the real server on a free port, one page.

Debian's ``chromium`` drives the pages (Playwright cannot download its own browsers here);
``require_browser()`` skips the calling test module with the reason when it or Playwright
is missing. ``.ci/run`` installs Chromium where it is absent.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CRYOSCOUT_CHROMIUM", "/usr/bin/chromium")


def require_browser() -> None:
    """Skip the calling module unless Playwright, Chromium, FastAPI and uvicorn are here."""
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run installs it)",
            allow_module_level=True,
        )
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(project: Path, data_roots: list[Path]) -> Iterator[dict]:
    """The real app on 127.0.0.1:<free port> over ``project``; yields ``{"url", "project"}``."""
    import uvicorn

    from cryoscout.app.server import create_app

    app = create_app(project, data_roots=data_roots)
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not srv.started:
        assert time.monotonic() - t0 < 30, "the server did not start"
        time.sleep(0.05)
    try:
        yield {"url": f"http://127.0.0.1:{config.port}", "project": project}
    finally:
        srv.should_exit = True
        thread.join(timeout=20)


@contextmanager
def open_page(url: str, on_page: Callable | None = None) -> Iterator:
    """One headless Chromium page on ``url``; page errors collect in ``page.errors``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(
            viewport={"width": 1400, "height": 900}, accept_downloads=True, base_url=url
        )
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        if on_page is not None:
            on_page(page)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def api(page, path: str):
    """GET a JSON endpoint through the page's own origin."""
    r = page.request.get(path)
    assert r.ok, f"{path}: {r.status} {r.text()}"
    return r.json()
