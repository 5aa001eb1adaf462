"""A read-only link's journey in a real browser (Debian's Chromium) on the real viewer over
the test's redis-server: an editor makes the link on the Links page, a browser with no
account and no cookie opens it and sees the run's charts drawn and its pictures (the
export's inline BokehJS allowed by the /s/ policy, nothing else fetched), and after the
editor revokes it, the same link is a 410 within a second."""

import time

import bcrypt
import numpy as np
from browser import chromium, log_in, open_page, serving  # noqa: F401 (chromium: a fixture)

import labstats
from labstats.viewer import create_app
from labstats.viewer.auth import AuthConfig
from labstats.viewer.sources import Source

PASSWORD = "correct horse battery"


def test_an_editor_shares_a_run_an_anonymous_browser_sees_it_drawn_until_it_is_revoked(
    chromium,  # noqa: F811
    url,
    store,
    tmp_path,
):
    with labstats.Stats(tmp_path / "r", name="shared-journey") as stats:
        for step in range(60):
            stats.log(step=step, loss=1.0 / (step + 1))
            if step % 30 == 0:
                stats.image("samples", np.full((16, 16, 3), 40 + step, np.uint8), step=step)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    (tmp_path / "users").write_text(f"ed:{hashed}:editor\n")
    login = AuthConfig.load({"users_file": str(tmp_path / "users"),
                             "sessions_file": str(tmp_path / "state" / "sessions.sqlite")})  # fmt: skip
    app = create_app({"local": Source("local", url, artifact_dir=str(store.root))}, login=login)
    with serving(app) as base:
        editor, errors = open_page(chromium, base + "/login")
        log_in(editor, base, "ed", PASSWORD)
        editor.goto(base + "/links")
        editor.fill("form.share-new textarea[name=runs]", f"local/{stats.run_id}")
        editor.click("form.share-new button")
        link = editor.input_value("input.share-url")
        assert link.startswith(f"{base}/s/")
        assert errors == []

        anonymous = chromium.new_context()  # no cookie, no login
        assert anonymous.cookies() == []
        page = anonymous.new_page()
        problems, asked = [], []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("request", lambda request: asked.append(request.url))
        shown = page.goto(link)
        assert shown.status == 200
        page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0", timeout=20_000)
        page.wait_for_function("[...document.images].every(i => i.complete)")
        lines = page.evaluate(
            """() => Bokeh.documents.flatMap(d => [...d.all_models])
                .filter(m => m.type === 'GlyphRenderer' && m.glyph.type === 'Line')
                .map(m => m.data_source.data.idx.length)"""
        )
        assert 60 in lines
        page.wait_for_selector(".bk-Canvas, .bk-canvas, canvas", state="attached")
        widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
        assert len(widths) == 2  # steps 0 and 30
        assert all(w > 0 for w in widths)
        assert problems == []  # no script error, no refused inline script
        assert asked == [link]  # the one file: nothing else fetched, from the viewer or elsewhere
        assert page.title() == "shared-journey"

        editor.goto(base + "/links")
        editor.click("tr.share-link.active button.revoke")
        editor.wait_for_selector("tr.share-link.revoked")
        revoked_at = time.monotonic()
        gone = page.goto(link)
        assert gone.status == 410
        assert time.monotonic() - revoked_at < 1.0
        assert "revoked" in page.inner_text("body")
        assert "shared-journey" not in page.content()
        anonymous.close()


def test_an_anonymous_browser_sees_a_shared_report_s_charts_and_pictures(chromium, url, store, tmp_path):  # noqa: F811
    with labstats.Stats(tmp_path / "r", name="reported-journey") as stats:
        for step in range(40):
            stats.log(step=step, loss=1.0 / (step + 1))
            if step % 20 == 0:
                stats.image("samples", np.full((16, 16, 3), 60 + step, np.uint8), step=step)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    (tmp_path / "users").write_text(f"ed:{hashed}:editor\n")
    login = AuthConfig.load({"users_file": str(tmp_path / "users"),
                             "sessions_file": str(tmp_path / "state" / "sessions.sqlite")})  # fmt: skip
    app = create_app({"local": Source("local", url, artifact_dir=str(store.root))}, login=login)
    body = (f"# What we found\n\n```labstats\nchart run=local/{stats.run_id} series=loss\n"
            f"media run=local/{stats.run_id} name=samples\n```\n")  # fmt: skip
    with serving(app) as base:
        editor, errors = open_page(chromium, base + "/login")
        log_in(editor, base, "ed", PASSWORD)
        saved = editor.request.post(base + "/reports", form={"title": "Shared findings", "body": body},
                                    headers={"Origin": base}, max_redirects=0)  # fmt: skip
        assert saved.status == 303
        report_id = saved.headers["location"].rstrip("/").rsplit("/", 1)[1]
        editor.goto(base + "/links")
        editor.select_option("form.share-new select[name=kind]", "report")
        editor.fill("form.share-new input[name=report]", report_id)
        editor.click("form.share-new button")
        link = editor.input_value("input.share-url")
        assert errors == []

        anonymous = chromium.new_context()
        page = anonymous.new_page()
        problems, asked = [], []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("request", lambda request: asked.append(request.url))
        assert page.goto(link).status == 200
        page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0", timeout=20_000)
        page.wait_for_function("[...document.images].every(i => i.complete)")
        assert "Shared findings" in page.title()
        lines = page.evaluate(
            """() => Bokeh.documents.flatMap(d => [...d.all_models])
                .filter(m => m.type === 'GlyphRenderer' && m.glyph.type === 'Line')
                .map(m => m.data_source.data[m.glyph.x.field].length)"""
        )
        assert 40 in lines
        assert page.evaluate("[...document.images].filter(i => i.naturalWidth > 0).length") >= 1
        assert problems == []
        assert asked == [link]
        anonymous.close()
