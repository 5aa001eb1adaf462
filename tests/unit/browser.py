"""A real browser on a real viewer, inside the unit suite: Debian's Chromium (driven by
Playwright) against the Flask app served by werkzeug on loopback, over the test's real
redis-server. The lab's browser tests (tests/infra) go through nginx and uWSGI as well;
these give the page journeys a fast loop.

    from browser import chromium, open_page, serving   # chromium is a fixture

    with serving(create_app({"local": Source("local", url)})) as base:
        page, errors = open_page(chromium, base + "/")
        ...
        assert errors == []
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    assert path, "Debian's chromium is missing (scripts/host-setup.sh installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def serving(app) -> Iterator[str]:
    """The app served on a free loopback port (threads: a page's parallel requests), its base
    URL yielded. ``localhost``, not 127.0.0.1: Chromium keeps the viewer's Secure,
    __Host- session cookie on http://localhost only."""
    app.testing = False  # errors handled as in production
    server = make_server("localhost", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def open_page(chromium, url: str, *, context=None, viewport=(1280, 1400)):
    """A new page at ``url`` with the errors its scripts raise collected (assert they stay
    empty). A context of your own keeps a login between pages."""
    context = context or chromium.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page, errors


def log_in(page, base: str, user: str, password: str) -> None:
    """Log in through the viewer's own login form, as a person does."""
    page.goto(base + "/login")
    page.fill('input[name="user"]', user)
    page.fill('input[name="password"]', password)
    page.click("main form button")
    page.wait_for_load_state()
