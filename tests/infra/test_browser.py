"""A real browser (Debian's Chromium, driven by Playwright) opens the viewer through nginx,
logs in on its login page, opens a run logged on the training box and finds its charts
drawn with data; a live run updates with one request per second for the whole page.
The screenshots are kept in artifacts/ (a CI artifact)."""

import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
from conftest import box, https_get, log_run_on_trainbox, viewer_login, wait_until, web_token, web_url
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
    assert wait_until(lambda: https_get(f"/api/runs/trainbox/{run_id}", token=web_token())[0] == 200)
    context = browser.new_context(
        ignore_https_errors=True,  # the lab's certificate is self-signed
        viewport={"width": 1280, "height": 1400},
    )
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(web_url("/"))
    assert "/login" in page.url  # not logged in yet: the login page
    viewer_login(page)
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
    # Every chart of the page drew, the histogram series as a heat-map over steps among them.
    page.wait_for_function(
        """() => [...document.querySelectorAll('.bk-target')].every(t => t.dataset.rendered === 'true')""",
        timeout=20_000,
    )
    titles = page.evaluate(
        """() => Bokeh.documents.flatMap(d => [...d.all_models])
                .filter(m => m.type === 'Title').map(m => m.text)"""
    )
    assert "weights_hist: distribution over steps" in titles, titles
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-run.png"), full_page=True)
    context.close()
    assert errors == []
    assert min(points) >= 1  # every chart has its points
    assert max(points) > 1000  # the 2,000-point series arrived (downsampled to ≤ 2,000)


# No system metrics: their sys/* series start 10 s in, and a series that starts while the page
# is open is drawn as a new chart (a request for its chart and its first window), which the
# count of the steady state below is not about (tests/unit/test_browser_live.py checks that).
LIVE_SCRIPT = """
import time, labstats
with labstats.Stats("runs/live-check", flush_interval=0.1, system_metrics=False) as stats:
    for i in range(150):
        stats.log(step=i, v=float(i), w=float(-i), x=float(i % 7))
        time.sleep(0.2)
"""


def test_a_running_run_updates_in_the_browser_within_two_seconds_with_one_request_per_second(host, browser):
    train = box("trainbox")
    with train.sudo("researcher"):
        train.run("cd ~ && (nohup /opt/labstats/venv/bin/python -c %s >/dev/null 2>&1 &)", LIVE_SCRIPT)

    def run_id():
        status, _, body = https_get("/api/runs?q=live-check&status=running", token=web_token())
        runs = json.loads(body)["runs"] if status == 200 else []
        return runs[0]["id"] if runs else None

    assert wait_until(lambda: run_id() is not None, timeout=30)
    rid = run_id()
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    viewer_login(page)
    requests = []
    page.on(
        "request",
        lambda r: requests.append((time.monotonic(), r.method, r.url)) if "/api/" in r.url else None,
    )
    page.goto(web_url(f"/runs/trainbox/{rid}"))
    page.wait_for_selector("#chart-2[data-rendered=true]", timeout=20_000)
    # Three live charts: one request per second for all of them, not one per chart.
    page.wait_for_timeout(1500)  # (not time.sleep: Playwright delivers events while it waits)
    window_start = time.monotonic()
    page.wait_for_timeout(5000)
    in_window = [(m, u) for t, m, u in requests if window_start <= t < window_start + 5]
    print(f"API requests in 5 s with 3 live charts: {len(in_window)}")
    assert {(m, u.split("?")[0].rsplit("/", 1)[-1]) for m, u in in_window} == {("POST", "live")}
    assert 3 <= len(in_window) <= 6
    lags = []
    for _ in range(5):
        # The newest point the replica has now; the page must show it within 2 s.
        _, _, body = https_get(f"/api/runs/trainbox/{rid}/series/v?start=0", token=web_token())
        newest = json.loads(body)["idx"][-1]
        start = time.monotonic()
        page.wait_for_function(
            """(newest) => Bokeh.documents.flatMap(d => [...d.all_models])
                .some(m => "data_url" in m && m.data && (m.data.idx || []).some(i => i >= newest))""",
            arg=newest,
            timeout=2_000,
        )
        lags.append(time.monotonic() - start)
        time.sleep(0.5)
    context.close()
    print(f"live update lags (s): {[round(lag, 2) for lag in lags]}")
    assert sorted(lags)[len(lags) // 2] <= 1.0  # the median: the page polls once a second
    assert max(lags) < 2.0


CONTROLS_SCRIPT = """
import math, labstats
with labstats.Stats("runs/controls-check") as stats:
    for i in range(400):
        noise = 0.5 if i % 2 else -0.5
        stats.log(step=i, **{"train/loss": math.exp(-i / 100) + 1 + noise, "train/acc": i / 400,
                             "val/loss": 2.0 + (1000.0 if i == 200 else 0.0) + noise, "lr": 0.001})
    stats.log(step=399, final_score=0.93)  # a series of one point
print(stats.run_id)
"""


def bokeh_eval(page, body: str, arg=None):
    """Evaluate JS over the page's Bokeh renderers by name (raw-0, smooth-0, dot-0), per chart title."""
    return page.evaluate(
        """([body, arg]) => {
            const charts = {};
            for (const doc of Bokeh.documents) for (const fig of doc.roots()) {
                if (!fig.renderers || !fig.title) continue;
                const r = {};
                for (const x of fig.renderers) r[x.name] = x;
                charts[fig.title.text] = {fig, r};
            }
            return new Function("charts", "arg", body)(charts, arg);
        }""",
        [body, arg],
    )


def redrawn(page, action) -> None:
    """Do ``action`` (an axis choice, a merge link) and wait for the charts viewer.js redraws
    in place from their JSON (no page load: the URL changes by history.replaceState)."""
    page.evaluate("document.body.dataset.view = ''")
    action()
    page.wait_for_function("document.body.dataset.view === 'ready'", timeout=20_000)
    page.wait_for_function(
        "[...document.querySelectorAll('.bk-target')].every(t => t.dataset.rendered === 'true')"
    )


def test_chart_controls_filter_smooth_clip_and_log_scale_what_is_drawn(host, browser):
    train = box("trainbox")
    with train.sudo("researcher"):
        run_id = train.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s", CONTROLS_SCRIPT).split()[
            -1
        ]
    assert wait_until(lambda: https_get(f"/api/runs/trainbox/{run_id}", token=web_token())[0] == 200)
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    viewer_login(page)
    page.goto(web_url(f"/runs/trainbox/{run_id}"))
    page.wait_for_function(
        "[...document.querySelectorAll('.bk-target')].every(t => t.dataset.rendered === 'true')"
    )
    page.wait_for_function(
        "Bokeh.documents.flatMap(d => [...d.all_models]).filter(m => 'data_url' in m)"
        ".every(m => m.data && m.data.idx && m.data.idx.length > 0)"
    )
    # Charts are grouped by prefix, and the latest value of every series is listed.
    groups = page.eval_on_selector_all(".chart-group", "gs => gs.map(g => g.dataset.group)")
    assert groups == ["", "train", "val"]
    assert page.text_content('table.latest tr[data-name="final_score"] td:last-child') == "0.93"
    # A series of one point shows its marker.
    assert bokeh_eval(page, "return charts['final_score'].r['dot-0'].visible") is True
    assert bokeh_eval(page, "return charts['train/loss'].r['dot-0'].visible") is False

    # A constant series is drawn on an axis around its value (not -1..1, where 0.001 reads as 0).
    low, high = bokeh_eval(page, "const y = charts['lr'].fig.y_range; return [y.start, y.end]")
    assert low < 0.001 < high
    assert high - low < 0.001

    # Smoothing: a second, smooth line appears; the raw one stays, faint.
    page.fill("#smoothing", "0.9")
    page.dispatch_event("#smoothing", "input")
    drawn = bokeh_eval(
        page,
        """
        const {r} = charts['train/loss'];
        const raw = Array.from(r['raw-0'].data_source.data.values);
        const smooth = Array.from(r['smooth-0'].data_source.data.values);
        const wiggle = (v) => v.slice(1).reduce((s, x, i) => s + Math.abs(x - v[i]), 0);
        const alpha = r['raw-0'].glyph.line_alpha;
        return [r['smooth-0'].visible, typeof alpha === 'object' ? alpha.value : alpha, smooth.length,
                wiggle(raw), wiggle(smooth)];""",
    )
    visible, alpha, length, raw_wiggle, smooth_wiggle = drawn
    assert visible is True
    assert alpha < 0.5
    assert length == 400
    assert smooth_wiggle < raw_wiggle / 5  # the ±0.5 alternation is smoothed away
    page.screenshot(path=str(ARTIFACTS / "viewer-controls.png"), full_page=True)

    # Clipping outliers: the 1000-high spike of val/loss no longer sets the y range.
    before = bokeh_eval(page, "return charts['val/loss'].fig.y_range.end")
    page.check("#clip-outliers")
    after = bokeh_eval(page, "return charts['val/loss'].fig.y_range.end")
    assert before > 500
    assert after < 10

    # The filter hides the charts whose name does not match, and groups left empty.
    page.fill("#series-filter", "^val/")
    hidden = page.eval_on_selector_all(".chart-grid .chart", "cs => cs.map(c => [c.dataset.name, c.hidden])")
    assert dict(hidden) == {"final_score": True, "lr": True, "train/acc": True, "train/loss": True,
                            "val/loss": False}  # fmt: skip
    assert page.eval_on_selector('.chart-group[data-group="train"]', "g => g.hidden") is True

    # The y axis on a log scale: the charts are redrawn in place as log-scale charts, the
    # page not loaded again (a marker on the window stays).
    page.evaluate("window.labstatsMarker = 'still here'")
    redrawn(page, lambda: page.select_option("#y-scale", "log"))
    assert "y=log" in page.url
    scales = bokeh_eval(page, "return Object.values(charts).map(c => c.fig.y_scale.type)")
    assert set(scales) == {"LogScale"}
    assert page.evaluate("window.labstatsMarker") == "still here"
    # The filter, smoothing and clipping survived the charts being drawn again.
    assert page.input_value("#series-filter") == "^val/"
    assert page.input_value("#smoothing") == "0.9"
    assert page.is_checked("#clip-outliers")
    shown = page.eval_on_selector_all(".chart-grid .chart:not([hidden])", "cs => cs.map(c => c.dataset.name)")
    assert shown == ["val/loss"]
    page.wait_for_function(
        "Bokeh.documents.flatMap(d => [...d.all_models]).filter(m => 'data_url' in m)"
        ".every(m => m.data && m.data.idx && m.data.idx.length > 0)"
    )
    assert bokeh_eval(page, "return charts['train/loss'].r['smooth-0'].visible") is True
    # Enter in the filter box does not reload the page.
    url = page.url
    page.press("#series-filter", "Enter")
    assert page.url == url
    page.fill("#series-filter", "")
    page.dispatch_event("#series-filter", "input")
    # The x axis as wall-clock time: a datetime axis, and the points' x are times (ms).
    redrawn(page, lambda: page.select_option("#x-axis", "time"))
    assert "x=time" in page.url
    page.wait_for_function(
        "Bokeh.documents.flatMap(d => [...d.all_models]).filter(m => 'data_url' in m)"
        ".every(m => m.data && m.data.idx && m.data.idx.length > 0)"
    )
    axis = bokeh_eval(page, "return charts['train/loss'].fig.below[0].type")
    first_x = bokeh_eval(page, "return charts['train/loss'].r['raw-0'].data_source.data.idx[0]")
    assert axis == "DatetimeAxis"
    assert abs(first_x / 1000 - time.time()) < 3600  # ms since 1970, within the hour
    # One chart for the train/ group, on demand: its two series as two lines.
    redrawn(page, lambda: page.click('.chart-group[data-group="train"] a.merge'))
    assert "merge=train" in page.url
    assert page.evaluate("window.labstatsMarker") == "still here"
    charted = page.eval_on_selector_all(".chart-grid .chart", "cs => cs.map(c => c.dataset.name)")
    assert charted == ["final_score", "lr", "train/*", "val/loss"]
    assert (
        bokeh_eval(page, "return Object.keys(charts['train/*'].r).filter(n => n.startsWith('raw-')).length")
        == 2
    )
    context.close()
    assert errors == []


TABLE_SCRIPT = """
import sys, labstats
for k, (lr, final) in enumerate([(0.1, 0.4), (0.01, 0.2), (0.1, 0.3), (0.01, 0.1)]):
    with labstats.Stats(f"runs/{sys.argv[1]}-{k}", config={"lr": lr, "seed": k, "model": "mlp"}) as stats:
        for step in range(50):
            stats.log(step=step, loss=final + (49 - step) / 10, acc=step / 50)
"""


def log_four_runs(prefix: str) -> str:
    """Four runs named <prefix>-<token>-0..3 (a fresh token: the tests may run again on a lab)."""
    name = f"{prefix}-{int(time.time() * 1000) % 10**8}"
    train = box("trainbox")
    with train.sudo("researcher"):
        train.check_output(
            "cd ~ && /opt/labstats/venv/bin/python -c %s", TABLE_SCRIPT.replace("sys.argv[1]", repr(name))
        )
    listed = lambda: json.loads(https_get(f"/api/runs?q={name}-", token=web_token())[2])["runs"]  # noqa: E731
    assert wait_until(lambda: len(listed()) == 4)
    return name


def navigates(page, action):
    """Do ``action`` (a click, Enter, a choice) and wait for the page it loads; its response."""
    with page.expect_navigation() as loaded:
        action()
    return loaded.value


def listed_names(page) -> list[str]:
    return page.eval_on_selector_all(
        "table.runs tbody tr[data-key] td[data-col=name]", "cs => cs.map(c => c.dataset.value)"
    )


def group_rows(page) -> list[tuple[str, str, str]]:
    """(value, count, text) of each group row, in the order shown."""
    rows = page.eval_on_selector_all(
        "tr.group-row td",
        "cs => cs.map(c => [c.parentElement.dataset.group, c.dataset.count, c.textContent])",
    )
    return [(value, count, " ".join(text.split())) for value, count, text in rows]


def column_hidden(page, col: str) -> bool:
    """Whether the column's header and every cell of it are hidden (False if any shows)."""
    cells = page.eval_on_selector_all(f'table.runs [data-col="{col}"]', "cs => cs.map(c => c.hidden)")
    assert cells, col
    return all(cells)


def test_the_runs_table_sorts_groups_and_chooses_columns(host, browser):
    # Four runs: lr 0.1, 0.01, 0.1, 0.01; final loss 0.4, 0.2, 0.3, 0.1 (run 3 the best).
    name = log_four_runs("table-check")

    def runs(*ks: int) -> list[str]:
        return [f"{name}-{k}" for k in ks]

    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    viewer_login(page)
    # Two runs to a page, so a sort has to look past the page shown: newest first, 3 and 2.
    page.goto(web_url(f"/?q={name}-&limit=2"))
    assert listed_names(page) == runs(3, 2)
    assert page.locator("p.pager a[rel=next]").count() == 1
    headers = page.eval_on_selector_all("table.runs thead th[data-col]", "hs => hs.map(h => h.dataset.col)")
    # The metric most runs share (loss wins the tie with acc), and the config keys that differ.
    assert {"metric-last", "metric-min", "metric-max", "config:lr", "config:seed", "duration"} <= set(headers)
    assert "config:model" not in headers  # the same in every run: no column
    assert page.text_content('th[data-col="metric-last"]').strip() == "loss last"

    # A header sorts every run on the server: the lowest loss first, run 1 from the second page.
    navigates(page, lambda: page.click('th[data-col="metric-last"] a'))
    assert page.get_attribute('th[data-col="metric-last"]', "aria-sort") == "ascending"
    assert listed_names(page) == runs(3, 1)
    assert " ".join(page.text_content("p.pager").split()) == "page 1 of 2 next ›"
    navigates(page, lambda: page.click("p.pager a[rel=next]"))
    assert listed_names(page) == runs(2, 0)
    navigates(page, lambda: page.click('th[data-col="metric-last"] a'))  # again: descending, from page 1
    assert page.get_attribute('th[data-col="metric-last"]', "aria-sort") == "descending"
    assert listed_names(page) == runs(0, 2)

    # A filter expression over a config key and a metric: only the runs that match.
    page.fill("input[name=filter]", "lr < 0.05 and loss.min > 0.15")
    navigates(page, lambda: page.press("input[name=filter]", "Enter"))
    assert listed_names(page) == runs(1)
    assert page.text_content("#total").strip() == "1 run match"
    # A mistake is said beside the box, as typed (a 400 page, not a server error).
    page.fill("input[name=filter]", "lrr < 0.05")
    refused = navigates(page, lambda: page.press("input[name=filter]", "Enter"))
    assert refused.status == 400
    assert page.text_content("p.filter-error").strip() == (
        "filter: column 1: no listed run has a config key or metric named 'lrr' (did you mean lr?)"
    )
    assert page.input_value("input[name=filter]") == "lrr < 0.05"
    assert listed_names(page) == []
    assert "the filter above cannot be used" in page.text_content("table.runs tbody")
    page.fill("input[name=filter]", "")
    navigates(page, lambda: page.press("input[name=filter]", "Enter"))
    assert listed_names(page) == runs(0, 2)  # every run, still by loss, highest first, two a page:
    assert "limit=2" in page.url  # the form kept the page size
    # All four on one page from here: the same view less its page size.
    url = urlsplit(page.url)
    query = urlencode([(k, v) for k, v in parse_qsl(url.query) if k != "limit"])
    page.goto(url._replace(query=query).geturl())
    assert listed_names(page) == runs(0, 2, 1, 3)

    # Grouped by lr: each group where its best run ranks (0.1 holds the highest loss), with its count.
    navigates(page, lambda: page.select_option("#group-by", "config:lr"))
    assert [(value, count) for value, count, _ in group_rows(page)] == [("0.1", "2"), ("0.01", "2")]
    assert listed_names(page) == runs(0, 2, 1, 3)
    navigates(page, lambda: page.click('th[data-col="metric-last"] a'))  # the lowest first: 0.01 leads
    groups = group_rows(page)
    assert [(value, count) for value, count, _ in groups] == [("0.01", "2"), ("0.1", "2")]
    assert groups[0][2] == "lr = 0.01 · 2 runs · lowest loss last 0.1 only these"
    assert groups[1][2] == "lr = 0.1 · 2 runs · lowest loss last 0.3 only these"
    assert listed_names(page) == runs(3, 1, 2, 0)

    # Columns hidden and shown again: kept in the URL, so a reload keeps them.
    page.click("details.column-chooser summary")
    page.uncheck('#column-chooser input[data-col="host"]')
    page.uncheck('#column-chooser input[data-col="config:seed"]')
    assert column_hidden(page, "host")
    assert column_hidden(page, "config:seed")
    assert "hide=host" in page.url
    assert "hide=host" in page.get_attribute('th[data-col="name"] a', "href")  # a sort keeps them too
    page.reload()
    assert column_hidden(page, "host")
    assert column_hidden(page, "config:seed")
    assert not page.is_checked('#column-chooser input[data-col="host"]')
    page.click("details.column-chooser summary")
    page.check('#column-chooser input[data-col="config:seed"]')
    page.reload()
    assert column_hidden(page, "host")
    assert not column_hidden(page, "config:seed")
    page.screenshot(path=str(ARTIFACTS / "viewer-runs-table.png"), full_page=True)

    # A saved view opens as it was saved: filter by name, sort, grouping and hidden columns.
    view = f"{name} by lr"
    page.click("details.saved-views summary")
    page.fill("form.save-view input[name=name]", view)
    navigates(page, lambda: page.click("form.save-view button"))
    assert page.url.split("?")[0] == web_url("/")
    assert " ".join(page.text_content("details.saved-views summary").split()) == f"views: {view}"
    page.goto(web_url("/"))
    page.reload()
    page.click("details.saved-views summary")
    navigates(page, lambda: page.click(f'.saved-view a:text-is("{view}")'))
    assert listed_names(page) == runs(3, 1, 2, 0)
    assert [(value, count) for value, count, _ in group_rows(page)] == [("0.01", "2"), ("0.1", "2")]
    assert column_hidden(page, "host")
    assert not column_hidden(page, "config:seed")
    assert page.get_attribute('th[data-col="metric-last"]', "aria-sort") == "ascending"

    # Select two and compare.
    first_two = page.eval_on_selector_all(
        "table.runs tbody tr[data-key]", "rs => rs.map(r => r.dataset.key)"
    )[:2]
    boxes = page.query_selector_all("table.runs tbody input[name=run]")
    boxes[0].check()
    boxes[1].check()
    page.click("text=Compare selected")
    page.wait_for_url("**/compare?**")

    # The compare page's own controls keep the two runs (they once asked for a compare of none).
    def compared() -> list[str]:
        return sorted(parse_qs(urlsplit(page.url).query).get("run", []))

    chosen = compared()
    assert chosen == sorted(first_two)
    redrawn(page, lambda: page.select_option("#y-scale", "log"))
    assert "y=log" in page.url
    assert compared() == chosen
    assert page.query_selector(".chart-grid .chart") is not None

    # The view is deleted again (a user keeps at most 100; the lab's tests may run again).
    page.goto(web_url("/"))
    page.click("details.saved-views summary")
    delete = page.locator(".saved-view", has=page.locator(f'a:text-is("{view}")')).locator("button")
    navigates(page, lambda: delete.click())
    assert page.locator(f'.saved-view a:text-is("{view}")').count() == 0
    context.close()
    assert errors == []


def test_the_hparams_view_draws_a_line_per_run(host, browser):
    name = log_four_runs("hp-check")
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    viewer_login(page)
    page.goto(web_url(f"/?q={name}-"))
    page.click("text=hyperparameters view")
    page.wait_for_selector("#hparams-chart[data-rendered=true]", timeout=20_000)
    lines = page.evaluate(
        """() => Bokeh.documents.flatMap(d => [...d.all_models])
            .filter(m => m.data && "xs" in m.data && "url" in m.data)
            .map(m => [m.data.name, m.data.ys.map(y => Array.from(y).length)])[0]"""
    )
    run_names, lengths = lines
    assert sorted(run_names) == [f"{name}-{k}" for k in range(4)]
    assert set(lengths) == {3}  # lr, seed, loss (last): model is the same everywhere
    page.screenshot(path=str(ARTIFACTS / "viewer-hparams.png"), full_page=True)
    context.close()
    assert errors == []
