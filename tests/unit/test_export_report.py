"""A report as one HTML file (labstats.viewer.reports.report_export_html): opened from disk in
Chromium with every other request refused, it draws every chart of every panel (a 10,000-point
series downsampled in the file), shows its pictures from the file itself, runs no script of
the report's Markdown, and stays small."""

import numpy as np
from browser import chromium  # noqa: F401 (a fixture)

import labstats
from labstats import export
from labstats.viewer import create_app
from labstats.viewer.reports import report_export_html
from labstats.viewer.sources import Source

BODY = """# What we found

<script>window.pwned = 1</script> and [a link](javascript:window.pwned=2) stay text.

```labstats
chart run={a} series=loss,acc
compare metric=loss agg=mean color=opt
media run={a} name=samples steps=0,100,199
table columns=name,config:lr,loss:min
hparams metric=loss
chart run=local/gone series=loss
```
"""


def log_run(tmp_path, name: str, k: int, steps: int) -> str:
    config = {"lr": 0.1 * (k + 1), "seed": k, "opt": "adam" if k % 2 else "sgd"}
    with labstats.Stats(tmp_path / name, name=name, config=config) as s:
        for i in range(steps):
            s.log(step=i, loss=float(np.exp(-i / 1000) + k), acc=i / steps)
        for step in (0, 100, 199):
            s.image("samples", np.full((16, 16, 3), step, np.uint8), step=step)
    return s.run_id


def test_an_exported_report_opens_offline_with_every_chart_and_picture(url, tmp_path, chromium):  # noqa: F811
    ids = [log_run(tmp_path, f"run-{k}", k, 10_000 if k == 0 else 300) for k in range(4)]
    app = create_app({"local": Source("local", url)})
    client = app.test_client()
    answer = client.post("/reports", data={"title": "Offline", "body": BODY.format(a=f"local/{ids[0]}")})
    report_id = answer.headers["Location"].rsplit("/", 1)[1]
    with app.test_request_context():
        html = report_export_html(report_id)
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    size = len(html.encode())
    assert size < 2 * 2**20, f"{size / 2**20:.2f} MiB"
    assert html.count('class="chart-spec"') == 3  # the chart, the comparison's one chart, hparams
    page = chromium.new_page()
    asked, errors = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    def refuse(route):
        if route.request.url == path.as_uri():
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    page.route("**/*", refuse)
    page.goto(path.as_uri())
    page.wait_for_function("window.Bokeh && Bokeh.documents.length === 3")
    page.wait_for_function("[...document.images].every(i => i.complete)")
    assert asked == []
    assert errors == []
    assert page.evaluate("window.pwned") is None
    # the javascript: link is text (the light DOM: Bokeh's toolbars have links of their own)
    assert page.evaluate("document.querySelectorAll('article a').length") == 0
    assert page.locator("article script:not(.chart-spec)").count() == 0
    assert page.evaluate("Bokeh.documents.every(d => d.roots().length === 1)")
    lines = page.evaluate(
        """() => Bokeh.documents.flatMap(d => [...d.all_models])
            .filter(m => m.type === 'GlyphRenderer' && m.glyph.type === 'Line' && m.data_source.data.idx)
            .map(m => m.data_source.data.idx.length)"""
    )
    assert sorted(lines)[-2:] == [export.MAX_POINTS, export.MAX_POINTS]  # 10,000 points: downsampled
    widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
    assert len(widths) == 3
    assert all(w > 0 for w in widths)
    assert "run local/gone is not there" in page.inner_text(".report-placeholder")
    assert page.title() == "Offline"
    page.close()
