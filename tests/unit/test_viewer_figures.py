"""A single chart as a file for a paper: GET /runs/<source>/<run_id>/figure.svg|png?series=NAME
draws one series server-side (axes with ticks, labels, the line, downsampled with its extremes
kept) from a real run in a real Redis; hostile names are escaped, bad parameters get a sentence."""

import io
import math
import re
import xml.etree.ElementTree as ET

import bcrypt
import numpy as np
import pytest
from PIL import Image

import labstats
from labstats.viewer import create_app
from labstats.viewer.auth import AuthConfig, hash_token
from labstats.viewer.figures import nice_ticks, tick_labels
from labstats.viewer.sources import Source

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>]]>&amp;<!--'  # the logger refuses control characters


@pytest.fixture
def logged(tmp_path, url):
    """A run with a long loss (peaks at ±3.5, far from the rest), a NaN gap, a text series,
    and a series whose name is hostile."""
    with labstats.Stats(tmp_path / "r", name="paper-run") as stats:
        for i in range(20_000):
            value = math.sin(i / 700)
            if i == 12_345:
                value = 3.5  # one spike: kept by the downsampling
            if i == 15_000:
                value = -3.5
            stats.log(step=i, loss=value, note="text" if i % 5000 == 0 else None)
        stats.log(step=20_000, gap=float("nan"))
        for i in range(10):
            stats.log(step=i, **{HOSTILE: float(i)})
    return stats.run_id


@pytest.fixture
def client(url):
    app = create_app({"local": Source("local", url)})
    return app.test_client()


def get(client, run_id, fmt="svg", **query):
    return client.get(f"/runs/local/{run_id}/figure.{fmt}", query_string=query)


def texts(root) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_svg_is_a_small_valid_figure_with_the_data_range(client, logged):
    answer = get(client, logged, series="loss")
    assert answer.status_code == 200
    assert answer.mimetype == "image/svg+xml"
    assert answer.headers["Content-Disposition"] == 'inline; filename="paper-run-loss.svg"'
    root = ET.fromstring(answer.data)
    assert root.tag == f"{SVG}svg"
    assert (root.get("width"), root.get("height")) == ("640", "400")
    assert not list(root.iter(f"{SVG}script"))
    labels = texts(root)
    assert "paper-run: loss" in labels  # the title
    assert "idx" in labels  # the x axis' label
    numbers = [float(t.replace("−", "-")) for t in labels if re.fullmatch(r"-?[\d.]+", t)]
    assert min(numbers) <= -3  # the y ticks cover the spikes
    assert max(numbers) >= 3
    assert max(numbers) >= 15_000  # the x ticks reach the end
    line = max(root.iter(f"{SVG}polyline"), key=lambda p: len(p.get("points").split()))
    points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
    assert 100 < len(points) <= 2000  # downsampled as on the run page
    ys = [y for _, y in points]
    # The two spikes survive the downsampling: the line reaches far above and below the sine.
    top, bottom = min(ys), max(ys)
    sine = sorted(ys)[len(ys) // 2]
    assert sine - top > 0.3 * (bottom - top)
    assert bottom - sine > 0.3 * (bottom - top)
    assert len(answer.data) < 80_000


def test_png_decodes_at_the_requested_size(client, logged):
    answer = get(client, logged, "png", series="loss", width=900, height=500, x="idx")
    assert answer.status_code == 200
    assert answer.mimetype == "image/png"
    image = Image.open(io.BytesIO(answer.data))
    assert image.format == "PNG"
    assert image.size == (900, 500)
    pixels = np.asarray(image.convert("RGB")).astype(int)
    blue = (abs(pixels - [31, 119, 180]).sum(axis=2) < 60).sum()
    assert blue > 500  # the line is drawn
    assert (pixels.sum(axis=2) < 200).sum() > 200  # and the dark axes and text
    default = Image.open(io.BytesIO(get(client, logged, "png", series="loss").data))
    assert default.size == (1280, 800)


def test_hostile_series_names_are_escaped_and_give_a_plain_file_name(client, logged):
    answer = get(client, logged, series=HOSTILE)
    assert answer.status_code == 200
    assert b"<script" not in answer.data
    assert b"<!--" not in answer.data
    assert HOSTILE in texts(ET.fromstring(answer.data))  # the y label, as text
    assert re.fullmatch(r'inline; filename="[A-Za-z0-9._-]+\.svg"', answer.headers["Content-Disposition"])
    png = get(client, logged, "png", series=HOSTILE)
    assert Image.open(io.BytesIO(png.data)).size == (1280, 800)


@pytest.mark.parametrize(
    ("fmt", "query", "status", "sentence"),
    [
        ("svg", {}, 400, "say which series"),
        ("svg", {"series": "nothing"}, 404, "nothing"),
        ("svg", {"series": "note"}, 400, "not numeric"),
        ("svg", {"series": "gap"}, 404, "no finite values"),
        ("svg", {"series": "loss", "x": "<b>"}, 400, "x must be one of"),
        ("svg", {"series": "loss", "x": "epoch"}, 404, "no epoch"),
        ("png", {"series": "loss", "width": "99999"}, 400, "width"),
        ("png", {"series": "loss", "height": "-1"}, 400, "height"),
        ("png", {"series": "loss", "width": "1e9"}, 400, "width"),
        ("svg", {"series": "loss", "title": "t" * 201}, 400, "title"),
        ("svg", {"series": "loss", "start": "nan"}, 400, "start"),
        ("svg", {"series": "loss", "stop": "x"}, 400, "stop"),
    ],
)
def test_bad_parameters_get_a_sentence(client, logged, fmt, query, status, sentence):
    answer = get(client, logged, fmt, **query)
    assert answer.status_code == status
    assert sentence in answer.get_data(as_text=True)
    assert "<b>" not in answer.get_data(as_text=True)


def test_unknown_runs_sources_and_formats(client, logged):
    assert client.get("/runs/local/no-such-run/figure.svg?series=loss").status_code == 404
    assert client.get(f"/runs/elsewhere/{logged}/figure.svg?series=loss").status_code == 404
    assert client.get(f"/runs/local/{logged}/figure.pdf?series=loss").status_code == 404


def test_a_window_is_drawn_at_full_resolution(client, logged):
    root = ET.fromstring(get(client, logged, series="loss", start=1000, stop=1499).data)
    line = max(root.iter(f"{SVG}polyline"), key=lambda p: len(p.get("points").split()))
    assert len(line.get("points").split()) == 500  # every point of the window
    numbers = [float(t) for t in texts(root) if re.fullmatch(r"-?[\d.]+", t)]
    assert 1000 <= min(n for n in numbers if n >= 1000) < max(numbers) <= 1499


def test_a_title_of_ones_own_or_none(client, logged):
    mine = ET.fromstring(get(client, logged, series="loss", title="Training loss").data)
    assert "Training loss" in texts(mine)
    # A title from the query may hold what XML cannot: left out, the file stays valid.
    odd = ET.fromstring(get(client, logged, series="loss", title="a\x01b\x1b<c>").data)
    assert "ab<c>" in texts(odd)
    bare = ET.fromstring(get(client, logged, series="loss", title="").data)
    assert not [t for t in texts(bare) if "loss" in t and t != "loss"]


def test_the_wall_clock_axes_are_dated(client, tmp_path, url):
    with labstats.Stats(tmp_path / "sys", name="sys-run") as stats:
        start = 1_780_000_000_000  # unix ms, as the sys/ series' idx
        for k in range(50):
            stats.log(step=start + k * 60_000, **{"sys/cpu_percent": float(k % 7)})
    root = ET.fromstring(get(client, stats.run_id, series="sys/cpu_percent", x="wall-idx").data)
    labels = texts(root)
    assert "wall-clock time (UTC)" in labels
    assert any(re.fullmatch(r"\d\d:\d\d", t) for t in labels)


def test_nice_ticks_and_their_labels():
    assert nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert tick_labels(nice_ticks(-1.05, 1.05)) == ["-1.0", "-0.5", "0.0", "0.5", "1.0"]
    assert tick_labels([0.25, 0.5, 0.75]) == ["0.25", "0.50", "0.75"]
    assert tick_labels([0, 2e6, 4e6]) == ["0", "2e+06", "4e+06"]


def test_a_reader_may_fetch_it_and_a_stranger_may_not(tmp_path, url, logged):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    (tmp_path / "users").write_text(f"carol:{hashed}:reader\n")
    token = "reader-token-" + "x" * 32
    (tmp_path / "tokens").write_text(f"carol-token:{hash_token(token)}:reader\n")
    section = {"users_file": str(tmp_path / "users"), "tokens_file": str(tmp_path / "tokens")}
    app = create_app({"local": Source("local", url)}, login=AuthConfig.load(section))
    path = f"/runs/local/{logged}/figure.png?series=loss"
    assert app.test_client().get(path).status_code in (302, 401)
    answer = app.test_client().get(path, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert Image.open(io.BytesIO(answer.data)).size == (1280, 800)


def test_the_run_page_links_each_chart_to_its_figures(client, logged):
    page = client.get(f"/runs/local/{logged}?x=idx").get_data(as_text=True)
    assert f'href="/runs/local/{logged}/figure.svg?series=loss"' in page
    assert f'href="/runs/local/{logged}/figure.png?series=loss"' in page


def test_charts_redrawn_in_place_keep_their_figure_links_on_the_pages_axis(client, logged):
    # viewer.js rebuilds a chart's head from this JSON on a control change (an axis, a filter).
    answer = client.get(f"/runs/local/{logged}/charts", query_string={"x": "time"})
    assert answer.status_code == 200
    plots = {p["name"]: p for p in answer.get_json()["plots"]}
    svg = plots["loss"]["figures"]["svg"]
    assert "x=time" in svg
    assert client.get(svg).mimetype == "image/svg+xml"
    assert Image.open(io.BytesIO(client.get(plots["loss"]["figures"]["png"]).data)).format == "PNG"
