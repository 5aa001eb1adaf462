"""The explorer with Flask's test client against the real redis-server fixture: runs logged by
the real logger, split, coloured and aggregated; the aggregates checked against values
computed here from the logged numbers; bad input answered with a sentence (a 400), never a
500; and the runs table's config columns and group-by choices over every filtered run."""

import base64
import gzip
import re
from html import unescape

import numpy as np
import pytest

import labstats

LRS = (0.1, 0.01)
SEEDS = (0, 1, 2)
STEPS = 30


def loss_of(lr: float, seed: int, step: int) -> float:
    """A loss that differs by seed (so the band has a width) and falls with the steps."""
    return (1.0 + seed * 0.37 + lr * 5) / (step + 1) + 0.01 * ((seed * 7 + step * 3) % 5)


@pytest.fixture
def sweep(tmp_path):
    """2 lr × 3 seeds, optimiser fixed: aggregating over seed leaves one line per lr."""
    logged = {}
    for lr in LRS:
        for seed in SEEDS:
            config = {"lr": lr, "seed": seed, "opt": "adam", "width": 64 if lr == 0.1 else 128}
            with labstats.Stats(tmp_path / f"r{lr}-{seed}", name=f"lr{lr}-s{seed}", config=config) as stats:
                for step in range(STEPS):
                    stats.log(step=step, loss=loss_of(lr, seed, step), acc=step / STEPS)
            logged[(lr, seed)] = [loss_of(lr, seed, s) for s in range(STEPS)]
    return logged


def lines_of(answer: dict) -> dict[str, dict]:
    """{title: {line label: its line data}} from the Bokeh items of a view answer."""
    out = {}
    for chart in answer["charts"]:
        out[chart["title"]] = {line["label"]: line for line in chart["lines"]}
    return out


def decoded(value):
    """A column as Bokeh sends it: an ndarray (gzipped base64) as a list, else as it is."""
    if isinstance(value, dict) and value.get("type") == "ndarray":
        raw = base64.b64decode(value["array"]["data"])
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw  # Bokeh gzips arrays
        return np.frombuffer(raw, dtype=value["dtype"]).tolist()
    return value


def sources_of(spec: dict) -> dict[str, dict]:
    """The data sources (name → decoded columns) of a Bokeh JSON item."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            attributes = node.get("attributes")
            if isinstance(attributes, dict) and str(attributes.get("name", "")).startswith("data-"):
                columns = {}
                for key, value in attributes["data"]["entries"]:
                    many = isinstance(value, list) and value and isinstance(value[0], dict)
                    columns[key] = [decoded(v) for v in value] if many else decoded(value)
                found[attributes["name"]] = columns
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return found


def test_mean_and_std_over_seeds_equal_those_of_the_logged_values(client, sweep):
    answer = client.get("/explorer/view?metric=loss&color=lr&agg=mean").json
    assert answer["runs"] == 6
    assert answer["keys"] == ["lr", "seed", "width"]  # opt is the same everywhere
    assert answer["state"]["over"] == ["seed"]  # seed-like keys by default
    (chart,) = answer["charts"]
    assert [(line["label"], line["n"]) for line in chart["lines"]] == [
        ("lr=0.01, width=128 (n=3)", 3),
        ("lr=0.1, width=64 (n=3)", 3),
    ]
    sources = sources_of(chart["spec"])
    for k, lr in enumerate(sorted(LRS)):
        data = sources[f"data-{k}"]
        values = np.array([sweep[(lr, seed)] for seed in SEEDS])
        assert data["x"] == list(range(STEPS))
        np.testing.assert_allclose(data["center"], values.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(data["upper"], values.mean(axis=0) + values.std(axis=0), rtol=1e-12)
        np.testing.assert_allclose(data["lower"], values.mean(axis=0) - values.std(axis=0), rtol=1e-12)
        assert data["count"] == [3.0] * STEPS


def test_median_with_a_min_max_band(client, sweep):
    answer = client.get("/explorer/view?metric=loss&agg=median&split=lr").json
    assert [c["title"] for c in answer["charts"]] == ["loss · lr = 0.01", "loss · lr = 0.1"]
    for chart, lr in zip(answer["charts"], sorted(LRS), strict=True):
        (line,) = chart["lines"]
        assert line["n"] == 3
        data = sources_of(chart["spec"])["data-0"]
        values = np.array([sweep[(lr, seed)] for seed in SEEDS])
        np.testing.assert_allclose(data["center"], np.median(values, axis=0), rtol=1e-12)
        np.testing.assert_allclose(data["lower"], values.min(axis=0), rtol=1e-12)
        np.testing.assert_allclose(data["upper"], values.max(axis=0), rtol=1e-12)


def test_what_is_aggregated_over_split_and_coloured_by(client, sweep):
    # Over nothing: every run is its own group (n=1), lines coloured by lr (two colours).
    answer = client.get("/explorer/view?metric=loss&color=lr&agg=mean&over=").json
    (chart,) = answer["charts"]
    assert [line["n"] for line in chart["lines"]] == [1] * 6
    assert len({line["color"] for line in chart["lines"]}) == 2
    assert {line["color"] for line in chart["lines"] if "lr=0.1," in line["label"]} == {
        next(line["color"] for line in chart["lines"] if line["label"].startswith("lr=0.1,"))
    }
    # Over seed and width: the lr groups stay (width only repeats lr); split by seed: 3 charts.
    answer = client.get("/explorer/view?metric=loss&metric=acc&split=seed&over=width&agg=mean").json
    assert [c["title"] for c in answer["charts"]] == [
        f"{m} · seed = {s}" for m in ("loss", "acc") for s in SEEDS
    ]
    assert [line["label"] for line in answer["charts"][0]["lines"]] == ["lr=0.01 (n=1)", "lr=0.1 (n=1)"]
    # Each run drawn as it is, smoothed by the same EMA as the run page's.
    answer = client.get("/explorer/view?metric=loss&agg=none&smooth=0.5").json
    lines = answer["charts"][0]["lines"]
    assert len(lines) == 6
    assert all(line["n"] == 1 for line in lines)
    data = sources_of(answer["charts"][0]["spec"])["data-runs"]
    assert data["label"] == [line["label"] for line in lines]
    for k, line in enumerate(lines):
        lr, seed = re.match(r"lr([\d.]+)-s(\d)", line["label"]).groups()
        raw = np.array(sweep[(float(lr), int(seed))])
        expected, last = [], 0.0
        for n, v in enumerate(raw, start=1):
            last = last * 0.5 + 0.5 * v
            expected.append(last / (1 - 0.5**n))
        np.testing.assert_allclose(data["ys"][k], expected, rtol=1e-12)


def test_the_filter_chooses_the_runs_and_the_view_is_its_url(client, sweep):
    answer = client.get("/explorer/view?filter=lr < 0.05&metric=loss&agg=mean").json
    assert answer["runs"] == 3
    assert [line["label"] for line in answer["charts"][0]["lines"]] == ["all runs (n=3)"]
    assert "filter=lr+%3C+0.05" in answer["query"]
    assert "metric=loss" in answer["query"]
    page = client.get("/explorer?" + answer["query"])
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'value="lr &lt; 0.05"' in html
    assert 'id="explorer-view"' in html
    # chosen runs instead of a filter
    ids = client.get("/api/runs?limit=2&sort=config:lr").json["runs"]
    refs = "&".join(f"run=local/{r['id']}" for r in ids)
    assert client.get(f"/explorer/view?{refs}&metric=loss").json["runs"] == 2


def test_the_runs_page_links_the_explorer_with_its_filter(client, sweep):
    html = client.get("/?filter=lr+%3C+0.05").get_data(as_text=True)
    link = re.search(r'<a href="([^"]+)"[^>]*>explorer</a>', html).group(1)
    assert unescape(link) == "/explorer?filter=lr+%3C+0.05"
    assert 'formaction="/explorer"' in html  # the chosen runs, too


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("metric=nope", "no chosen run has a numeric series 'nope'"),
        ("filter=lr <", "filter:"),
        ("filter=nokey == 1", "filter:"),
        ("split=nokey", "split: no chosen run has config key 'nokey'"),
        ("color=<b>x</b>", "color: no chosen run has config key '<b>x</b>'"),
        ("agg=sum", "agg must be one of none, mean, median"),
        ("x=steps", "x must be one of"),
        ("smooth=2", "smooth must be a number from 0 to 0.99"),
        ("smooth=nan", "smooth must be a number"),
        ("status=dead", "status must be one of"),
        ("metric=" + "m" * 2000, "longer than 1000 characters"),
    ],
)
def test_bad_input_is_a_400_with_a_sentence(client, sweep, query, message):
    answer = client.get("/explorer/view?" + query)
    assert answer.status_code == 400, answer.json
    assert message in answer.json["error"]
    page = client.get("/explorer?" + query)
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert "<b>x</b>" not in html  # escaped
    assert 'id="explorer-error"' in html
    assert 'id="explorer-form"' in html


def test_hostile_names_are_escaped(client, tmp_path):
    evil = '<img src=x onerror="alert(1)">'
    for seed in (0, 1):
        with labstats.Stats(tmp_path / f"e{seed}", name=evil, config={evil: seed, "seed": seed}) as stats:
            for step in range(5):
                stats.log(step=step, **{evil: float(step + seed)})
    page = client.get("/explorer?split=" + evil)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert evil not in html
    assert "<img" not in html.split('id="explorer-view">')[1]  # the JSON block: \u003c, never <
    answer = client.get("/explorer/view", query_string={"split": evil, "metric": evil}).json
    assert len(answer["charts"]) == 2


def test_an_unknown_run_is_a_404(client, sweep):
    assert client.get("/explorer/view?run=local/nope").status_code == 404
    assert client.get("/explorer?run=local/nope").status_code == 404


def test_runs_on_an_epoch_axis_and_runs_lacking_it(client, tmp_path):
    for seed in (0, 1):
        with labstats.Stats(tmp_path / f"p{seed}", name=f"p{seed}", config={"seed": seed}) as stats:
            for step in range(8):
                stats.log(step=step, loss=float(step + seed))
    answer = client.get("/explorer/view?metric=loss&x=epoch").json
    assert answer["charts"][0]["lines"] == []
    assert any("without" in note for note in answer["notes"])


def group_choices(html: str) -> list[str]:
    select = re.search(r'<select name="group" id="group-by">(.*?)</select>', html, re.S).group(1)
    return re.findall(r'<option value="([^"]*)"', select)


def test_config_columns_and_group_choices_come_from_every_filtered_run(client, tmp_path):
    # Three runs alike, then two (the newest) with a key of their own: page 2 only has it.
    for k in range(5):
        config = {"model": "mlp"} if k < 3 else {"model": "mlp", "dropout": 0.1 * k}
        with labstats.Stats(tmp_path / f"c{k}", name=f"c{k}", config=config) as stats:
            stats.log(step=0, loss=1.0)
    # Oldest first on page 2 when sorted by start ascending: the dropout runs are on page 2.
    html = client.get("/?limit=2&sort=started&order=asc").get_data(as_text=True)
    assert re.findall(r'data-col="name" data-value="([^"]+)"', html) == ["c0", "c1"]
    assert "config:dropout" in group_choices(html)
    assert 'data-col="config:dropout"' in html
    # The plain list (newest first, no filter) and a filter that leaves only alike runs.
    assert "config:dropout" in group_choices(client.get("/?limit=2&page=3").get_data(as_text=True))
    alike = client.get("/?limit=2&filter=" + 'name in ("c0", "c1", "c2")').get_data(as_text=True)
    assert group_choices(alike) == ["", "status"]
    # The plain list's keys over every run are reused a while; a new run's new key shows at once.
    with labstats.Stats(tmp_path / "c5", name="c5", config={"model": "mlp", "momentum": 0.9}) as stats:
        stats.log(step=0, loss=1.0)
    assert 'data-col="config:momentum"' in client.get("/?limit=2").get_data(as_text=True)
    # A column of a key that differs over every run but not on the shown page stays hidden.
    hidden = client.get("/?limit=2&sort=started&order=asc&hide=config:dropout").get_data(as_text=True)
    assert 'data-hidden="[&#34;config:dropout&#34;]"' in hidden
    assert '<input type="hidden" name="hide" value="config:dropout">' in hidden


def test_a_filter_that_matches_nothing_draws_nothing(client, sweep):
    answer = client.get("/explorer/view?q=nothing-like-this&metric=loss&split=lr")
    assert answer.status_code == 200
    assert answer.json["runs"] == 0
    assert answer.json["charts"] == []
    assert client.get("/explorer?q=nothing-like-this&metric=loss").status_code == 200


def test_fractional_epochs_and_time_since_start_as_x(client, tmp_path):
    """update()'s epochs: x = epoch + step × batch / set size, the seeds averaged there."""
    for seed in (0, 1):
        state = {"loss": 0.0}
        with labstats.Stats(tmp_path / f"u{seed}", name=f"u{seed}", config={"seed": seed}) as stats:
            stats.watch(lambda state=state: state["loss"], "loss")
            for epoch in range(2):
                for step in range(4):
                    state["loss"] = 10.0 * epoch + step + seed
                    stats.update(epoch, 100, 25, step)
    answer = client.get("/explorer/view?metric=loss&x=epoch&agg=mean").json
    (line,) = answer["charts"][0]["lines"]
    assert line["n"] == 2
    data = sources_of(answer["charts"][0]["spec"])["data-0"]
    np.testing.assert_allclose(data["x"], [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75])
    np.testing.assert_allclose(data["center"], [0.5, 1.5, 2.5, 3.5, 10.5, 11.5, 12.5, 13.5])
    relative = client.get("/explorer/view?metric=loss&x=relative&agg=none").json["charts"][0]["spec"]
    for xs in sources_of(relative)["data-runs"]["xs"]:
        assert 0 <= xs[0] < 60
        assert xs == sorted(xs)
