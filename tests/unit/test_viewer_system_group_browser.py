"""Chromium journeys of the run page's System group: a run logging system metrics through the
real logger (NVML a stand-in, psutil and Redis real) shows them in a group of their own, on a
datetime x axis, its charts following the run; a page opened before the first sample gains
the group when it arrives, through the page's own poll (no request of its own before)."""

import sys

import pytest
from browser import chromium, open_page, serving  # noqa: F401 (chromium: a fixture)
from conftest import wait_for
from test_system_metrics import FakeNvml

import labstats
from labstats.viewer import create_app
from labstats.viewer.sources import Source

# Per System chart (by its target): the x axis' model type, how many points its line holds,
# and the tick labels of its y axis as drawn.
SYSTEM_CHARTS = """() => {
  const out = {};
  for (const doc of Bokeh.documents) for (const root of doc.roots()) {
    if (!root.title || !root.title.text.startsWith("sys/")) continue;
    const source = root.renderers[0].data_source;
    out[root.title.text] = {axis: root.below[0].type, points: source.data.idx.length,
                            first: source.data.idx[0]};
  }
  return out;
}"""


@pytest.fixture
def app(url):
    return create_app({"local": Source("local", url)})


@pytest.fixture(autouse=True)
def gpus(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus=2))


def _rendered(page, selector: str, timeout: float = 20_000) -> None:
    page.wait_for_function(
        f"() => {{ const t = [...document.querySelectorAll('{selector} .bk-target')];"
        " return t.length > 0 && t.every((e) => e.dataset.rendered === 'true'); }",
        timeout=timeout,
    )


def test_a_live_run_shows_its_system_group_on_a_datetime_axis(chromium, app, lab, tmp_path):  # noqa: F811
    with serving(app) as base:
        with labstats.Stats(tmp_path / "sys", system_metrics=0.2, flush_interval=0.05) as stats:
            for step in range(5):
                stats.log(step=step, loss=1.0 / (step + 1))

            def sampled():
                stats.flush()
                return "sys/gpu1/util_percent" in lab.run(stats.run_id).series_names()

            assert wait_for(sampled)  # the samples come on their own thread
            page, errors = open_page(chromium, f"{base}/runs/local/{stats.run_id}")
            assert page.locator("#run-system").is_visible()
            # Closed at first (the run's own metrics are what the page is opened for).
            assert page.get_attribute("#run-system", "open") is None
            assert page.inner_text("#run-system > summary").startswith("System")
            _rendered(page, "#run-charts")
            # Not drawn while closed: the page's poll does not ask for their points.
            assert page.evaluate(SYSTEM_CHARTS) == {}
            with page.expect_request(lambda r: r.url.endswith("/api/live")) as poll:
                pass
            assert "sys%2F" not in (poll.value.post_data or "")
            page.click("#run-system > summary")
            _rendered(page, "#run-system")
            with page.expect_request(lambda r: r.url.endswith("/api/live")) as poll:
                pass
            assert "sys%2Fgpu0%2Futil_percent" in poll.value.post_data  # drawn now: kept fresh
            sections = page.eval_on_selector_all(".system-section h3", "hs => hs.map((h) => h.textContent)")
            assert sections == ["Box", "This run's processes", "GPU 0", "GPU 1"]
            assert "2 GPU(s) through NVML" in page.inner_text('.system-status[data-name="sys/gpu_status"]')
            charts = page.evaluate(SYSTEM_CHARTS)
            assert {c["axis"] for c in charts.values()} == {"DatetimeAxis"}
            assert charts["sys/gpu0/util_percent"]["first"] > 1.7e12  # unix ms on that axis
            loss = "() => Bokeh.documents.flatMap((d) => d.roots()).find((r) => r.title.text === 'loss')"
            assert page.evaluate(f"() => ({loss})().below[0].type") == "LinearAxis"  # the step axis
            assert page.inner_text('.chart[data-name="sys/gpu0/memory_total_bytes"] .latest') == "80.0 GiB"
            # Live: the line grows through the page's poll, the head's count follows.
            before = charts["sys/proc_rss_bytes"]["points"]
            page.wait_for_function(
                f"() => ({SYSTEM_CHARTS})()['sys/proc_rss_bytes'].points > {before + 3}", timeout=10_000
            )
            head = '.chart[data-name="sys/proc_rss_bytes"] .points'
            count = int(page.inner_text(head))
            page.wait_for_function(
                f"() => Number(document.querySelector('{head}').textContent) > {count}", timeout=10_000
            )
        assert errors == []


def test_a_page_opened_before_the_first_sample_gains_the_group(chromium, app, tmp_path):  # noqa: F811
    with serving(app) as base:
        with labstats.Stats(tmp_path / "late", system_metrics=3.0, flush_interval=0.05) as stats:
            stats.log(step=0, loss=1.0)
            stats.flush()
            page, errors = open_page(chromium, f"{base}/runs/local/{stats.run_id}")
            assert page.locator("#run-system").get_attribute("hidden") is not None
            requests = []
            page.on("request", lambda request: requests.append(request.url))
            page.wait_for_timeout(1500)
            assert requests
            assert all(r.endswith("/api/live") for r in requests)
            page.wait_for_selector("#run-system:not([hidden])", timeout=15_000)
            page.click("#run-system > summary")
            _rendered(page, "#run-system")
            assert page.eval_on_selector_all(".system-section h3", "hs => hs.map((h) => h.textContent)") == [
                "Box",
                "This run's processes",
                "GPU 0",
                "GPU 1",
            ]
            assert "GPU(s) through NVML" in page.inner_text(".system-statuses")
            assert {c["axis"] for c in page.evaluate(SYSTEM_CHARTS).values()} == {"DatetimeAxis"}
        assert errors == []


def test_byte_axes_give_each_tick_the_decimals_its_spacing_needs(chromium):  # noqa: F811
    # The y axis formatter of byte series, run by the browser as a chart's axis runs it.
    from labstats.viewer import charts

    page = chromium.new_page()
    try:
        page.set_content("<html><body></body></html>")
        page.add_script_tag(content=charts.BYTES_JS)
        gib = 1 << 30
        axis = "ticks => ticks.map(v => labstatsBytes(v, '', ticks))"
        assert page.evaluate(axis, [1.10 * gib, 1.15 * gib, 1.20 * gib]) == [
            "1.10 GiB",
            "1.15 GiB",
            "1.20 GiB",
        ]
        assert page.evaluate(axis, [0, 20 * gib, 40 * gib]) == ["0 GiB", "20 GiB", "40 GiB"]
        assert page.evaluate("v => labstatsBytes(v, '/s')", 1.234 * gib) == "1.2 GiB/s"  # a hover
    finally:
        page.close()
