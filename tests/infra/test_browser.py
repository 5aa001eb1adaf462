"""A real browser (Debian's Chromium, driven by Playwright) opens the viewer through nginx,
logs in, opens a run logged on the training box and finds its charts drawn with data.
The screenshot is kept in artifacts/ (a CI artifact)."""

import os
import shutil
from pathlib import Path

import pytest
from conftest import https_get, log_run_on_trainbox, wait_until, web_password, web_url
from playwright.sync_api import sync_playwright

testinfra_hosts = ["webbox"]

ARTIFACTS = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[2])) / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing (scripts/host-setup.sh installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_a_logged_in_browser_sees_the_run_charted(host, browser):
    name, run_id = log_run_on_trainbox("browser-check", steps=2000)
    assert wait_until(
        lambda: https_get(f"/api/runs/trainbox/{run_id}", auth=("labstats", web_password()))[0] == 200
    )
    context = browser.new_context(
        ignore_https_errors=True,  # the lab's certificate is self-signed
        http_credentials={"username": "labstats", "password": web_password()},
        viewport={"width": 1280, "height": 1400},
    )
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(web_url("/"))
    page.click(f'table.runs a:text-is("{name}")')
    page.wait_for_selector("#chart-0[data-rendered=true]", timeout=20_000)
    # The chart's data source has loaded the points from the API.
    points = page.wait_for_function(
        """() => {
            const models = Bokeh.documents.flatMap(d => [...d.all_models]);
            const sources = models.filter(m => "data_url" in m && m.data && "idx" in m.data);
            const sizes = sources.map(s => s.data.idx.length);
            return sizes.length > 0 && Math.min(...sizes) > 0 ? sizes : null;
        }""",
        timeout=20_000,
    ).json_value()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-run.png"), full_page=True)
    context.close()
    assert errors == []
    assert min(points) >= 1  # every chart has its points
    assert max(points) > 1000  # the 2,000-point series arrived (downsampled to ≤ 2,000)
