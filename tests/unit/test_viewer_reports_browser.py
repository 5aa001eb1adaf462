"""Reports through a real browser (Chromium on the viewer served on localhost, over the test's
redis-server): an editor writes a report with a chart panel and a media panel, sees the chart
drawn from the run's points and the pictures shown, edits it, and still opens version 1; the
report's hostile Markdown runs no script and its javascript: link is no link."""

import bcrypt
import numpy as np
import pytest
from browser import chromium, log_in, open_page, serving  # noqa: F401 (chromium: a fixture)

import labstats
from labstats.viewer import create_app
from labstats.viewer.auth import AuthConfig
from labstats.viewer.sources import Source

PASSWORD = "correct horse battery"
HOSTILE = (
    "We tried **three** learning rates.\n\n<script>window.pwned = 1; alert('script')</script>\n\n"
    "<img src=x onerror=\"window.pwned = 2; alert('img')\">\n\n[click me](javascript:window.pwned=3)\n"
)


@pytest.fixture
def viewer(url, tmp_path):
    with labstats.Stats(tmp_path / "r", name="reported") as stats:
        for step in range(300):
            stats.log(step=step, loss=1.0 / (step + 1))
        for step in (0, 100, 200):
            stats.image("samples", np.full((16, 24, 3), step, np.uint8), step=step)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    (tmp_path / "users").write_text(f"ed:{hashed}:editor\n")
    (tmp_path / "tokens").write_text("")
    login = AuthConfig.load({"users_file": str(tmp_path / "users"), "tokens_file": str(tmp_path / "tokens"),
                             "sessions_file": str(tmp_path / "state" / "sessions.sqlite")})  # fmt: skip
    with serving(create_app({"local": Source("local", url)}, login=login)) as base:
        yield base, stats.run_id


def drawn_points(page) -> list[int]:
    """Points of each raw line the page's charts draw (once their data has come)."""
    return page.evaluate(
        """() => Bokeh.documents.flatMap(d => [...d.all_models])
            .filter(m => m.type === 'GlyphRenderer' && m.glyph.type === 'Line')
            .filter(m => (m.name || '').startsWith('raw-'))
            .map(m => m.data_source.data.idx.length)"""
    )


def test_an_editor_writes_a_report_sees_its_panels_edits_it_and_opens_version_1(chromium, viewer):  # noqa: F811
    base, run_id = viewer
    context = chromium.new_context(viewport={"width": 1280, "height": 1400})
    page, errors = open_page(chromium, base + "/login", context=context)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, base, "ed", PASSWORD)
    page.goto(base + "/reports")
    page.click("a.new-report")
    page.fill("form.report-form input[name=title]", "Learning rates")
    body = (f"{HOSTILE}\n```labstats\nchart run=local/{run_id} series=loss\n"
            f"media run=local/{run_id} name=samples steps=0,150\n```\n")  # fmt: skip
    page.fill("form.report-form textarea[name=body]", body)
    page.click("button.save-report")
    page.wait_for_selector("h1.report-title")
    assert page.inner_text("h1.report-title") == "Learning rates"
    # the chart, drawn from the run's points (loaded from the API, as on its run page)
    page.wait_for_function(
        "() => window.Bokeh && Bokeh.documents.length === 1 && Bokeh.documents[0].all_models.size > 0"
    )
    page.wait_for_function("() => Bokeh.documents.length === 1")
    page.wait_for_function("""() => Bokeh.documents.flatMap(d => [...d.all_models])
        .some(m => m.type === 'GlyphRenderer' && (m.data_source.data.idx || []).length > 0)""")
    assert max(drawn_points(page)) > 10
    assert page.locator(".report-panel[data-kind=chart] canvas").count() >= 1
    # the pictures at steps 0 and 100 (the latest logged at or before 150), decoded
    page.wait_for_function("[...document.querySelectorAll('.report-pictures img')].every(i => i.complete)")
    widths = page.evaluate("[...document.querySelectorAll('.report-pictures img')].map(i => i.naturalWidth)")
    assert len(widths) == 2
    assert all(w > 0 for w in widths)
    assert page.locator(".report-pictures figcaption").all_inner_texts() == ["step 0", "step 100"]
    # hostile Markdown: text, no script ran, and the javascript: link is no link
    assert page.inner_text(".report-body strong") == "three"
    assert "<script>window.pwned" in page.inner_text(".report-body")
    assert page.locator(".report-body script:not(.chart-spec), .report-body img:not(.thumb)").count() == 0
    assert page.locator(".report-body a:has-text('click me')").count() == 0  # text, not a link
    assert "[click me](javascript:window.pwned=3)" in page.inner_text(".report-body")
    hrefs = page.evaluate("[...document.querySelectorAll('.report-body a')].map(a => a.protocol)")
    assert set(hrefs) == {"http:"}  # the panels' links to the run's page
    assert page.evaluate("window.pwned") is None
    first_url = page.url
    # an edit is version 2; version 1 still opens, as it was
    page.click("a.report-edit")
    page.fill("form.report-form textarea[name=body]", "Only words now.")
    page.click("button.save-report")
    page.wait_for_selector("p.report-meta")
    assert "version 2 of 2" in page.inner_text("p.report-meta")
    assert page.inner_text(".report-body") == "Only words now."
    page.click(".report-versions summary")
    page.click(".report-versions a:has-text('version 1')")
    page.wait_for_selector(".old-version")
    assert "version 1 of 2" in page.inner_text("p.report-meta")
    assert page.locator(".report-panel").count() == 2
    page.wait_for_function("window.Bokeh && Bokeh.documents.length === 1")
    assert page.url.startswith(first_url)
    assert errors == []
    assert dialogs == []
    context.close()
