"""Chromium journey of the Boxes page: it draws each box from the agent's keys (as the agent
writes them) and follows them: a GPU taken by another run, a box whose agent falls silent."""

import json
import time

import pytest
from browser import chromium, open_page, serving  # noqa: F401 (chromium: a fixture)
from test_viewer_boxes import KEYS, agent_state, write_box, write_history

from labstats.viewer import create_app
from labstats.viewer.sources import Source


@pytest.fixture
def app(url):
    return create_app({"local": Source("local", url)})


def test_the_boxes_page_draws_and_follows_the_state(chromium, app, lab, tmp_path):  # noqa: F811
    write_box(lab.redis, "local", agent_state(runs=["alice.20261205-120000-aaaaaa"]))
    write_history(lab.redis, "local")
    with serving(app) as base:
        page, errors = open_page(chromium, f"{base}/boxes")
        gpu0 = '#boxes article[data-source="local"] tr.gpu[data-index="0"]'
        assert "97 %" in page.inner_text(f"{gpu0} .util")
        assert page.inner_text(f"{gpu0} .processes") == "alice.20261205-120000-aaaaaa alice pid 4242"
        assert page.locator("#boxes svg.spark polyline").count() == 4
        assert page.inner_text("#boxes [data-time]") != ""  # the sample's time, in local time
        page.screenshot(path=str(tmp_path / "boxes.png"), full_page=True)

        # The agent writes a new sample: GPU 0 now used by bob's run at 12 %.
        state = agent_state(runs=["bob.20261205-130000-bbbbbb"])
        state["gpus"][0].update(
            util_percent=12.0, processes=[{"pid": 7, "user": "bob", "run": "bob.20261205-130000-bbbbbb"}]
        )
        written = time.monotonic()
        write_box(lab.redis, "local", state)
        page.wait_for_function(
            f"document.querySelector('{gpu0} .util').textContent.trim() === '12 %'", timeout=10_000
        )
        print(f"the page showed the new sample {time.monotonic() - written:.1f} s after it was written")
        assert page.inner_text(f"{gpu0} .processes") == "bob.20261205-130000-bbbbbb bob pid 7"
        link = page.get_attribute(f"{gpu0} .processes a", "href")
        assert link == "/runs/local/bob.20261205-130000-bbbbbb"

        # Markup in a sample stays text.
        state["gpus"][0]["processes"][0]["user"] = "<img src=x onerror=window.pwned=1>"
        write_box(lab.redis, "local", state, at=time.time() - 3600)
        page.wait_for_function(
            f"document.querySelector('{gpu0} .user').textContent.startsWith('<img')", timeout=10_000
        )
        assert page.locator("#boxes img").count() == 0
        assert page.evaluate("window.pwned") is None
        assert "h ago" in page.inner_text("#boxes .age") or "min ago" in page.inner_text("#boxes .age")

        # The agent's data gone: the box says so, the page goes on.
        lab.redis.delete(KEYS.box("local"))
        page.wait_for_selector('#boxes article[data-state="no-agent"]', timeout=10_000)
        assert "no box agent data" in page.inner_text("#boxes")
        assert (
            json.loads(page.evaluate("JSON.stringify(document.getElementById('boxes').dataset)")).get(
                "failed"
            )
            is None
        )
        assert errors == []
