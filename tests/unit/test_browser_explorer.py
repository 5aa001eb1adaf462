"""The explorer in Chromium, as a person uses it: a sweep of 2 lr × 3 seeds opened from the
runs table, split, coloured and aggregated with the page's own controls; the band drawn is
the mean ± std computed here from the logged numbers; the URL keeps the view after a
reload; no script errors."""

import re

import numpy as np
from browser import chromium, open_page, serving  # noqa: F401 (chromium: a fixture)

import labstats
from labstats.viewer import create_app
from labstats.viewer.sources import Source

LRS = (0.1, 0.01)
SEEDS = (0, 1, 2)
STEPS = 20

# Per chart (its title): each line's label and its data source's columns, as drawn.
DRAWN_JS = """() => Bokeh.documents.map((doc) => {
  const fig = doc.roots()[0];
  const lines = fig.renderers.filter((r) => r.name && r.name.startsWith("line-"));
  return [fig.title.text, lines.map((r) => {
    const d = r.data_source.data;
    const column = (k) => (d[k] ? Array.from(d[k]) : null);
    return {label: r.data_source.tags[0], x: column("x"), center: column("center"), lower: column("lower"),
            upper: column("upper"), count: column("count"), color: r.glyph.line_color};
  })];
})"""


def loss_of(lr: float, seed: int, step: int) -> float:
    return (1.0 + seed * 0.4 + lr * 3) / (step + 1) + 0.02 * ((seed * 5 + step) % 3)


def drawn(page) -> dict:
    page.wait_for_function("() => !document.getElementById('explorer-form').dataset.busy")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#explorer-charts .bk-target')].every((t) => t.dataset.rendered)"
    )
    return dict(page.evaluate(DRAWN_JS))


def settle(page, action) -> None:
    """Do ``action`` and wait for the view it asks for to be drawn."""
    with page.expect_response(re.compile(r"/explorer/view\?")):
        action()
    drawn(page)


def test_a_sweep_split_coloured_and_averaged_in_the_browser(chromium, url, tmp_path):  # noqa: F811
    logged = {}
    for lr in LRS:
        for seed in SEEDS:
            config = {"lr": lr, "seed": seed, "opt": "adam" if seed < 2 else "sgd"}
            with labstats.Stats(tmp_path / f"r{lr}-{seed}", name=f"lr{lr}-s{seed}", config=config) as stats:
                for step in range(STEPS):
                    stats.log(step=step, loss=loss_of(lr, seed, step))
            logged[(lr, seed)] = np.array([loss_of(lr, seed, s) for s in range(STEPS)])
    with serving(create_app({"local": Source("local", url)})) as base:
        page, errors = open_page(chromium, base + "/")
        page.click("text=explorer")
        page.wait_for_url(re.compile(r"/explorer"))
        first = drawn(page)
        assert list(first) == ["loss"]
        # Aggregate over seed and opt (opt only follows the seed here): one line per lr.
        settle(page, lambda: page.check('#explorer-over input[value="opt"]'))
        settle(page, lambda: page.select_option("#explorer-color", "lr"))
        charts = drawn(page)
        lines = {line["label"]: line for line in charts["loss"]}
        assert sorted(lines) == ["lr=0.01 (n=3)", "lr=0.1 (n=3)"]
        assert lines["lr=0.01 (n=3)"]["color"] != lines["lr=0.1 (n=3)"]["color"]
        for lr in LRS:
            line = lines[f"lr={lr} (n=3)"]
            values = np.vstack([logged[(lr, seed)] for seed in SEEDS])
            assert line["x"] == list(range(STEPS))
            np.testing.assert_allclose(line["center"], values.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(line["lower"], values.mean(axis=0) - values.std(axis=0), rtol=1e-12)
            np.testing.assert_allclose(line["upper"], values.mean(axis=0) + values.std(axis=0), rtol=1e-12)
            assert line["count"] == [3] * STEPS
        assert page.inner_text(".explorer-lines").count("(n=3)") == 2
        # Split by lr: a chart per lr, each one line of 3 runs; then the median and its min–max band.
        settle(page, lambda: page.select_option("#explorer-split", "lr"))
        settle(page, lambda: page.select_option("#explorer-agg", "median"))
        charts = drawn(page)
        assert sorted(charts) == ["loss · lr = 0.01", "loss · lr = 0.1"]
        (line,) = charts["loss · lr = 0.1"]
        values = np.vstack([logged[(0.1, seed)] for seed in SEEDS])
        np.testing.assert_allclose(line["center"], np.median(values, axis=0), rtol=1e-12)
        np.testing.assert_allclose(line["lower"], values.min(axis=0), rtol=1e-12)
        np.testing.assert_allclose(line["upper"], values.max(axis=0), rtol=1e-12)
        settle(page, lambda: page.check("#explorer-log"))
        # The URL holds the view: a reload draws the same charts with the same controls.
        assert "split=lr" in page.url
        assert "agg=median" in page.url
        assert "y=log" in page.url
        before = drawn(page)
        page.reload()
        assert drawn(page) == before
        assert page.input_value("#explorer-split") == "lr"
        assert page.input_value("#explorer-agg") == "median"
        assert page.is_checked("#explorer-log")
        assert page.is_checked('#explorer-over input[value="opt"]')
        # A filter that does not parse: said on the page, the charts kept; a good one applies.
        page.fill("#explorer-filter", "lr <")
        with page.expect_response(re.compile(r"/explorer/view\?")):
            page.press("#explorer-filter", "Enter")
        page.wait_for_selector("#explorer-error:not([hidden])")
        assert page.inner_text("#explorer-error").startswith("filter:")
        page.fill("#explorer-filter", "lr > 0.05")
        settle(page, lambda: page.press("#explorer-filter", "Enter"))
        assert page.is_hidden("#explorer-error")
        assert list(drawn(page)) == ["loss · lr = 0.1"]
        assert "filter=lr+%3E+0.05" in page.url
        assert errors == []
