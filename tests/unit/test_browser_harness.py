"""The unit suite's browser harness works as the page tests assume: Chromium reaches the
served viewer, keeps a login's session cookie, and sees a logged run's chart drawn."""

import bcrypt
from browser import chromium, log_in, open_page, serving  # noqa: F401 (chromium: a fixture)

import labstats
from labstats.viewer import create_app
from labstats.viewer.auth import AuthConfig
from labstats.viewer.sources import Source


def test_a_logged_in_browser_sees_a_run_drawn(chromium, url, tmp_path):  # noqa: F811
    with labstats.Stats(tmp_path / "r", name="harness") as stats:
        for step in range(50):
            stats.log(step=step, loss=1.0 / (step + 1))
    hashed = bcrypt.hashpw(b"correct horse battery", bcrypt.gensalt(4)).decode()
    (tmp_path / "users").write_text(f"ann:{hashed}:editor\n")
    (tmp_path / "tokens").write_text("")
    login = AuthConfig.load({"users_file": str(tmp_path / "users"), "tokens_file": str(tmp_path / "tokens"),
                             "sessions_file": str(tmp_path / "state" / "sessions.sqlite")})  # fmt: skip
    with serving(create_app({"local": Source("local", url)}, login=login)) as base:
        page, errors = open_page(chromium, base + "/")
        assert "/login" in page.url
        log_in(page, base, "ann", "correct horse battery")
        page.goto(f"{base}/runs/local/{stats.run_id}")
        page.wait_for_selector(".bk-target[data-rendered=true]", timeout=20_000)
        assert "ann · editor" in page.inner_text("header")
        assert errors == []
