"""Chromium journeys of the chart controls and of live pages (issue 27), the way a person
uses them: on a compare page, each control changes the charts in place (no navigation: a
marker set on the window survives), keeps the compared runs, writes itself into the URL and
comes back after a reload; an open run page shows the series, text and media names the run
logs after it opened within about a second, its counts and latest values following, at
about one request a second."""

import time
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from browser import chromium, open_page, serving  # noqa: F401 (chromium: a fixture)

import labstats
from labstats.viewer import create_app
from labstats.viewer.sources import Source

# The Bokeh documents of the page: the data URLs of their sources, whether each chart's y is
# a log scale, whether the smoothed lines show.
CHART_STATE = """() => {
  const models = Bokeh.documents.flatMap((d) => [...d.all_models]);
  return {
    urls: models.filter((m) => "data_url" in m).map((m) => m.data_url),
    log: Bokeh.documents.flatMap((d) => d.roots()).map((r) => r.y_scale.type === "LogScale"),
    smoothed: models.filter((m) => m.name === "smooth-0").map((m) => m.visible),
  };
}"""


@pytest.fixture
def app(url, tmp_path, monkeypatch):
    monkeypatch.setenv("LABSTATS_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    return create_app({"local": Source("local", url, artifact_dir=str(tmp_path / "artifacts"))})


def _sweep(tmp_path, runs: int = 3) -> list[str]:
    ids = []
    for k in range(runs):
        with labstats.Stats(tmp_path / f"sweep{k}", name=f"sweep-{k}", config={"lr": 0.1 * (k + 1)}) as stats:
            for step in range(40):
                stats.log(
                    step=step, loss=1.0 / (step + 1 + k), acc=step / 40, **{"val/loss": 2.0 / (step + 1)}
                )
        ids.append(stats.run_id)
    return ids


def _drawn(page) -> list[str]:
    """The chart targets of the page, once every one is drawn."""
    page.wait_for_function(
        "() => { const t = [...document.querySelectorAll('main .chart-grid .bk-target')];"
        " return t.length > 0 && t.every((e) => e.dataset.rendered === 'true'); }",
        timeout=20_000,
    )
    return page.eval_on_selector_all("main .chart-grid .bk-target", "els => els.map((e) => e.id)")


def test_compare_controls_change_the_view_in_place_and_survive_a_reload(chromium, app, tmp_path):  # noqa: F811
    ids = _sweep(tmp_path)
    with serving(app) as base:
        runs = "&".join(f"run=local/{i}" for i in ids)
        page, errors = open_page(chromium, f"{base}/compare?{runs}")
        first = _drawn(page)
        assert len(first) == 3  # acc, loss, val/loss
        page.evaluate("window.labstatsMarker = 'still here'")
        loads = []  # pages fetched (a replaceState of the URL is no load)
        page.on(
            "request",
            lambda request: loads.append(request.url) if request.resource_type == "document" else None,
        )

        page.select_option("#x-axis", "relative")
        page.wait_for_function("document.body.dataset.view === 'ready'")
        by_time = _drawn(page)
        assert not set(by_time) & set(first)  # new charts in place of the old ones
        state = page.evaluate(CHART_STATE)
        assert len(state["urls"]) == 9  # 3 charts × 3 runs: the old charts' sources are gone
        assert all("x=relative" in u for u in state["urls"])

        page.evaluate("document.body.dataset.view = ''")
        page.select_option("#y-scale", "log")
        page.wait_for_function("document.body.dataset.view === 'ready'")
        _drawn(page)
        state = page.evaluate(CHART_STATE)
        assert state["log"] == [True, True, True]
        assert all("x=relative" in u for u in state["urls"])  # the x axis kept

        page.eval_on_selector("#smoothing", "e => { e.value = '0.6'; e.dispatchEvent(new Event('input')); }")
        assert all(page.evaluate(CHART_STATE)["smoothed"])
        page.fill("#series-filter", "^val/")
        page.press("#series-filter", "Enter")  # once a submit of the form without its runs (a 400)
        shown = page.eval_on_selector_all(
            "main .chart-grid .chart:not([hidden])", "els => els.map((e) => e.dataset.name)"
        )
        assert shown == ["val/loss"]

        assert page.evaluate("window.labstatsMarker") == "still here"
        assert loads == []
        query = parse_qs(urlsplit(page.url).query)
        assert query == {"run": [f"local/{i}" for i in ids], "x": ["relative"], "y": ["log"],
                         "smooth": ["0.6"], "filter": ["^val/"]}  # fmt: skip

        page.reload()
        _drawn(page)
        assert page.input_value("#x-axis") == "relative"
        assert page.input_value("#y-scale") == "log"
        assert page.input_value("#smoothing") == "0.6"
        assert page.input_value("#series-filter") == "^val/"
        shown = page.eval_on_selector_all(
            "main .chart-grid .chart:not([hidden])", "els => els.map((e) => e.dataset.name)"
        )
        assert shown == ["val/loss"]
        page.wait_for_function(
            "() => Bokeh.documents.flatMap((d) => [...d.all_models]).some((m) => m.name === 'smooth-0' && m.visible)"  # noqa: E501
        )
        state = page.evaluate(CHART_STATE)
        assert all("x=relative" in u for u in state["urls"])
        assert state["log"] == [True, True, True]
        assert errors == []


def test_a_run_page_merges_a_group_in_place(chromium, app, tmp_path):  # noqa: F811
    with labstats.Stats(tmp_path / "merge") as stats:
        for step in range(5):
            stats.log(step=step, **{"train/a": 1.0 + step, "train/b": 2.0, "val/c": 3.0})
        for step in range(60):  # two pages of text
            stats.log(step=step, note=f"note {step}")
    with serving(app) as base:
        page, errors = open_page(chromium, f"{base}/runs/local/{stats.run_id}")
        assert len(_drawn(page)) == 3
        page.evaluate("window.labstatsMarker = 'still here'")
        page.select_option("#x-axis", "relative")
        page.wait_for_function("document.body.dataset.view === 'ready'")
        page.evaluate("document.body.dataset.view = ''")
        page.click(".chart-group[data-group=train] a.merge")
        page.wait_for_function("document.body.dataset.view === 'ready'")
        assert len(_drawn(page)) == 2  # train/* and val/c
        assert page.inner_text(".chart-group[data-group=train] .chart-head").startswith("train/* 10 points")
        assert page.evaluate("window.labstatsMarker") == "still here"
        assert parse_qs(urlsplit(page.url).query) == {"x": ["relative"], "merge": ["train"]}
        assert len(page.eval_on_selector_all(".latest-values tr[data-name]", "rows => rows")) == 3
        page.reload()
        assert len(_drawn(page)) == 2
        assert page.input_value("#x-axis") == "relative"
        # The older text values: another page load, in the same view.
        page.click("#run-texts .pager a")
        page.wait_for_url("**text_page=1**")
        assert parse_qs(urlsplit(page.url).query) == {
            "x": ["relative"],
            "merge": ["train"],
            "text_page": ["1"],
        }
        assert len(_drawn(page)) == 2
        assert errors == []


def test_an_open_run_page_shows_what_the_run_logs_later(chromium, app, tmp_path):  # noqa: F811
    picture = np.zeros((8, 8, 3), np.uint8)
    with serving(app) as base:
        # No system metrics: their series start 10 s in, new charts in the middle of the count.
        with labstats.Stats(
            tmp_path / "live", name="live", flush_interval=0.05, system_metrics=False
        ) as stats:
            for step in range(10):
                stats.log(step=step, loss=1.0 / (step + 1))
            stats.flush()
            page, errors = open_page(chromium, f"{base}/runs/local/{stats.run_id}")
            _drawn(page)
            page.evaluate("""() => { window.mediaEvents = [];
                document.addEventListener('labstats:media', (e) => window.mediaEvents.push(e.detail)); }""")
            requests = []
            page.on(
                "request", lambda request: requests.append((time.monotonic(), request.method, request.url))
            )
            page.evaluate("window.labstatsMarker = 'still here'")

            # A new series in a new group, a text series and a media name, logged after the page opened.
            stats.log(step=10, loss=0.05, **{"val/acc": 0.5}, note="first <b>note</b>")
            stats.image("samples", picture, step=10)
            logged = time.monotonic()
            new_chart = (
                '.chart-group[data-group=val] .chart[data-name="val/acc"] .bk-target[data-rendered=true]'
            )
            page.wait_for_selector(new_chart, timeout=5_000)
            page.wait_for_selector('.text-series[data-name="note"]', timeout=5_000)
            page.wait_for_function("window.mediaEvents.length > 0", timeout=5_000)
            lag = time.monotonic() - logged
            print(f"new chart, text and media event {lag:.2f} s after they were logged")
            assert lag < 2.5  # the poll is once a second
            assert page.inner_text('.text-series[data-name="note"] table.text') == "10\tfirst <b>note</b>"
            (event,) = page.evaluate("window.mediaEvents")
            assert event == {"source": "local", "run_id": stats.run_id,
                             "media": [{"name": "samples", "kind": "image", "steps": [10]}]}  # fmt: skip
            page.wait_for_function(
                "document.querySelector('.latest-values tr[data-name=loss]').textContent.includes('0.05')",
                timeout=3_000,
            )
            assert page.inner_text('.latest-values tr[data-name="val/acc"]') == "val/acc\t10\t0.5"
            assert page.inner_text(".latest-count") == "2"
            assert page.inner_text('.chart[data-name="loss"] .points') == "11"
            assert page.inner_text(".chart-group[data-group=val] summary") == "val/ 1 charts · one chart"

            # Later points, values and steps: the counts, the table and the media list follow.
            stats.image("samples", picture, step=20)
            stats.log(step=20, loss=0.01, note="second")
            page.wait_for_function("window.mediaEvents.length === 2", timeout=3_000)
            assert page.evaluate("window.mediaEvents[1].media[0].steps") == [10, 20]
            page.wait_for_function(
                "document.querySelector('.chart[data-name=loss] .points').textContent === '12'", timeout=3_000
            )
            page.wait_for_function(
                "document.querySelector('.text-series[data-name=note] .points').textContent === '2'",
                timeout=3_000,
            )
            assert page.inner_text('.text-series[data-name="note"] table.text').startswith("20\tsecond")

            # About one request a second while the run logs on: nothing but the poll. (Playwright
            # hears of requests while the test waits on the page, hence wait_for_timeout.)
            requests.clear()
            start = time.monotonic()
            while time.monotonic() - start < 5:
                stats.log(loss=0.01)
                page.wait_for_timeout(100)
            polls = [r for r in requests if r[2].endswith("/api/live")]
            assert 4 <= len(polls) <= 6
            assert len(requests) == len(polls)
            print(f"requests in 5 s while the run logs: {len(requests)}, all POST /api/live")
            assert page.evaluate("window.labstatsMarker") == "still here"
        # The run ended: the page says so and stops asking.
        page.wait_for_function("document.getElementById('status').textContent === 'finished'", timeout=5_000)
        assert errors == []


def test_a_compare_page_gains_the_chart_of_a_series_a_running_run_starts(chromium, app, tmp_path):  # noqa: F811
    (done,) = _sweep(tmp_path, runs=1)
    with serving(app) as base:
        with labstats.Stats(tmp_path / "going", flush_interval=0.05, system_metrics=False) as stats:
            stats.log(step=0, loss=1.0)
            stats.flush()
            page, errors = open_page(
                chromium, f"{base}/compare?run=local/{done}&run=local/{stats.run_id}&y=log"
            )
            assert len(_drawn(page)) == 3  # acc, loss, val/loss of the finished run
            page.evaluate("window.labstatsMarker = 'still here'")
            stats.log(step=1, loss=0.5, grad_norm=3.0)
            logged = time.monotonic()
            page.wait_for_selector(
                '.chart[data-name="grad_norm"] .bk-target[data-rendered=true]', timeout=5_000
            )
            assert time.monotonic() - logged < 3  # a poll, then its chart
            names = page.eval_on_selector_all(
                "main .chart-grid .chart", "cs => cs.map((c) => c.dataset.name)"
            )
            assert names == ["acc", "grad_norm", "loss", "val/loss"]
            assert page.evaluate(CHART_STATE)["log"] == [True] * 4  # drawn in the page's view
            assert page.evaluate("window.labstatsMarker") == "still here"
        badge = f'a[href$="/runs/local/{stats.run_id}"] + .badge'
        page.wait_for_function(f"document.querySelector('{badge}').textContent === 'finished'", timeout=5_000)
        assert errors == []


def test_a_run_page_opened_before_any_series_fills_in(chromium, app, tmp_path):  # noqa: F811
    with serving(app) as base:
        with labstats.Stats(tmp_path / "empty", flush_interval=0.05, system_metrics=False) as stats:
            stats.flush()
            page, errors = open_page(chromium, f"{base}/runs/local/{stats.run_id}")
            page.wait_for_selector("#no-series")
            assert page.is_visible("#chart-controls")  # there for the charts to come
            stats.log(step=0, loss=1.0, **{"train/acc": 0.1})
            page.wait_for_selector(
                '.chart[data-name="train/acc"] .bk-target[data-rendered=true]', timeout=5_000
            )
            page.wait_for_selector('.chart[data-name="loss"] .bk-target[data-rendered=true]', timeout=5_000)
            groups = page.eval_on_selector_all(".chart-group", "gs => gs.map((g) => g.dataset.group)")
            assert groups == ["", "train"]
            assert page.query_selector("#no-series") is None
            assert page.is_visible(".latest-values")
            assert page.inner_text(".latest-count") == "2"
        assert errors == []
