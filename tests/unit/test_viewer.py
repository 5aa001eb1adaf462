"""The viewer app with Flask's test client, against the real redis-server fixture."""

import csv
import io
import json
import re
from urllib.parse import quote

import numpy as np
import pytest

import labstats
from labstats.read.downsample import downsample
from labstats.viewer import charts, create_app
from labstats.viewer.sources import Source

HOSTILE = "<script>alert(1)</script>/../../etc/passwd"
# Series names travel in URL paths, so "../" parts are refused at log time (test_names.py);
# everything else hostile is allowed and must be shown escaped.
HOSTILE_SERIES = "<script>alert(1)</script>/etc/passwd?x=1#y%2F"


@pytest.fixture
def run_id(tmp_path, url):
    with labstats.Stats(tmp_path / "run", name=HOSTILE, config={"lr": 0.1, "note": "<b>bold</b>"}) as stats:
        for i in range(5000):
            stats.log(step=i, loss=float(np.sin(i / 100)) + (10.0 if i == 1234 else 0.0), acc=i / 5000)
        hostile_values = {
            HOSTILE_SERIES: "<img src=x onerror=alert(1)>",
            "weights": np.eye(4, dtype=np.float32),
        }
        stats.log(step=10, **hostile_values)
    return stats.run_id


def test_runs_list_escapes_hostile_names(client, run_id):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Content-Security-Policy" in page.headers


def test_run_page_charts_every_series_and_escapes_values(client, run_id):
    page = client.get(f"/runs/local/{run_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert html.count('class="chart-spec"') == 3  # acc, loss, weights (heat-map)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&#34;&lt;b&gt;bold&lt;/b&gt;&#34;" in html  # config values shown as escaped JSON text
    assert re.search(r"<script(?![^>]*application/json)(?![^>]*src=)[^>]*>", html) is None  # no inline code


def test_series_api_downsamples_keeping_extremes(client, run_id):
    body = client.get(f"/api/runs/local/{run_id}/series/loss").json
    assert body["total"] == 5000
    assert len(body["idx"]) <= 2000
    assert body["downsampled"] is True
    assert 1234 in body["idx"]  # the spike survives
    assert body["idx"][0] == 0
    assert body["idx"][-1] == 4999


def test_a_zoomed_window_comes_at_full_resolution(client, run_id):
    body = client.get(f"/api/runs/local/{run_id}/series/loss?start=100&stop=1099").json
    assert body["idx"] == list(range(100, 1100))
    assert body["downsampled"] is False


def test_raw_csv_has_every_point(client, run_id):
    response = client.get(f"/api/runs/local/{run_id}/csv/acc")
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "idx,acc"
    assert len(lines) == 5001
    assert "attachment" in response.headers["Content-Disposition"]
    assert "/" not in response.headers["Content-Disposition"].split("filename=")[1]


def test_tensor_endpoint_and_compare_page(client, run_id):
    body = client.get(f"/api/runs/local/{run_id}/tensor/weights").json
    assert body["shape"] == [4, 4]
    assert body["values"][:5] == [1.0, 0.0, 0.0, 0.0, 0.0]
    page = client.get(f"/compare?run=local/{run_id}&run=local/{run_id}")
    assert page.status_code == 200
    assert "lr" in page.get_data(as_text=True)


def test_compare_gives_each_run_one_colour_on_every_chart(client, tmp_path):
    ids = []
    for k in range(3):
        with labstats.Stats(tmp_path / f"c{k}") as stats:
            stats.log(step=0, a=1.0, **({} if k == 1 else {"b": 2.0}))  # the second run has no "b"
        ids.append(stats.run_id)
    html = client.get("/compare?" + "&".join(f"run=local/{i}" for i in ids)).get_data(as_text=True)
    specs = {json.loads(s)["target_id"]: s for s in re.findall(r'class="chart-spec">(.*?)</script>', html)}
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]  # Category10, in run order
    chart_a, chart_b = specs["chart-0"], specs["chart-1"]
    assert all(c in chart_a for c in colors)
    assert colors[0] in chart_b
    assert colors[2] in chart_b
    assert colors[1] not in chart_b
    assert "#0c0" not in html  # no placeholder left


def test_the_chart_controls_keep_the_compared_runs_and_their_own_state(client, tmp_path):
    # The controls' form once held only x and y: changing an axis (or Enter in the filter)
    # asked for a compare of no runs (400) and forgot smoothing, clipping and the filter.
    ids = []
    for k in range(2):
        with labstats.Stats(tmp_path / f"k{k}") as stats:
            stats.log(step=0, loss=1.0)
        ids.append(stats.run_id)
    hostile = '"><script>alert(1)</script>'
    runs = "&".join(f"run=local/{i}" for i in ids)
    query = f"{runs}&merge=val&y=log&smooth=0.6&clip=1&filter={quote(hostile)}"
    html = client.get(f"/compare?{query}").get_data(as_text=True)
    form = html.split('id="chart-controls"', 1)[1].split("</form>", 1)[0]
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)
    assert hidden == [("run", f"local/{ids[0]}"), ("run", f"local/{ids[1]}"), ("merge", "val")]
    assert 'name="smooth" id="smoothing" min="0" max="0.99" step="0.01" value="0.6"' in form
    assert 'value="1" id="clip-outliers" checked' in form
    assert "<script>alert(1)" not in html
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in form
    # What the form submits on an axis change is a compare of the same runs.
    again = client.get("/compare?" + "&".join(f"{k}={quote(v)}" for k, v in hidden) + "&x=time&y=log")
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/runs/nowhere/x", 404),
        ("/api/runs/local/missing", 404),
        ("/api/runs/local/{run}/series/missing", 404),
        ("/api/runs/local/{run}/series/loss?start=abc", 400),
        ("/api/runs/local/{run}/series/loss?start=99999999999999999999999", 400),
        ("/api/runs/local/{run}/series/loss?max_points=1", 400),
        ("/api/runs/local/{run}/tensor/loss", 404),
        ("/api/runs?status=bogus", 400),
        ("/api/nothing", 404),
    ],
)
def test_api_errors_are_json_with_proper_codes(client, run_id, path, status):
    response = client.get(path.format(run=run_id))
    assert response.status_code == status
    assert response.is_json
    assert "error" in response.json
    assert "Traceback" not in response.get_data(as_text=True)


def test_malformed_stored_metadata_is_shown_not_raised(client, url, redis_server, run_id):
    redis_server.client().hset(f"ls:run:{run_id}", mapping={"config": "{not json", "started": "soon"})
    assert client.get(f"/runs/local/{run_id}").status_code == 200
    assert client.get("/api/runs").status_code == 200


def test_one_source_away_leaves_the_others_listed_and_says_so(url, tmp_path):
    """A training box's replica down: the runs list, the API and the run pages go on with
    the other sources and name the one that is away; its run pages say so."""
    with labstats.Stats(tmp_path / "kept", url=url) as stats:
        stats.log(step=0, loss=1.0)
    app = create_app({"up": Source("up", url), "down": Source("down", "redis://127.0.0.1:1/0")})
    client = app.test_client()
    body = client.get("/api/runs").get_json()
    assert [r["name"] for r in body["runs"]] == ["kept"]
    assert body["unreachable"] == ["down"]
    assert body["sources"]["down"]["reachable"] is False
    assert "refused" in body["sources"]["down"]["error"].lower()
    page = client.get("/")
    assert page.status_code == 200
    assert b'data-source="down"' in page.data
    assert b"cannot be read right now" in page.data
    lost = client.get("/runs/down/20261125-163012-5f3a9c")
    assert lost.status_code == 200
    assert b"Source down is unreachable" in lost.data
    assert b'http-equiv="refresh"' in lost.data
    api = client.get("/api/runs/down/20261125-163012-5f3a9c/series/loss")
    assert api.status_code == 503
    assert "source down cannot be read right now" in api.get_json()["error"]
    assert client.get("/api/health").status_code == 503  # health still says not all is well


def test_a_replica_whose_training_box_is_away_is_noted(tmp_path, redis_server):
    """A replica that is up but not connected to its master (the training box is off): its
    runs are listed as last copied, with a notice."""
    from conftest import RedisServer

    replica = RedisServer(tmp_path / "replica", extra_args=("--replicaof", "127.0.0.1", "1")).start()
    try:
        app = create_app({"box": Source("box", replica.url), "other": Source("other", redis_server.url)})
        body = app.test_client().get("/api/runs").get_json()
        assert body["sources"]["box"] == {"reachable": True, "link": "down", "error": None}
        assert body["sources"]["other"]["link"] is None  # a master
        assert b"is not connected to the web box" in app.test_client().get("/").data
    finally:
        replica.stop()


def test_openapi_document_lists_the_endpoints(client):
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.")
    assert "/api/runs/{source}/{run_id}/series/{name}" in doc["paths"]


def test_bokehjs_is_served_locally(client):
    response = client.get("/bokeh/bokeh.min.js")
    assert response.status_code == 200
    assert len(response.data) > 100_000


def test_downsample_keeps_first_last_min_and_max():
    idx = np.arange(100_000)
    values = np.random.default_rng(1).standard_normal(100_000)
    values[777] = 50.0
    values[55_555] = -50.0
    kept_idx, kept = downsample(idx, values, 2000)
    assert len(kept_idx) <= 2000
    assert {0, 99_999, 777, 55_555} <= set(kept_idx.tolist())
    assert kept.max() == 50.0
    assert kept.min() == -50.0


def test_run_page_decodes_only_the_tensor_it_shows(client, tmp_path, url, monkeypatch):
    from labstats.read.points import RedisPoints

    with labstats.Stats(tmp_path / "tensors") as stats:
        for i in range(40):  # 40 tensors of 40 kB: each one a blob
            stats.log(step=i * 10, w=np.full((100, 100), i, dtype=np.float32))
            stats.log(step=i * 10, note=f"step {i}")
    fetched = []
    original = RedisPoints.blob

    def counting_blob(self, ref):
        fetched.append(1)
        return original(self, ref)

    monkeypatch.setattr(RedisPoints, "blob", counting_blob)
    page = client.get(f"/runs/local/{stats.run_id}?step=125")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "w at idx 120" in html  # the tensor at or before the chosen step
    assert len(fetched) <= 2  # the latest (to know it is a tensor) and the one shown
    body = client.get(f"/api/runs/local/{stats.run_id}/tensor/w?idx=35").json
    assert body["idx"] == 30
    assert set(body["values"]) == {3.0}


def test_csv_cells_never_start_a_formula(client, url, tmp_path):
    with labstats.Stats(tmp_path / "csv") as stats:
        for i, text in enumerate(['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "plain"]):
            stats.log(step=i, cell=text, num=-1.5)
        stats.log(step=0, **{"=cmd|' /C calc'!A0": -1.0})
    text = client.get(f"/api/runs/local/{stats.run_id}/csv/cell").get_data(as_text=True)
    cells = [row[1] for row in csv.reader(io.StringIO(text, newline=""))][1:]
    assert cells == ['\'=HYPERLINK("http://x")', "'+1", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx", "plain"]
    numbers = client.get(f"/api/runs/local/{stats.run_id}/csv/num").get_data(as_text=True).splitlines()
    assert numbers[1] == "0,-1.5"  # numbers stay numbers
    header = client.get(f"/api/runs/local/{stats.run_id}/csv/=cmd%7C' %2FC calc'!A0").get_data(as_text=True)
    assert header.splitlines()[0] == "idx,'=cmd|' /C calc'!A0"


def test_query_parameters_reach_page_urls_only_from_an_allowlist(client, run_id):
    page = client.get("/?_method=POST&_external=1&_scheme=javascript&_anchor=x&q=hostile&evil=1")
    assert page.status_code == 200
    live_url = re.search(r'data-live-url="([^"]+)"', page.get_data(as_text=True)).group(1)
    assert live_url == "/api/runs?q=hostile"


def test_nan_and_infinity_in_a_config_are_sent_as_null(client, tmp_path):
    with labstats.Stats(tmp_path / "nan", config={"lr": float("nan"), "wd": float("-inf")}):
        pass
    text = client.get("/api/runs").get_data(as_text=True)
    assert "NaN" not in text
    assert "Infinity" not in text
    assert {"lr": None, "wd": None} in [r["config"] for r in json.loads(text)["runs"]]


def test_a_live_page_polls_once_for_all_its_charts(client, run_id):
    names = ["loss", "acc"]
    urls = [charts.series_url("local", run_id, n) for n in names]
    zoomed = urls[0] + "&start=100&stop=200"
    body = client.post("/api/live", json={"runs": [f"local/{run_id}"], "series": [*urls, zoomed]}).json
    assert body["runs"][f"local/{run_id}"]["status"] == "finished"
    for url, data in zip([*urls, zoomed], body["series"], strict=True):
        assert data == client.get(url).json  # the same window as the chart's own URL gives
    assert body["series"][2]["idx"] == list(range(100, 201))
    assert client.post("/api/live", data="junk").status_code == 400


def test_a_histogram_series_is_drawn_as_a_distribution_over_steps(client, tmp_path):
    weights = np.zeros(1000)
    with labstats.Stats(tmp_path / "hist") as stats:
        stats.watch(weights, "w", kind="histogram", bins=16)
        for step in range(30):
            weights[:] = np.random.default_rng(step).normal(step, 1.0, 1000)
            stats.update(0, 1, 1, step)
    html = client.get(f"/runs/local/{stats.run_id}").get_data(as_text=True)
    specs = [json.loads(block) for block in re.findall(r'class="chart-spec">(.*?)</script>', html, re.S)]
    assert "w: distribution over steps" in json.dumps(specs)
    assert '<table class="text">' not in html  # not printed as text rows of arrays


def test_runs_table_pages_and_metric_columns(client, tmp_path):
    for k in range(5):
        with labstats.Stats(tmp_path / f"p{k}", config={"lr": 0.1 * (k % 2), "same": 1}) as stats:
            for i in range(3):
                stats.log(step=i, loss=float(k + i), acc=0.5)
    html = client.get("/?limit=2&page=2").get_data(as_text=True)
    assert re.findall(r'data-col="name" data-value="(p\d)"', html) == ["p2", "p1"]  # newest first
    assert 'rel="prev"' in html
    assert 'rel="next"' in html
    last = client.get("/?limit=2&page=3").get_data(as_text=True)
    assert re.findall(r'data-col="name" data-value="(p\d)"', last) == ["p0"]
    assert 'rel="next"' not in last
    # The metric most runs share ("loss" wins the tie with "acc"), its last, min and max; the
    # config key that differs has a column, the one that does not has none.
    assert 'data-col="metric-last" class="number" data-value="2.0"' in last  # p0: loss 0, 1, 2
    assert 'data-col="metric-max" class="number" data-value="2.0"' in last
    assert 'data-col="config:lr"' in html  # p2 and p1 differ in lr
    assert 'data-col="config:same"' not in html


def test_hparams_view_draws_a_line_per_run_over_the_differing_keys(client, tmp_path):
    for k in range(4):
        config = {"lr": [0.1, 0.01, 0.001, 0.01][k], "opt": ["adam", "sgd", "adam", "sgd"][k], "same": 1}
        with labstats.Stats(tmp_path / f"h{k}", config=config) as stats:
            stats.log(step=0, loss=float(k))
    html = client.get("/hparams").get_data(as_text=True)
    (spec,) = re.findall(r'class="chart-spec">(.*?)</script>', html)
    spec = json.loads(spec)
    text = json.dumps(spec)
    for axis in ('"lr"', '"opt"', "loss (last)"):
        assert axis in text
    assert '"same"' not in text  # the same in every run: no axis
    assert text.count('"/runs/local/') == 4  # a line (and its link) per run
    assert html.count('name="run"') == 4
    # Hostile config values are data, never markup.
    with labstats.Stats(tmp_path / "evil", config={"lr": "<script>x</script>"}) as stats:
        stats.log(step=0, loss=1.0)
    assert "<script>x" not in client.get("/hparams").get_data(as_text=True)


def test_lists_of_arrays_are_drawn_as_arrays_and_long_text_pages(client, tmp_path):
    with labstats.Stats(tmp_path / "lists") as stats:
        for step in range(3):
            stats.log(step=step, weights=[np.full((2, 3), step, np.float32), np.eye(4)],
                      named={"w": np.ones(5), "b": np.zeros(2)})  # fmt: skip
        for step in range(120):
            stats.log(step=step, note=f"line {step}")
    html = client.get(f"/runs/local/{stats.run_id}").get_data(as_text=True)
    assert "weights[0]" in html
    assert "weights[1]" in html
    assert "named[&#39;w&#39;]" in html
    assert "[[2. 2. 2.]" not in html  # never printed NumPy text
    assert "line 119" in html
    assert "line 69" not in html
    older = client.get(f"/runs/local/{stats.run_id}?text_page=1").get_data(as_text=True)
    assert "line 69" in older
    assert "line 119" not in older
    assert "line 19" not in older
    assert "line 19" in client.get(f"/runs/local/{stats.run_id}?text_page=2").get_data(as_text=True)
    at_step = client.get(f"/runs/local/{stats.run_id}?step=1").get_data(as_text=True)
    assert "weights[0] at idx 1" in at_step


def test_time_and_epoch_axes(client, tmp_path):
    import time as clock

    with labstats.Stats(tmp_path / "axes") as stats:
        for step in range(6):
            stats.log(step=step * 10, loss=float(step))
            clock.sleep(0.03)
    run = labstats.connect(stats.settings.url).run(stats.run_id)
    assert len(run.series("_time")) == 6  # calls 30 ms apart: every one kept
    base = f"/api/runs/local/{stats.run_id}/series/loss"
    assert client.get(base).get_json()["idx"] == [0, 10, 20, 30, 40, 50]
    by_time = client.get(base + "?x=time").get_json()["idx"]
    started = float(run.meta["started"])
    assert all(started * 1000 - 1 <= t <= clock.time() * 1000 for t in by_time)  # ms since 1970
    assert by_time == sorted(by_time)
    relative = client.get(base + "?x=relative").get_json()["idx"]
    assert 0 <= relative[0] < 1
    assert relative[-1] - relative[0] >= 0.15  # five sleeps of 30 ms at least
    # A zoom window given in the axis' own units: seconds since start.
    window = client.get(base + f"?x=relative&start={relative[2]}&stop={relative[3]}").get_json()
    assert window["values"] == [2.0, 3.0]
    assert client.get(base + "?x=bogus").status_code == 400
    assert client.get(base + "?x=time&start=nan").status_code == 400
    page = client.get(f"/runs/local/{stats.run_id}?x=time").get_data(as_text=True)
    assert "DatetimeAxis" in page
    assert "x=time" in page
    assert "_time" not in re.findall(r'data-name="([^"]+)"', page)  # the call times are no chart

    weights = np.zeros(3)
    with labstats.Stats(tmp_path / "epochs") as stats:
        stats.watch(weights, "w_mean_source")
        for epoch in range(3):
            for step in range(4):
                weights += 1
                stats.update(epoch, set_size=40, batch_size=10, step=step)  # idx = 40 epoch + 10 step
    page = client.get(f"/runs/local/{stats.run_id}").get_data(as_text=True)
    assert "w_mean_source" in page
    assert "_epoch" not in page  # an axis, not a chart or a latest value
    by_epoch = client.get(f"/api/runs/local/{stats.run_id}/series/_epoch?x=epoch").get_json()
    assert by_epoch["idx"] == [0.0, 1.0, 2.0]
    window = client.get(f"/api/runs/local/{stats.run_id}/series/_epoch?x=epoch&start=1&stop=1").get_json()
    assert window["values"] == [1]
    # Every step lies that far through its epoch (idx / set size): a line, not a comb.
    steps = client.get(f"/api/runs/local/{stats.run_id}/series/w_mean_source?x=epoch").get_json()
    assert steps["idx"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75]
    window = client.get(f"/api/runs/local/{stats.run_id}/series/w_mean_source?x=epoch&start=1.5&stop=2.25")
    assert window.get_json()["idx"] == [1.5, 1.75, 2.0, 2.25]


def test_a_group_drawn_as_one_chart_on_demand(client, tmp_path):
    with labstats.Stats(tmp_path / "merge") as stats:
        for step in range(5):
            stats.log(step=step, **{"train/a": 1.0, "train/b": 2.0, "val/c": 3.0})
    page = client.get(f"/runs/local/{stats.run_id}").get_data(as_text=True)
    assert page.count('class="chart-spec"') == 3
    assert "one chart" in page
    merged = client.get(f"/runs/local/{stats.run_id}?merge=train&y=log").get_data(as_text=True)
    assert merged.count('class="chart-spec"') == 2  # train/a and train/b on one chart, val/c alone
    assert "train/*" in merged
    assert "separate charts" in merged
    assert 'tr data-name="train/a"' in merged  # their latest values stay listed
    link = re.search(r'href="([^"]*)" class="merge"', merged).group(1)  # the train group's
    assert "merge=train" not in link
    assert "y=log" in link


def test_more_metric_columns(client, tmp_path):
    for k in range(2):
        with labstats.Stats(tmp_path / f"m{k}") as stats:
            stats.log(step=0, loss=1.0 + k, acc=0.5 + k / 10, lr=0.1)
    html = client.get("/?also=acc&also=nope&also=loss").get_data(as_text=True)
    assert 'data-col="metric-last"' in html  # loss, the most shared ("loss" wins the tie)
    assert 'data-col="also:acc:last" class="number" data-value="0.6"' in html
    assert "also:nope" not in html
    assert "also:loss" not in html
    assert 'name="also" value="acc" checked' in html


def test_a_views_charts_come_as_json_for_viewer_js_to_draw_in_place(client, tmp_path):
    with labstats.Stats(tmp_path / "view") as stats:
        for step in range(5):
            stats.log(step=step, **{"train/a": 1.0 + step, "train/b": 2.0, "val/c": 3.0}, note=f"n{step}")
    base = f"/runs/local/{stats.run_id}/charts"
    body = client.get(base + "?x=relative&y=log").get_json()
    assert [p["name"] for p in body["plots"]] == ["train/a", "train/b", "val/c"]
    assert body["series"] == 5  # _time among them: the poll's count
    assert [t["name"] for t in body["texts"]] == ["note"]
    assert body["texts"][0]["rows"][0] == [4, "n4"]
    assert body["plots"][0]["count"] == 5
    assert body["plots"][0]["latest"] == [4, "5"]
    assert set(body["groups"]) == {"train", "val"}
    assert "merge=train" in body["groups"]["train"]["link"]
    spec = json.dumps(body["plots"][0]["spec"])
    assert "x=relative" in spec
    assert "LogScale" in spec
    # Each series has a target of its own per view: a redrawn chart never clashes with the old one.
    targets = [p["target"] for p in body["plots"]]
    linear = [p["target"] for p in client.get(base + "?x=relative").get_json()["plots"]]
    assert len(set(targets)) == 3
    assert not set(targets) & set(linear)
    merged = client.get(base + "?merge=train").get_json()
    shown = [(p["name"], p.get("hidden", False)) for p in merged["plots"]]
    assert shown == [("train/*", False), ("train/a", True), ("train/b", True), ("val/c", False)]
    assert merged["plots"][0]["members"] == ["train/a", "train/b"]
    assert merged["plots"][0]["count"] == 10
    assert merged["groups"]["train"]["merged"] is True
    only = client.get(base + "?name=val/c&name=note").get_json()
    assert [p["name"] for p in only["plots"]] == ["val/c"]
    assert [t["name"] for t in only["texts"]] == ["note"]
    assert list(only["groups"]) == ["val"]  # the link that merges a group drawn anew
    missing = client.get("/runs/local/nothing/charts")
    assert missing.status_code == 404
    assert "error" in missing.get_json()


def test_a_compare_views_charts_come_as_json(client, tmp_path):
    ids = []
    for k in range(2):
        with labstats.Stats(tmp_path / f"c{k}") as stats:
            stats.log(step=0, loss=1.0, **({"acc": 0.5} if k else {}))
        ids.append(stats.run_id)
    runs = "&".join(f"run=local/{i}" for i in ids)
    body = client.get(f"/compare/charts?{runs}&x=time").get_json()
    assert [p["name"] for p in body["plots"]] == ["acc", "loss"]
    assert "DatetimeAxis" in json.dumps(body["plots"][1]["spec"])
    assert body["live"] is False
    chosen = client.get(f"/compare/charts?{runs}&series=loss").get_json()
    assert [p["name"] for p in chosen["plots"]] == ["loss"]
    refused = client.get("/compare/charts")
    assert refused.status_code == 400
    assert "choose between 1 and 20 runs" in refused.get_json()["error"]


def _watch(client, ref, **asked):
    answer = client.post("/api/live", json={"runs": [ref], "watch": [{"run": ref, **asked}]})
    assert answer.status_code == 200
    (watched,) = answer.get_json()["watch"]
    return watched


def test_a_live_poll_sends_only_what_changed(client, tmp_path, url, monkeypatch):
    monkeypatch.setenv("LABSTATS_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    with labstats.Stats(tmp_path / "live", flush_interval=0.05) as stats:
        for step in range(3):
            stats.log(step=step, loss=1.0 / (step + 1), note=f"text {step}")
        stats.image("sample", np.zeros((4, 4, 3), np.uint8), step=2)
        stats.flush()
        ref = f"local/{stats.run_id}"
        page = client.get(f"/runs/{ref}").get_data(as_text=True)
        known = int(re.search(r'data-series="(\d+)"', page).group(1))
        fingerprint = re.search(r'data-media="([0-9a-f]+)"', page).group(1)
        # Nothing changed since the page was drawn: the answer says only the count.
        quiet = _watch(client, ref, series=known, counts={"loss": 3}, texts={"note": 3}, media=fingerprint)
        assert quiet == {"run": ref, "series": known}
        stats.log(step=3, loss=0.1, note="text 3", **{"val/acc": 0.5})
        stats.image("sample", np.zeros((4, 4, 3), np.uint8), step=3)
        stats.image("other", np.zeros((4, 4, 3), np.uint8), step=3)
        stats.flush()
        changed = _watch(client, ref, series=known, counts={"loss": 3}, texts={"note": 3}, media=fingerprint)
        assert changed["series"] == known + 1
        assert [n["name"] for n in changed["names"]] == ["loss", "note", "val/acc"]
        assert changed["counts"] == {"loss": {"count": 4, "latest": [3, "0.1"]}}
        assert changed["texts"]["note"]["count"] == 4
        assert changed["texts"]["note"]["rows"][:2] == [[3, "text 3"], [2, "text 2"]]
        assert changed["media"]["list"] == [{"name": "other", "kind": "image", "steps": [3]},
                                            {"name": "sample", "kind": "image", "steps": [2, 3]}]  # fmt: skip
        again = _watch(client, ref, series=changed["series"], media=changed["media"]["fingerprint"])
        assert again == {"run": ref, "series": known + 1}
    odd = client.post(
        "/api/live", json={"watch": ["junk", {"run": "local/none"}, {"run": ref, "counts": [1]}]}
    )
    assert [sorted(w) for w in odd.get_json()["watch"]] == [["error"], ["error", "run"], ["run", "series"]]
    too_many = client.post("/api/live", json={"watch": [{"run": ref}] * 21})
    assert too_many.status_code == 400
    names = {f"s{k}": 1 for k in range(150)}
    too_wide = client.post("/api/live", json={"watch": [{"run": ref, "counts": names, "texts": names}] * 2})
    assert too_wide.status_code == 400  # 600 names, each a chunk read


def test_a_live_poll_of_a_run_with_10000_series_stays_light(client, tmp_path):
    import time as clock

    names = [f"layer{k:05d}/grad" for k in range(10_000)]
    with labstats.Stats(tmp_path / "wide") as stats:
        stats.log(step=0, **dict.fromkeys(names, 1.0))
        stats.log(step=1, **dict.fromkeys(names[:200], 2.0))
    ref = f"local/{stats.run_id}"
    total = client.post("/api/live", json={"watch": [{"run": ref}]}).get_json()["watch"][0]["series"]
    assert total >= 10_000
    shown = {name: 2 for name in names[:200]}  # what a page of 200 charts knows
    start = clock.perf_counter()
    quiet = client.post(
        "/api/live", json={"runs": [ref], "watch": [{"run": ref, "series": total, "counts": shown}]}
    )
    took = clock.perf_counter() - start
    assert len(quiet.data) < 2_000  # the status and a count: not the 10,000 names
    assert took < 1.0  # about 10 ms here: an HLEN and one HMGET of 200 fields
    stale = client.post(
        "/api/live", json={"watch": [{"run": ref, "series": total - 1, "counts": {names[0]: 1}}]}
    )
    watched = stale.get_json()["watch"][0]
    assert len(watched["names"]) == 200  # the charts a page draws, not every series
    assert watched["counts"] == {names[0]: {"count": 2, "latest": [1, "2"]}}
    assert len(stale.data) < 40_000
