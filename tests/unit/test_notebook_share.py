"""Notebooks that share well: the example notebook, executed against a real Redis holding runs
logged by the real logger, saves at most 1 MB, and nbconvert's HTML export of it, opened from
disk in Chromium with every request refused, draws every chart from the one BokehJS it holds."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from browser import chromium  # noqa: F401  (a fixture)
from nbclient import NotebookClient

import labstats
import labstats.plot as lp

EXAMPLE = Path(__file__).resolve().parents[2] / "roles" / "jupyter" / "files" / "labstats-example.ipynb"
MAX_SAVED_BYTES = 2**20
# nbconvert's own HTML template asks cdnjs for these two; refused, each logs "Failed to load
# resource". Nothing else may be asked for, and no other console error may happen.
TEMPLATE_URLS = (
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/",
    "https://cdnjs.cloudflare.com/ajax/libs/mathjax/",
)

# Per chart target: drew when a canvas holds a painted pixel, or a table holds cells.
DRAWN = """() => [...document.querySelectorAll('.labstats-chart')].map((target) => {
  let painted = false, cells = 0;
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS' && el.width > 0 && el.height > 0) {
        const data = el.getContext('2d').getImageData(0, 0, el.width, el.height).data;
        for (let i = 3; i < data.length && !painted; i += 4) painted = data[i] > 0;
      }
      if (el.classList.contains('slick-cell') && el.textContent) cells++;
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(target);
  return painted || cells > 0;
})"""


def log_runs(tmp_path) -> None:
    """Three runs with a long loss and a small tensor, as a lab's sweep logs them."""
    for k in range(3):
        with labstats.Stats(tmp_path / f"r{k}", config={"k": k}) as stats:
            for i in range(5000):
                stats.log(step=i, loss=float(np.sin(i / 500) * (k + 1)))
            for i in range(30):
                stats.log(step=i * 100, weights=np.full((3, 4), i, dtype=np.float32))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, redis_server):
    """The example executed (as Jupyter's kernel would run it) against the test's Redis, saved,
    and converted with nbconvert: (saved notebook, its HTML)."""
    tmp_path = tmp_path_factory.mktemp("notebook")
    redis_server.client().flushall()
    with pytest.MonkeyPatch.context() as env:  # the kernel inherits these
        env.setenv("LABSTATS_URL", redis_server.url)
        env.setenv("LABSTATS_STATE_DIR", str(tmp_path / "state"))
        env.setenv("LABSTATS_ARTIFACT_DIR", str(tmp_path / "artifacts"))
        log_runs(tmp_path)
        nb = nbformat.read(EXAMPLE, as_version=4)
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    saved = tmp_path / "labstats-example.ipynb"
    nbformat.write(nb, saved)
    subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", str(saved)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return saved, saved.with_suffix(".html")


def chart_outputs(saved: Path) -> int:
    nb = json.loads(saved.read_text())
    htmls = [
        o["data"]["text/html"]
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "text/html" in o.get("data", {})
    ]
    return sum("labstats-chart" in "".join(h) for h in htmls)


def test_the_executed_example_saves_small_with_bokehjs_once(exported):
    saved, html = exported
    size = saved.stat().st_size
    assert size <= MAX_SAVED_BYTES, f"{size / 2**20:.2f} MiB"
    assert chart_outputs(saved) == 4  # the run's table, its loss, the comparison, the heat-map
    for text in (saved.read_text(), html.read_text()):
        assert text.count("window.labstatsBokeh = (async") == 1  # BokehJS once per document
        assert "cdn.bokeh.org" not in text
        assert "bokehjs_load" not in text  # Bokeh's own 4 MB loader (twice per notebook) is gone


def test_the_html_export_draws_every_chart_offline(exported, chromium):  # noqa: F811
    _, html = exported
    page = chromium.new_page()
    asked, errors = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(message):
        refused_template = message.text.startswith("Failed to load resource") and message.location[
            "url"
        ].startswith(TEMPLATE_URLS)
        if message.type == "error" and not refused_template:
            errors.append(message.text)

    page.on("console", console)

    def refuse(route):
        if route.request.url == html.as_uri():
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    page.route("**/*", refuse)
    page.goto(html.as_uri())
    page.wait_for_function(f"({DRAWN})().every(Boolean)", timeout=30_000)
    drawn = page.evaluate(DRAWN)
    assert drawn == [True] * 4  # as many drawn charts as the notebook shows
    assert page.evaluate("Bokeh.documents.length") == 4
    assert all(url.startswith(TEMPLATE_URLS) for url in asked), asked  # never a CDN for BokehJS
    assert errors == []
    page.close()


def test_a_hostile_name_cannot_close_the_chart_script(tmp_path, url):
    name = '</script><script>alert("x")</script><!--'
    with labstats.Stats(tmp_path / "hostile", name=name) as stats:
        stats.log(step=0, loss=1.0)
        stats.log(step=1, loss=0.5)
    html = lp.chart_html(lp.series(labstats.connect(url).run(stats.name), "loss"))
    assert html.count("</script>") == 1  # its own, at the end: the name cannot close it early
    assert html.endswith("</script>")
    assert "<!--" not in html
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert" in html  # the name, escaped


def test_the_setup_holds_the_bokeh_packages_own_minified_bundles_compressed():
    import base64
    import gzip
    import re

    from bokeh.util.paths import bokehjs_path

    html = lp.notebook_loader_html()
    parts = json.loads(re.search(r"const parts = (\[.*?\]), version", html).group(1))
    assert [gzip.decompress(base64.b64decode(p)) for p in parts] == [
        (bokehjs_path() / "js" / f"{name}.min.js").read_bytes() for name in lp.BUNDLES
    ]
    assert len(html) < 0.7 * 2**20  # the core and the tables: 1.6 MB minified, 0.58 MB here
    assert "src=" not in html  # nothing fetched
