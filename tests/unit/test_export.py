"""One-file HTML export: a run or a comparison opens from disk in Chromium with every chart
drawn and every picture shown, asks no network for anything, stays small, and shows hostile
names and config as text."""

import re
import shutil

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

import labstats
from labstats import cli, export
from labstats.format import media_record

HOSTILE = '<script>alert("x")</script><img src=https://evil.example/p.png>'


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    assert path, "Debian's chromium is missing (scripts/host-setup.sh installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def log_run(tmp_path, name: str, seed: int, steps: int = 300, series: int = 3) -> str:
    rng = np.random.default_rng(seed)
    config = {"lr": 0.01 * seed, "seed": seed, "opt": {"name": "adam", "note": HOSTILE}}
    with labstats.Stats(tmp_path / name, name=name, config=config) as stats:
        for step in range(steps):
            values = {
                f"m{k}/value": float(np.exp(-step / 100) * (k + 1) + rng.normal(0, 0.01))
                for k in range(series)
            }
            stats.log(step=step, lr=0.001, **values)  # lr: a constant
            if step % 100 == 0:
                stats.image("samples", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8), step=step)
        stats.log(step=steps, note=HOSTILE, nan_series=float("nan"))
    return stats.run_id


def open_offline(chromium, path):
    """The file opened from disk with every other request refused (and counted)."""
    page = chromium.new_page()
    asked, errors = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def refuse(route):
        if route.request.url == path.as_uri():
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    page.route("**/*", refuse)
    page.goto(path.as_uri())
    page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0")
    page.wait_for_function("[...document.images].every(i => i.complete)")
    return page, asked, errors


def drawn_lines(page) -> list[int]:
    """Points of each line the page's charts draw."""
    return page.evaluate(
        """() => Bokeh.documents.flatMap(d => [...d.all_models])
            .filter(m => m.type === 'GlyphRenderer' && m.glyph.type === 'Line')
            .map(m => m.data_source.data.idx.length)"""
    )


def test_a_run_opens_offline_with_its_charts_pictures_and_config_as_text(tmp_path, url, store, chromium):
    run = labstats.connect(url).run(log_run(tmp_path, "exported", 1))
    html = export.run_html(run)
    path = tmp_path / "run.html"
    path.write_text(html, encoding="utf-8")
    assert len(re.findall(r"<script\b", html)) == len(re.findall(r"<script\b[^>]*>", html))
    assert not re.search(
        r"<(script|link|img|iframe)\b[^>]*\b(src|href)=\"(?!data:)", html
    )  # nothing to fetch
    assert HOSTILE not in html  # shown as text, escaped
    assert "&lt;script&gt;alert(" in html
    page, asked, errors = open_offline(chromium, path)
    assert asked == []
    assert errors == []
    # m0/value, m1/value, m2/value, lr and nan_series (NaN left out: an empty line): one line each
    lines = drawn_lines(page)
    assert len(lines) == 5
    assert sorted(lines)[-3:] == [300, 300, 300]
    widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
    assert len(widths) == 3  # steps 0, 100 and 200
    assert all(w > 0 for w in widths)  # decoded, from the file itself
    assert page.evaluate("document.querySelectorAll('figcaption')[2].textContent") == "step 200"
    assert page.evaluate("document.title") == "exported"
    page.close()


def test_a_comparison_of_ten_charts_is_small_and_draws_a_line_per_run(tmp_path, url, store, chromium):
    lab = labstats.connect(url)
    runs = [lab.run(log_run(tmp_path, f"sweep-{k}", k, steps=20_000, series=10)) for k in (1, 2, 3)]
    html = export.compare_html(runs)
    path = tmp_path / "compare.html"
    path.write_text(html, encoding="utf-8")
    size = len(html.encode())
    assert size <= 2 * 2**20, f"{size / 2**20:.2f} MiB"
    page, asked, errors = open_offline(chromium, path)
    assert asked == []
    assert errors == []
    lines = drawn_lines(page)
    assert len(lines) == 12 * 3  # ten series, lr and nan_series: a line per run on each chart
    assert max(lines) == export.MAX_POINTS  # 20,000 points downsampled
    assert "Config: lr" in html  # what differs between the runs
    assert "Config: opt.name" not in html  # what is the same
    page.close()


def test_the_cli_writes_the_file_and_refuses_a_series_no_run_has(tmp_path, url, store, capsys):
    log_run(tmp_path, "one", 1, steps=50)
    log_run(tmp_path, "two", 2, steps=50)
    out = tmp_path / "both.html"
    assert cli.main(["--url", url, "export-html", "one", "two", "--series", "lr", "-o", str(out)]) == 0
    assert "opens offline" in capsys.readouterr().out
    assert out.read_text().count("Bokeh.embed.embed_items") == 1
    assert cli.main(["--url", url, "export-html", "one", "two", "--series", "nope", "-o", str(out)]) == 1
    assert "has a numeric series named nope" in capsys.readouterr().err


def test_the_viewer_offers_both_files_from_its_pages(tmp_path, url, store):
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    one, two = log_run(tmp_path, "one", 1, steps=50), log_run(tmp_path, "two", 2, steps=50)
    client = create_app({"local": Source("local", url)}).test_client()
    page = client.get(f"/runs/local/{one}").get_data(as_text=True)
    link = re.search(r'href="([^"]+/export\.html)"', page).group(1)
    answer = client.get(link)
    assert answer.status_code == 200
    assert answer.headers["Content-Disposition"] == 'attachment; filename="one.html"'
    assert "Bokeh.embed.embed_items" in answer.get_data(as_text=True)
    compare = client.get(f"/compare?run=local/{one}&run=local/{two}&series=lr").get_data(as_text=True)
    link = re.search(r'href="(/compare/export\.html[^"]+)"', compare).group(1).replace("&amp;", "&")
    answer = client.get(link)
    assert answer.status_code == 200
    assert answer.get_data(as_text=True).count("Bokeh.embed.embed_items") == 1
    assert client.get("/runs/local/no-such-run/export.html").status_code == 404
    assert client.get("/compare/export.html").status_code == 400


def test_a_thumbnail_its_owner_made_huge_is_left_out_unread(tmp_path, url, store, lab):
    run = lab.run(log_run(tmp_path, "planted", 1, steps=150))
    key = lab.keys.media_thumbs(run.id, media_record.media_id("samples"))
    field = media_record.field_name(100, 0)
    lab.redis.hset(key, field, b"RIFF\0\0\0\0WEBP" + b"x" * (export.media_files.THUMB_READ_MAX_BYTES + 1))
    html = export.run_html(lab.run(run.id))
    assert html.count("data:image/webp;base64,") == 1  # step 0 only; the planted one is not embedded
    assert "step 100" not in html
