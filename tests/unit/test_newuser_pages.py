"""What a new user ran into on this stop's pages, each kept fixed (the real app over the test's
redis-server; the alerts page also in Chromium): a chart's SVG and PNG download under a name of
their own; a report by one person says its author once, and an earlier version says which is
the newest; a new link leads back to what it shows, and so does the Links page; a box whose
host is its name says it once; the Alerts page fits the window however long a message's line."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from browser import chromium, open_page, serving  # noqa: F401 (chromium is a fixture)

import labstats
from labstats.format.keys import Keys
from labstats.viewer import create_app
from labstats.viewer.sources import Source


def log_run(tmp_path, name: str) -> str:
    with labstats.Stats(tmp_path / name, name=name, config={"lr": 0.1}, system_metrics=False) as stats:
        for step in range(30):
            stats.log(step=step, loss=float(np.exp(-step / 10)), **{"val/loss": float(step)})
    return stats.run_id


@pytest.fixture
def client(url):
    app = create_app({"local": Source("local", url, annotate_url=url)})
    app.testing = False
    return app.test_client()


def test_a_chart_s_svg_and_png_links_download_named_after_the_run_and_series(client, tmp_path):
    run_id = log_run(tmp_path, "figures")
    html = client.get(f"/runs/local/{run_id}").get_data(as_text=True)
    for fmt in ("svg", "png"):
        links = re.findall(
            rf'<a class="figure-link" href="[^"]*/figure\.{fmt}\?series=([^"&]+)[^"]*" download="([^"]+)"',
            html,
        )
        named = dict(links)
        assert named["loss"] == f"{run_id}-loss.{fmt}", links
        assert named["val/loss"] == f"{run_id}-val-loss.{fmt}", links  # no folder in a file name


def test_a_report_by_one_person_names_them_once_and_an_earlier_version_points_to_the_newest(client):
    made = client.post("/reports", data={"title": "Findings", "body": "first"})
    assert made.status_code == 303
    page = made.headers["Location"]
    edited = client.post(page, data={"title": "Findings", "body": "second", "base": "1"})
    assert edited.status_code == 303, edited.get_data(as_text=True)[:300]
    newest = client.get(page).get_data(as_text=True)
    assert "version 2 of 2" in newest
    assert "written by" not in newest  # the one who saved it wrote it: said once
    earlier = client.get(page + "?version=1").get_data(as_text=True)
    assert re.search(
        r'an earlier version</strong> \(<a class="newest-version" href="[^"]+">'
        r"open the newest, version 2</a>\)",
        earlier,
    )


def test_a_new_link_and_the_links_page_lead_back_to_what_it_shows(client, tmp_path):
    run_id = log_run(tmp_path, "shared")
    made = client.post("/share", data={"kind": "run", "run": f"local/{run_id}", "days": "3"})
    assert made.status_code == 200, made.get_data(as_text=True)[:300]
    html = made.get_data(as_text=True)
    assert f'<a class="share-back" href="/runs/local/{run_id}">Back to shared' in html
    assert "autofocus" in html  # the link is ready to copy
    report = client.post("/reports", data={"title": "Shared findings", "body": "text"}).headers["Location"]
    report_id = report.rsplit("/", 1)[1]
    assert client.post("/share", data={"kind": "report", "report": report_id}).status_code == 200
    links = client.get("/links").get_data(as_text=True)
    assert f'<a class="share-target" href="/runs/local/{run_id}">' in links
    assert f'<a class="share-target" href="/reports/{report_id}">' in links


def test_a_box_named_as_its_host_says_its_name_once(url, lab):
    state = {"cpu_percent": 5.0, "cpu_count": 2, "memory_used_bytes": 1, "memory_total_bytes": 2,
             "memory_available_bytes": 1, "disks": [], "gpu_status": "no GPU", "gpus": [],
             "runs": []}  # fmt: skip
    for source, host in (("local", "local"), ("other", "gpu7.example.org")):
        lab.redis.hset(Keys("ls").box(source), mapping={
            "at": repr(time.time()), "interval": "10", "host": host, "agent_version": labstats.__version__,
            "state": json.dumps(state)})  # fmt: skip
    app = create_app({"local": Source("local", url), "other": Source("other", url)})
    html = app.test_client().get("/boxes").get_data(as_text=True)
    heads = dict(re.findall(r'data-source="(\w+)"[^>]*>\s*<h2>(.*?)<span class="link', html, re.S))
    assert heads["local"].strip() == "local", heads
    assert '<span class="muted">gpu7.example.org</span>' in heads["other"], heads


def test_the_alerts_page_fits_the_window_and_only_the_level_is_red(tmp_path, url, chromium):  # noqa: F811
    try:  # the alerts service's history, where this stop's split of it puts it
        from labstats.ops.alert_history import History
        from labstats.ops.alert_messages import Message
    except ImportError:
        from labstats.ops.alerts import History, Message
    path = tmp_path / "alerts.sqlite"
    history = History(str(path))
    body = "The run crashed: " + "Traceback-line-without-spaces-" * 20 + "\n\nrun: exp (alice.1)"
    history.record(
        Message("box1", "alice.1", "exp", "crashed", "alert", "error", "crashed: exp", body), [], time.time()
    )
    app = create_app({"box1": Source("box1", url)}, config={"ALERTS_HISTORY_FILE": str(path)})
    with serving(app) as base:
        page, errors = open_page(chromium, base + "/alerts", viewport=(1280, 900))
        page.wait_for_selector("tr.alert")
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths  # no sideways scrolling
        colors = page.evaluate("""() => {
            const row = document.querySelector('tr.alert');
            const color = (selector) => getComputedStyle(row.querySelector(selector)).color;
            return [color('pre'), color('td.level')];
        }""")
        assert colors[0] != colors[1], colors  # the message in the text's colour, the level in red
        assert errors == []
        page.context.close()


def test_the_share_form_is_a_line_of_its_own_under_the_title_button_first(url, tmp_path, chromium):  # noqa: F811
    run_id = log_run(tmp_path, "share-form")
    app = create_app({"local": Source("local", url, annotate_url=url)})
    with serving(app) as base:
        page, errors = open_page(chromium, f"{base}/runs/local/{run_id}", viewport=(1280, 900))
        form = page.locator("form.share")
        title_x = page.locator("main h1").bounding_box()["x"]
        assert abs(form.bounding_box()["x"] - title_x) < 2  # not indented as an inline form
        button, days = (
            form.locator("button.share-button").bounding_box(),
            form.locator("input[name=days]").bounding_box(),
        )
        assert button["x"] < days["x"]  # "Share a read-only link, valid for 7 days"
        assert "valid for" in form.inner_text()
        assert errors == []
        page.context.close()


def test_the_edit_page_says_which_version_it_starts_from_and_how_config_keys_are_named(client):
    page = client.post("/reports", data={"title": "Findings", "body": "first"}).headers["Location"]
    form = client.get(page + "/edit").get_data(as_text=True)
    assert "<h1>Edit Findings</h1>" in form  # not "Edit: version 2", read as the version edited
    assert "From version 1; saving makes version 2, and the earlier ones stay." in form
    assert "(<code>color=lr</code>); a table column says <code>config:lr</code>" in form


def test_a_revoked_or_unknown_link_says_so_in_words_to_whoever_holds_it(client, tmp_path):
    run_id = log_run(tmp_path, "ended")
    made = client.post("/share", data={"kind": "run", "run": f"local/{run_id}"}).get_data(as_text=True)
    (token,) = set(re.findall(r"/s/([A-Za-z0-9_-]{43})", made))
    link_id = re.search(r'data-link="([0-9a-f]+)"', made).group(1)
    assert client.post(f"/links/{link_id}/revoke").status_code in (200, 303)
    revoked = client.get(f"/s/{token}")
    assert revoked.status_code == 410
    assert "<h1>This link has ended</h1>" in revoked.get_data(as_text=True)
    unknown = client.get("/s/" + "A" * 43)
    assert unknown.status_code == 404
    assert "<h1>This link does not work</h1>" in unknown.get_data(as_text=True)


def test_system_charts_added_while_the_run_goes_on_have_their_figure_links(url, tmp_path, chromium):  # noqa: F811
    app = create_app({"local": Source("local", url)})
    with serving(app) as base:
        with labstats.Stats(tmp_path / "live", system_metrics=3.0, flush_interval=0.05) as stats:
            stats.log(step=0, loss=1.0)
            stats.flush()
            page, errors = open_page(chromium, f"{base}/runs/local/{stats.run_id}")
            assert page.locator("#run-system .chart").count() == 0  # the charts come with the poll
            chart = "#run-system:not([hidden]) .chart[data-name='sys/cpu_percent']"
            page.wait_for_selector(chart, state="attached", timeout=15_000)
            head = page.locator("#run-system .chart[data-name='sys/cpu_percent'] .chart-head")
            links = head.locator("a.figure-link")
            assert links.all_text_contents() == ["SVG", "PNG"]  # the group is closed: not shown
            svg = links.first
            assert svg.get_attribute("download") == f"{stats.run_id}-sys-cpu_percent.svg"
            answer = page.request.get(base + svg.get_attribute("href"))
            assert answer.status == 200
            assert answer.headers["content-type"].startswith("image/svg+xml")
        assert errors == []
        page.context.close()
