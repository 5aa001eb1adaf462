"""Read-only links (/s/<token>) on the real app over the test's redis-server: anyone holding
one sees exactly the run or comparison it names, drawn as the one-file export, and nothing
else of the viewer; a revoked link is a 410 at once in every worker, an expired one a 410, a
forged one a 404 that names no run; only editors make links, each user lists and revokes
theirs, an admin all; only the token's hash is kept."""

import logging
import re
import sqlite3
import time
from pathlib import Path

import bcrypt
import numpy as np
import pytest
from clock import Clock
from flask import g, request

import labstats
from labstats.viewer import create_app
from labstats.viewer.auth import COOKIE, AuthConfig, hash_token
from labstats.viewer.csp import CSP, SHARE_CSP, policy_for
from labstats.viewer.share_store import DAY, ShareStore
from labstats.viewer.sources import Source

PASSWORD = "correct horse battery staple"
USERS = {"alice": "admin", "bob": "editor", "carol": "reader"}
EDITOR_TOKEN = "editor-token-" + "e" * 32
TOKEN_LINK = re.compile(r"/s/([A-Za-z0-9_-]{43})")


def log_run(directory, name: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    with labstats.Stats(directory / name, name=name, config={"seed": seed}) as stats:
        for step in range(50):
            stats.log(step=step, loss=float(np.exp(-step / 20) + rng.normal(0, 0.01)), acc=step / 50)
            if step % 20 == 0:
                stats.image("samples", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), step=step)
    return stats.run_id


@pytest.fixture
def section(tmp_path):
    lines = [
        f"{u}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}:{r}\n" for u, r in USERS.items()
    ]
    (tmp_path / "users").write_text("".join(lines))
    (tmp_path / "tokens").write_text(f"scripts:{hash_token(EDITOR_TOKEN)}:editor\n")
    return {
        "users_file": str(tmp_path / "users"),
        "tokens_file": str(tmp_path / "tokens"),
        "sessions_file": str(tmp_path / "viewer-state" / "sessions.sqlite"),
    }


@pytest.fixture
def runs(tmp_path, url, store):
    """Two runs with charts and pictures: the shared one, and one nobody shared."""
    return log_run(tmp_path, "shared-run", 1), log_run(tmp_path, "secret-other-run", 2)


@pytest.fixture
def make_app(url, store, section):
    def make(**extra):
        source = Source("local", url, artifact_dir=str(store.root), annotate_url=url)
        app = create_app({"local": source}, login=AuthConfig.load({**section, **extra}))
        app.testing = False
        return app

    return make


@pytest.fixture
def app(make_app):
    return make_app()


def session_client(app, user):
    """A browser of ``user``: a session cookie, and this viewer's Origin on every request."""
    guard, sessions = app.extensions["labstats_guard"], app.extensions["labstats_sessions"]
    session_id, _ = sessions.create(user, guard.fingerprint(user))
    client = app.test_client()
    client.environ_base["HTTP_ORIGIN"] = "http://localhost"
    client.set_cookie(COOKIE, session_id)
    return client


def share(client, **form) -> str:
    """Make a link through the Share form; its token."""
    made = client.post("/share", data=form)
    assert made.status_code == 200, made.text
    assert made.headers["Cache-Control"] == "no-store"
    (token,) = set(TOKEN_LINK.findall(made.text))
    return token


def test_anyone_with_the_link_sees_the_run_s_charts_and_pictures_and_nothing_else(app, runs):
    shared, other = runs
    token = share(session_client(app, "bob"), run=f"local/{shared}", days="3")
    anonymous = app.test_client()
    page = anonymous.get(f"/s/{token}")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert "shared-run" in page.text
    assert page.text.count("Bokeh.embed") >= 1  # the charts, drawn by the BokehJS inline
    assert len(re.findall(r"data:image/webp;base64,", page.text)) == 3  # steps 0, 20 and 40
    assert "secret-other-run" not in page.text
    assert other not in page.text
    assert page.headers["Content-Security-Policy"] == SHARE_CSP
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in page.headers  # no session, nothing to carry elsewhere
    # The same page for whoever is logged in as well (and for a HEAD).
    assert session_client(app, "carol").get(f"/s/{token}").status_code == 200
    assert anonymous.head(f"/s/{token}").status_code == 200


def test_the_token_is_no_session_and_no_api_token_anywhere_else(app, runs):
    shared, other = runs
    token = share(session_client(app, "bob"), run=f"local/{shared}")
    bearer = {"Authorization": f"Bearer {token}"}
    elsewhere = [
        "/",
        "/links",
        f"/runs/local/{shared}",
        f"/runs/local/{other}",
        f"/runs/local/{shared}/export.html",
        f"/compare?run=local/{other}",
        "/api/runs",
        f"/api/runs/local/{shared}",
        f"/api/runs/local/{other}/series/loss",
        f"/api/runs/local/{other}/thumb/samples?step=0",
        f"/api/runs/local/{shared}/thumb/samples?step=0",
        f"/api/runs/local/{other}/media/samples",
        "/api/openapi.json",
    ]
    for path in elsewhere:
        for client, headers in (
            (app.test_client(), bearer),  # as an API token
            (_with_cookie(app, token), {}),  # as a session cookie
            (app.test_client(), {}),  # in a query, as some servers read tokens
        ):
            asked = f"{path}{'&' if '?' in path else '?'}token={token}" if not headers else path
            answer = client.get(asked, headers=headers)
            if path.startswith("/api/"):
                assert answer.status_code == 401, (path, headers)
            else:  # the pages send whoever is not logged in to the login form: nothing shown
                assert answer.status_code == 302, (path, headers)
                assert answer.headers["Location"].startswith("/login?next="), path
            assert "shared-run" not in answer.text
            assert "secret-other-run" not in answer.text
    # Nor does it make or revoke links, or change anything.
    for method, path in (("POST", "/share"), ("POST", "/api/runs/local/x/trash")):
        assert app.test_client().open(path, method=method, headers=bearer).status_code in (302, 401)
    # Other /s/ paths: only exactly /s/<token> shows, and only its run.
    assert app.test_client().get(f"/s/{token}/runs/local/{other}").status_code in (302, 404)
    assert app.test_client().get(f"/s/{token}?run=local/{other}").text.count("secret-other-run") == 0
    assert app.test_client().get(f"/s/{token[:-1]}").status_code == 404


def _with_cookie(app, value):
    client = app.test_client()
    client.set_cookie(COOKIE, value)
    return client


def test_a_comparison_s_link_shows_its_runs_and_chosen_series(app, runs):
    token = share(session_client(app, "bob"), kind="compare", run=[f"local/{r}" for r in runs], series="loss")
    page = app.test_client().get(f"/s/{token}")
    assert page.status_code == 200
    assert "shared-run" in page.text
    assert "secret-other-run" in page.text
    assert "Comparison" in page.text
    assert '"loss"' in page.text
    assert '"acc"' not in page.text


def test_revoked_is_410_within_a_second_in_every_worker(make_app, runs):
    first, second = make_app(), make_app()  # two workers over one sessions file
    bob = session_client(first, "bob")
    token = share(bob, run=f"local/{runs[0]}")
    assert second.test_client().get(f"/s/{token}").status_code == 200
    (link,) = first.extensions["labstats_share"].links("bob")
    revoked = bob.post(f"/links/{link.id}/revoke")
    assert revoked.status_code == 303
    at = time.monotonic()
    gone = second.test_client().get(f"/s/{token}")
    assert gone.status_code == 410
    assert time.monotonic() - at < 1.0
    assert "shared-run" not in gone.text
    assert runs[0] not in gone.text
    assert gone.headers["Cache-Control"] == "no-store"
    # Revoking again changes nothing; the log has it once.
    assert bob.post(f"/links/{link.id}/revoke").status_code == 303
    actions = [e.action for e in first.extensions["labstats_share"].entries("bob")]
    assert actions == ["revoked", "created"]


def test_a_link_lasts_7_days_by_default_at_most_the_configured_maximum_and_then_is_410(make_app, runs):
    app = make_app(share_max_days=10)
    clock = Clock()
    app.extensions["labstats_share"] = ShareStore(app.extensions["labstats_sessions"].path, clock=clock)
    bob = session_client(app, "bob")
    token = share(bob, run=f"local/{runs[0]}")
    (link,) = app.extensions["labstats_share"].links("bob")
    assert link.expires_at - link.created_at == 7 * DAY
    for days in ("11", "0", "-1", "nan", "inf", "soon"):
        assert bob.post("/share", data={"run": f"local/{runs[0]}", "days": days}).status_code == 400, days
    longest = share(bob, run=f"local/{runs[0]}", days="10")
    clock.now += 7 * DAY - 1
    assert app.test_client().get(f"/s/{token}").status_code == 200
    clock.now += 1
    expired = app.test_client().get(f"/s/{token}")
    assert expired.status_code == 410
    assert "expired" in expired.text
    assert app.test_client().get(f"/s/{longest}").status_code == 200
    clock.now += 3 * DAY
    assert app.test_client().get(f"/s/{longest}").status_code == 410
    with pytest.raises(ValueError, match="share_max_days"):
        make_app(share_max_days=0)


def test_a_forged_or_unknown_link_is_404_and_names_no_run(app, runs):
    share(session_client(app, "bob"), run=f"local/{runs[0]}")
    answers = [
        app.test_client().get(f"/s/{forged}")
        for forged in ("A" * 43, "not-a-token", "x" * 4000, "%00", "-" * 43)
    ]
    for answer in answers:
        assert answer.status_code == 404
        for named in (*runs, "shared-run", "secret-other-run"):
            assert named not in answer.text
    assert answers[0].text == answers[1].text  # nothing told apart


def test_only_editors_make_links_from_their_own_site_and_each_revokes_only_their_own(app, runs, caplog):
    caplog.set_level(logging.INFO)
    run = f"local/{runs[0]}"
    carol = session_client(app, "carol")
    assert carol.post("/share", data={"run": run}).status_code == 403
    assert carol.get("/links").status_code == 200  # a reader lists (none of) hers
    bob = session_client(app, "bob")
    foreign = bob.post("/share", data={"run": run}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert app.extensions.get("labstats_share") is None or app.extensions["labstats_share"].links() == []
    share(bob, run=run)
    share(session_client(app, "alice"), run=run)
    scripted = app.test_client().post(
        "/share", data={"run": run}, headers={"Authorization": f"Bearer {EDITOR_TOKEN}"}
    )
    assert scripted.status_code == 200  # an editor's API token too (no browser adds it)
    store = app.extensions["labstats_share"]
    (bobs,) = store.links("bob")
    (alices,) = store.links("alice")
    assert carol.post(f"/links/{bobs.id}/revoke").status_code == 403
    assert bob.post(f"/links/{alices.id}/revoke").status_code == 404  # not said to exist
    assert bob.post(f"/links/{bobs.id}/revoke", headers={"Origin": "https://evil.example"}).status_code == 403
    assert store.get(bobs.id).revoked_at is None
    # bob's page lists his links only; alice (admin) lists all and revokes bob's.
    mine = bob.get("/links").text
    assert bobs.id in mine
    assert alices.id not in mine
    everyone = session_client(app, "alice")
    assert {bobs.id, alices.id} <= set(re.findall(r'data-link="([0-9a-f]+)"', everyone.get("/links").text))
    assert everyone.post(f"/links/{bobs.id}/revoke").status_code == 303
    assert store.get(bobs.id).revoked_by == "alice"
    page = bob.get("/links").text
    assert "revoked by alice" in page
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("share link")]
    assert any(line.startswith("share link created: user='bob'") for line in logged)
    assert any(
        line.startswith(f"share link revoked: user='alice' link={bobs.id} owner='bob'") for line in logged
    )


def test_a_link_to_a_run_in_the_trash_or_to_nothing_is_refused(app, runs):
    bob = session_client(app, "bob")
    assert bob.post("/share", data={"run": "local/no-such-run"}).status_code == 404
    assert bob.post("/share", data={"run": "no-slash"}).status_code == 400
    assert (
        bob.post(
            "/share", data={"kind": "compare", "run": [f"local/{runs[0]}"], "series": "nope"}
        ).status_code
        == 400
    )
    assert bob.post("/share", data={"kind": "picture", "run": f"local/{runs[0]}"}).status_code == 400
    token = share(bob, run=f"local/{runs[0]}")
    assert session_client(app, "alice").post(f"/api/runs/local/{runs[0]}/trash").status_code == 200
    trashed = app.test_client().get(f"/s/{token}")
    assert trashed.status_code == 410
    assert "shared-run" not in trashed.text
    assert session_client(app, "alice").post(f"/api/runs/local/{runs[0]}/restore").status_code == 200
    assert app.test_client().get(f"/s/{token}").status_code == 200


def test_only_the_token_s_hash_is_kept(app, runs, section):
    token = share(session_client(app, "bob"), run=f"local/{runs[0]}")
    state = Path(section["sessions_file"]).parent
    raw = b"".join(p.read_bytes() for p in state.iterdir())  # the file, its WAL and journal
    assert token.encode() not in raw
    with sqlite3.connect(section["sessions_file"]) as db:
        (digest,) = db.execute("SELECT token_sha256 FROM share_links").fetchone()
    assert digest == hash_token(token)
    assert len(token) == 43  # secrets.token_urlsafe(32): 256 random bits


def test_the_share_button_posts_what_its_page_shows(app, runs):
    run = labstats.connect(app.extensions["labstats_sources"]["local"].url).run(runs[0])
    button = app.jinja_env.from_string('{% include "_share_button.html" %}')
    with app.test_request_context("/"):
        g.role = "editor"
        on_run = button.render(source="local", run=run)
        on_compare = button.render(refs=["local/a", "local/b"], chosen_series=["loss"])
        g.role = "reader"
        for_reader = button.render(source="local", run=run)
    assert f'name="run" value="local/{runs[0]}"' in on_run
    assert 'value="run"' in on_run
    for field in ('value="compare"', 'value="local/a"', 'value="local/b"', 'value="loss"'):
        assert field in on_compare
    assert 'max="30"' in on_run
    assert 'value="7"' in on_run
    assert for_reader.strip() == ""


def test_the_share_page_alone_allows_the_export_s_inline_scripts():
    assert policy_for("share.open") == SHARE_CSP
    assert "'unsafe-inline'" in SHARE_CSP.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in SHARE_CSP
    assert "'self'" not in SHARE_CSP
    for endpoint in ("pages.run_page", "share.links_page", "share.create", "exports.run_file", None):
        assert policy_for(endpoint) == CSP


def test_the_share_routes_answer_any_input_without_a_server_error(url, store, runs):
    """The share routes fuzzed from the viewer's OpenAPI document (schemathesis), half the
    cases with a real run, token and link: no server error, and each takes real input."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error

    from labstats.viewer.openapi import document

    # An open viewer (a laptop's: no logins), as the viewer's own fuzzer has it.
    app = create_app({"local": Source("local", url, artifact_dir=str(store.root), annotate_url=url)})
    answered = set()

    @app.after_request
    def note(response):
        answered.add((request.endpoint, response.status_code // 100))
        return response

    token = share(app.test_client(), run=f"local/{runs[0]}")
    share(app.test_client(), run=f"local/{runs[0]}")  # another link: the one the fuzzer revokes
    link_id = app.extensions["labstats_share"].links()[0].id
    assert app.extensions["labstats_share"].find(token).id != link_id

    doc = document(app)
    schema = schemathesis.openapi.from_dict(doc)
    schema.app = app
    real = {
        "share.open": {"path_parameters": {"token": token}},
        "share.revoke": {"path_parameters": {"link_id": link_id}},
        "share.create": {"query": {"run": [f"local/{runs[0]}"]}},
        "share.links_page": {},
    }
    operations = [result.ok() for result in schema.get_all_operations()]
    ours = [op for op in operations if doc["paths"][op.path][op.method.lower()]["operationId"] in real]
    assert len(ours) == len(real)
    for operation in ours:
        endpoint = doc["paths"][operation.path][operation.method.lower()]["operationId"]

        @given(case=st.one_of(operation.as_strategy(), operation.as_strategy(**real[endpoint])))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()
    assert not [key for key in answered if key[1] == 5]
    took = {endpoint for endpoint, kind in answered if kind in (2, 3)}
    assert set(real) <= took


def test_the_store_bounds_each_user_s_links_and_forgets_links_long_ended(tmp_path, monkeypatch):
    from labstats.viewer import share_store

    clock = Clock()
    store = ShareStore(tmp_path / "state" / "sessions.sqlite", clock=clock)
    monkeypatch.setattr(share_store, "MAX_ACTIVE_LINKS", 2)
    target = {"source": "local", "run": "r"}
    _, first = store.create("bob", "run", target, "first", 7, 30)
    store.create("bob", "run", target, "second", 30, 30)
    with pytest.raises(share_store.ShareError, match="2 links in force"):
        store.create("bob", "run", target, "third", 7, 30)
    store.create("alice", "run", target, "hers", 7, 30)  # per user
    assert store.revoke(first.id, "bob")
    assert not store.revoke(first.id, "bob")  # once
    store.create("bob", "run", target, "third", 7, 30)  # a revoked link is not in force
    clock.now += (share_store.KEEP_ENDED_DAYS + 29) * DAY
    store.create("bob", "run", target, "later", 7, 30)
    # Ended over 90 days ago: revoked at once, or expired after 7 days; not yet the 30 days' one.
    assert [link.title for link in store.links("bob")] == ["later", "second"]
    clock.now += 2 * DAY
    store.create("bob", "run", target, "latest", 7, 30)
    assert [link.title for link in store.links("bob")] == ["latest", "later"]
    assert [e.action for e in store.entries("bob")] == ["created"] * 3 + ["revoked", "created", "created"]
    assert store.find("x" * 43) is None
    assert store.find("not a token") is None
