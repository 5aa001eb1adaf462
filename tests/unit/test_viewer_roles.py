"""Viewer roles: every user and token is a reader, an editor or an admin, and one check before
every request decides (GET/HEAD/OPTIONS: reader; any other method: editor, but for the few
endpoints in READER_POSTS). A route walker over the real app's URL map proves it for every
route there is now and every route added later. And a user's own password, set in the viewer:
kept in the viewer's state until the inventory's hash for that user changes."""

import logging

import bcrypt
import pytest
from clock import Clock
from flask import jsonify

import labstats
from labstats.viewer import create_app
from labstats.viewer.auth import (
    COOKIE,
    PUBLIC_ENDPOINTS,
    READ_METHODS,
    READER_POSTS,
    ROLES,
    AuthConfig,
    has_role,
    hash_token,
    parse_role,
    read_entries,
    requires,
)
from labstats.viewer.sources import Source

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a new one, long enough"
USERS = {"alice": "admin", "bob": "editor", "carol": "reader"}
TOKENS = {f"{role}-token-{'x' * 32}": role for role in ROLES}
CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def users_line(user: str, password: str, role: str | None) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return f"{user}:{hashed}:{role}\n" if role else f"{user}:{hashed}\n"


@pytest.fixture
def section(tmp_path):
    users = "".join(users_line(user, PASSWORD, role) for user, role in USERS.items())
    # dave's line is from before roles: a reader until the next converge writes his role.
    (tmp_path / "users").write_text(users + users_line("dave", PASSWORD, None))
    tokens = "".join(f"{role}:{hash_token(token)}:{role}\n" for token, role in TOKENS.items())
    (tmp_path / "tokens").write_text(tokens + f"old:{hash_token('o' * 40)}\n")
    return {
        "users_file": str(tmp_path / "users"),
        "tokens_file": str(tmp_path / "tokens"),
        "sessions_file": str(tmp_path / "viewer-state" / "sessions.sqlite"),
    }


@pytest.fixture
def make_app(url, tmp_path):
    with labstats.Stats(tmp_path / "r", name="roles") as stats:
        stats.log(step=0, loss=1.0)

    def make(section: dict):
        app = create_app({"local": Source("local", url)}, login=AuthConfig.load(section))
        app.testing = False

        # Routes that change something, as the annotations and the trash will add: the
        # walker must find them refused to readers by the default alone, nothing declared.
        def change():
            return jsonify({"changed": True})

        app.add_url_rule("/api/test/change", "test_api_change", change, methods=CHANGING)
        app.add_url_rule("/test/change", "test_page_change", change, methods=CHANGING)
        app.add_url_rule("/test/admin", "test_admin_only", requires("admin")(lambda: "admin page"))
        return app

    return make


@pytest.fixture
def app(make_app, section):
    return make_app(section)


def browser(app):
    """A test client that sends the viewer's own Origin, as a browser does with every change
    a page of the viewer makes (a change without it is refused: test_viewer_annotate.py)."""
    client = app.test_client()
    client.environ_base["HTTP_ORIGIN"] = "http://localhost"
    return client


def session_client(app, user):
    """A client with a fresh session of ``user`` (made by the viewer's own store, as a login
    does, so a walk that logs out or changes a password does not end the next request's)."""
    guard, store = app.extensions["labstats_guard"], app.extensions["labstats_sessions"]
    session_id, _ = store.create(user, guard.fingerprint(user))
    client = browser(app)
    client.set_cookie(COOKIE, session_id)
    return client


def log_in(client, user="alice", password=PASSWORD, **headers):
    return client.post("/login", data={"user": user, "password": password, "next": "/"}, headers=headers)


def routes(app):
    """(endpoint, method, path) for every route of the app and every method it takes; its
    arguments filled with a run that does not exist (the role check comes before any lookup)."""
    adapter = app.url_map.bind("localhost")
    found = []
    for rule in app.url_map.iter_rules():
        values = {name: "local" if name == "source" else "x" for name in rule.arguments}
        path = adapter.build(rule.endpoint, values, method=sorted(rule.methods)[0])
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, path))
    return found


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused:")]


def needs_editor(endpoint, method) -> bool:
    return method not in READ_METHODS and endpoint not in READER_POSTS


def admins_only(app, endpoint) -> bool:
    """Marked @requires("admin"): the audit trail's page and API, and the test's own route."""
    return getattr(app.view_functions[endpoint], "labstats_role", None) == "admin"


def test_the_walker_walks_every_kind_of_route(app):
    walked = routes(app)
    endpoints = {endpoint for endpoint, _, _ in walked}
    assert {"pages.index", "api.runs", "api.live", "media.thumb", "auth.password"} <= endpoints
    assert {("test_api_change", m) for m in CHANGING} <= {(e, m) for e, m, _ in walked}
    # The allow-list is small and names only routes there are: a renamed one is not left behind.
    assert endpoints >= READER_POSTS
    assert len(READER_POSTS) <= 5


# Read by programs, never a browser: without a token they answer 401, not the login page.
SCRAPED = {"metrics.metrics"}


def test_logged_out_every_route_asks_for_a_login(app):
    for endpoint, method, path in routes(app):
        if endpoint in PUBLIC_ENDPOINTS:
            continue
        answer = app.test_client().open(path, method=method)
        if path.startswith("/api/") or endpoint in SCRAPED:
            assert answer.status_code == 401, (method, path)
        else:
            assert answer.status_code == 302, (method, path)
            assert answer.headers["Location"].startswith("/login?next="), (method, path)


def test_a_reader_is_refused_every_route_that_changes_something_and_each_refusal_is_logged(app, caplog):
    caplog.set_level(logging.INFO)
    refused = []
    for endpoint, method, path in routes(app):
        if endpoint in PUBLIC_ENDPOINTS:
            continue
        caplog.clear()
        answer = session_client(app, "carol").open(path, method=method)
        needed = (
            "admin" if admins_only(app, endpoint) else "editor" if needs_editor(endpoint, method) else None
        )
        if needed:
            refused.append(endpoint)
            assert answer.status_code == 403, (method, path)
            line = f"refused: user='carol' role=reader method={method} path='{path}' needs={needed}"
            assert refusals(caplog) == [line]
        else:
            assert refusals(caplog) == [], (method, path)
            assert answer.status_code != 401, (method, path)
            if endpoint != "auth.password":  # its own 403: an empty form's current password is wrong
                assert answer.status_code != 403, (method, path)
    assert {"test_api_change", "test_page_change", "annotate.api_change", "annotate.api_trash"} <= set(
        refused
    )
    assert {"annotate.api_audit", "annotate.audit_page"} <= set(refused)  # admins only


@pytest.mark.parametrize("user", ["bob", "alice"])
def test_an_editor_or_an_admin_gets_through_every_route(app, caplog, user):
    for endpoint, method, path in routes(app):
        if endpoint in PUBLIC_ENDPOINTS or (admins_only(app, endpoint) and user == "bob"):
            continue
        caplog.clear()
        answer = session_client(app, user).open(path, method=method)
        assert refusals(caplog) == [], (method, path)
        assert answer.status_code != 401, (method, path)
        if endpoint != "auth.password":  # its own 403: an empty form's current password is wrong
            assert answer.status_code != 403, (method, path)


def test_a_reader_saves_opens_and_deletes_their_own_views_and_may_change_nothing_else(app, caplog):
    carol = session_client(app, "carol")
    saved = carol.post("/views", data={"name": "low loss", "query": "filter=loss+<+2&sort=metric:loss:min"})
    assert saved.status_code == 303
    assert saved.headers["Location"] == "/views/low%20loss"
    opened = carol.get("/views/low loss")
    assert opened.status_code == 302
    assert "filter=loss+%3C+2" in opened.headers["Location"]
    assert "sort=metric%3Aloss%3Amin" in opened.headers["Location"]
    assert '<a href="/views/low%20loss">low loss</a>' in carol.get("/").text
    # Her own: another user has no view of that name.
    assert session_client(app, "bob").get("/views/low loss").status_code == 404
    assert carol.post("/views", data={"delete": "low loss"}).status_code == 303
    assert carol.get("/views/low loss").status_code == 404
    # What changes anything else still needs an editor.
    caplog.set_level(logging.INFO)
    for method in CHANGING:
        assert carol.open("/api/test/change", method=method).status_code == 403
        assert carol.open("/test/change", method=method).status_code == 403
    assert len(refusals(caplog)) == 2 * len(CHANGING)


def test_a_refusal_is_json_under_api_and_a_page_elsewhere(app):
    client = session_client(app, "carol")
    api = client.post("/api/test/change")
    assert api.status_code == 403
    assert api.json == {"error": "this needs the editor role; carol is a reader"}
    page = client.delete("/test/change")
    assert page.status_code == 403
    assert page.mimetype == "text/html"
    assert b"this needs the editor role" in page.data
    assert client.get("/api/runs").status_code == 200  # reading goes on


def test_a_route_marked_for_admins_refuses_editors(app):
    assert session_client(app, "bob").get("/test/admin").status_code == 403
    assert session_client(app, "alice").get("/test/admin").status_code == 200


def test_a_mark_never_lowers_what_a_method_needs(make_app, section):
    app = make_app(section)
    app.add_url_rule("/test/marked", "test_marked", requires("reader")(lambda: "x"), methods=["POST"])
    assert session_client(app, "carol").post("/test/marked").status_code == 403
    assert session_client(app, "bob").post("/test/marked").status_code == 200


def test_tokens_carry_their_roles(app):
    def post(token):
        return app.test_client().post("/api/test/change", headers={"Authorization": f"Bearer {token}"})

    by_role = {role: token for token, role in TOKENS.items()}
    assert post(by_role["reader"]).status_code == 403
    assert post(by_role["editor"]).status_code == 200
    assert post(by_role["admin"]).status_code == 200
    assert post("o" * 40).status_code == 403  # a token line of before roles: a reader
    reader = app.test_client().get("/api/runs", headers={"Authorization": f"Bearer {by_role['reader']}"})
    assert reader.status_code == 200


def test_a_line_of_before_roles_is_a_reader(app):
    client = browser(app)
    assert log_in(client, user="dave").status_code == 302
    assert client.get("/api/runs").status_code == 200
    assert client.post("/api/test/change").status_code == 403


def test_a_role_changed_in_the_users_file_counts_at_the_next_request(app, tmp_path):
    client = browser(app)
    log_in(client, user="carol")
    assert client.post("/api/test/change").status_code == 403
    lines = (tmp_path / "users").read_text().replace(":reader\n", ":editor\n", 1)
    (tmp_path / "users.new").write_text(lines)
    (tmp_path / "users.new").replace(tmp_path / "users")
    assert client.post("/api/test/change").status_code == 200  # the same session: no new login


def test_the_page_header_shows_who_is_logged_in_and_their_role(app):
    page = session_client(app, "bob").get("/").get_data(as_text=True)
    assert "bob · editor" in page
    assert 'href="/account/password"' in page


def test_an_open_viewer_has_no_roles_to_check(url):
    app = create_app({"local": Source("local", url)}, login=None)
    app.add_url_rule("/api/test/change", "test_api_change", lambda: "ok", methods=["POST"])
    assert app.test_client().post("/api/test/change").status_code == 200
    assert app.test_client().get("/account/password").status_code == 404  # no accounts, no page


@pytest.mark.parametrize("text", ["reader", "editor", "admin"])
def test_the_three_roles_parse(text):
    assert parse_role(text) == text


@pytest.mark.parametrize("text", ["", "root", "Admin", "admin ", "readers", "owner"])
def test_a_bad_role_is_refused(text):
    with pytest.raises(ValueError, match="unknown role"):
        parse_role(text)
    with pytest.raises(ValueError, match="unknown role"):
        requires(text)


def test_each_role_may_do_what_the_ones_before_it_may():
    assert [has_role("reader", r) for r in ROLES] == [True, False, False]
    assert [has_role("editor", r) for r in ROLES] == [True, True, False]
    assert [has_role("admin", r) for r in ROLES] == [True, True, True]
    assert not has_role(None, "reader")
    assert not has_role("root", "reader")


def test_a_users_file_with_an_unknown_role_stops_the_viewer_at_startup(section, tmp_path):
    (tmp_path / "users").write_text(
        users_line("alice", PASSWORD, "admin") + users_line("eve", PASSWORD, "root")
    )
    with pytest.raises(ValueError, match=r"users line 2: unknown role 'root'"):
        AuthConfig.load(section)
    (tmp_path / "users").write_text(users_line("alice", PASSWORD, "admin"))
    (tmp_path / "tokens").write_text(f"ci:{hash_token('t' * 40)}:superuser\n")
    with pytest.raises(ValueError, match=r"tokens line 1: unknown role 'superuser'"):
        AuthConfig.load(section)


def test_a_users_file_broken_later_keeps_the_last_users(app, tmp_path, caplog):
    client = session_client(app, "bob")
    (tmp_path / "users.new").write_text(users_line("bob", PASSWORD, "god"))
    (tmp_path / "users.new").replace(tmp_path / "users")
    with caplog.at_level(logging.ERROR):
        assert client.post("/api/test/change").status_code == 200
    assert "unknown role 'god'" in caplog.text


def test_read_entries_reads_names_values_and_roles(tmp_path):
    path = tmp_path / "f"
    path.write_text("# a comment: with a colon\na:h1:editor\nb:h2\n\nc:h3:admin\n")
    assert read_entries(str(path), str) == {
        "a": ("h1", "editor"),
        "b": ("h2", "reader"),
        "c": ("h3", "admin"),
    }


# The own password.


def change_password(client, current=PASSWORD, new=NEW_PASSWORD, again=None, **headers):
    form = {"current": current, "new": new, "again": new if again is None else again}
    return client.post("/account/password", data=form, headers=headers)


def test_the_own_password_page_is_a_form_for_a_logged_in_user(app):
    client = app.test_client()
    log_in(client, user="carol")
    page = client.get("/account/password")
    assert page.status_code == 200
    assert 'name="current"' in page.get_data(as_text=True)
    assert "unsafe-eval" not in page.headers["Content-Security-Policy"]  # a form, no charts
    token = next(t for t, role in TOKENS.items() if role == "admin")
    by_token = app.test_client().get("/account/password", headers={"Authorization": f"Bearer {token}"})
    assert by_token.status_code == 403


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"current": "wrong"}, 403, "current password is wrong"),
        ({"new": "short pw 11"}, 400, "at least 12 characters"),
        ({"again": "another new password"}, 400, "differ"),
        ({"new": "ü" * 40}, 400, "over 72 bytes"),
        ({"new": PASSWORD}, 400, "is the current one"),
    ],
)
def test_a_bad_own_password_change_is_refused_and_changes_nothing(app, form, status, message):
    client = app.test_client()
    log_in(client, user="carol")
    answer = change_password(client, **form)
    assert answer.status_code == status
    assert message in answer.get_data(as_text=True)
    assert client.get("/api/runs").status_code == 200  # still logged in
    assert log_in(app.test_client(), user="carol").status_code == 302  # the old password still


def test_an_own_password_change_posted_from_another_site_is_refused(app):
    client = app.test_client()
    log_in(client, user="carol")
    assert change_password(client, Origin="https://evil.example").status_code == 403
    assert change_password(client, Origin="http://localhost:8080").status_code == 403
    assert log_in(app.test_client(), user="carol").status_code == 302
    assert log_in(app.test_client(), user="carol", password=NEW_PASSWORD).status_code == 401


def test_a_changed_own_password_works_the_old_fails_and_other_sessions_end(make_app, section):
    app = make_app(section)
    other_worker = make_app(section)  # another uWSGI worker: the same sessions file
    client, elsewhere, bob = app.test_client(), other_worker.test_client(), app.test_client()
    log_in(client, user="carol")
    log_in(elsewhere, user="carol")
    log_in(bob, user="bob")
    old_cookie = client.get_cookie(COOKIE).value
    answer = change_password(client, Origin="http://localhost")
    assert answer.status_code == 200
    assert "password is changed" in answer.get_data(as_text=True)
    assert client.get_cookie(COOKIE).value != old_cookie  # a fresh session id for this one
    assert client.get("/api/runs").status_code == 200  # this session goes on
    assert elsewhere.get("/api/runs").status_code == 401  # the other one ended
    assert bob.get("/api/runs").status_code == 200  # other users' sessions are theirs
    fresh = app.test_client()
    fresh.set_cookie(COOKIE, old_cookie)
    assert fresh.get("/api/runs").status_code == 401
    assert log_in(app.test_client(), user="carol").status_code == 401  # the old password
    assert log_in(other_worker.test_client(), user="carol", password=NEW_PASSWORD).status_code == 302
    # The users file stays the inventory's: the viewer never writes it.
    assert bcrypt.checkpw(PASSWORD.encode(), read_entries(section["users_file"], str.encode)["carol"][0])


def test_an_inventory_change_of_the_users_hash_wins_afterwards(app, section, tmp_path):
    client = app.test_client()
    log_in(client, user="carol")
    assert change_password(client).status_code == 200
    # A converge that changes only roles keeps the hash: the viewer-set password stays.
    text = (tmp_path / "users").read_text().replace(":reader\n", ":editor\n", 1)
    (tmp_path / "users.new").write_text(text)
    (tmp_path / "users.new").replace(tmp_path / "users")
    assert client.get("/api/runs").status_code == 200
    assert log_in(app.test_client(), user="carol", password=NEW_PASSWORD).status_code == 302
    # An admin's reset: a new hash for carol in the inventory. It wins, the session ends.
    reset = "an admin's reset password"
    kept = [line for line in text.splitlines(keepends=True) if not line.startswith("carol:")]
    (tmp_path / "users.new").write_text("".join(kept) + users_line("carol", reset, "editor"))
    (tmp_path / "users.new").replace(tmp_path / "users")
    assert client.get("/api/runs").status_code == 401
    assert log_in(app.test_client(), user="carol", password=NEW_PASSWORD).status_code == 401
    assert log_in(app.test_client(), user="carol", password=reset).status_code == 302
    assert app.extensions["labstats_sessions"].own_password("carol") is None  # forgotten for good


def test_wrong_current_passwords_are_limited_per_user(app):
    clock = Clock()
    app.extensions["labstats_sessions"].clock = clock
    client = app.test_client()
    log_in(client, user="carol")
    for _ in range(5):
        assert change_password(client, current="guess").status_code == 403
    assert change_password(client).status_code == 429  # even the right one, for a while
    assert change_password(session_client(app, "carol")).status_code == 429  # any session of carol
    bob = app.test_client()
    log_in(bob, user="bob")
    assert change_password(bob, new="bob's new password").status_code == 200  # his own budget
    clock.now += 15 * 60 + 1
    assert change_password(client).status_code == 200


def test_an_inventory_reset_wins_also_over_a_viewer_restarted_after_it(make_app, section, tmp_path):
    # A converge rewrites the users file and then restarts the viewer: the new process reads
    # the new file at startup and sees no change later; the reset must win all the same.
    client = make_app(section).test_client()
    log_in(client, user="carol")
    assert change_password(client).status_code == 200
    reset = "an admin's reset password"
    kept = [
        line for line in (tmp_path / "users").read_text().splitlines(True) if not line.startswith("carol:")
    ]
    (tmp_path / "users").write_text("".join(kept) + users_line("carol", reset, "reader"))
    restarted = make_app(section)
    assert log_in(restarted.test_client(), user="carol", password=NEW_PASSWORD).status_code == 401
    assert log_in(restarted.test_client(), user="carol", password=reset).status_code == 302


def test_pages_can_ask_what_the_user_may_do(app):
    app.add_url_rule("/test/may", "test_may", lambda: app.jinja_env.from_string(
        "{% for r in roles %}{{ r }}={{ may(r) }} {% endfor %}").render(roles=ROLES))  # fmt: skip
    assert session_client(app, "carol").get("/test/may").text == "reader=True editor=False admin=False "
    assert session_client(app, "bob").get("/test/may").text == "reader=True editor=True admin=False "


# Routes that change a run (annotations and the trash): each leaves exactly one audit entry,
# read back from the audit trail; a reader is refused each, and the refusal is in the trail.


def run_routes(app):
    """(endpoint, method, rule) of every changing route that names a run: found in the URL
    map, so a route added later is walked too."""
    return sorted(
        (rule.endpoint, method, rule)
        for rule in app.url_map.iter_rules()
        if {"source", "run_id"} <= set(rule.arguments)
        for method in rule.methods - READ_METHODS
    )


def walk_inputs(endpoint: str, method: str) -> dict:
    """What each kind of route is sent: a change that changes something (a tag)."""
    if method == "PATCH":
        return {"json": {"tags_add": ["walked"]}}
    return {"data": {"tags_add": "walked"}} if endpoint.endswith("change") else {}


@pytest.fixture
def editable(make_app, section, url, tmp_path):
    """The app over a source whose annotations can be changed (annotate_url), and a maker of
    fresh runs on it."""
    from labstats.curation import Curation

    app = make_app(section)
    app.extensions["labstats_sources"]["local"].annotate_url = url
    counter = iter(range(1000))

    def fresh_run(trashed: bool = False) -> str:
        with labstats.Stats(tmp_path / f"walk{next(counter)}", name="walked") as stats:
            stats.log(step=0, loss=1.0)
        if trashed:
            Curation(labstats.connect(url).redis, actor="setup", writer="annotator").trash(stats.run_id)
        return stats.run_id

    return app, fresh_run


def audit_of(url, run_id):
    from labstats.curation import read_audit

    return read_audit(labstats.connect(url).redis, run_id=run_id)


def test_every_change_to_a_run_leaves_exactly_one_audit_entry(editable, url):
    app, fresh_run = editable
    walked = run_routes(app)
    endpoints = {endpoint for endpoint, _, _ in walked}
    assert {"annotate.api_change", "annotate.api_trash", "annotate.api_restore", "annotate.page_change",
            "annotate.page_trash", "annotate.page_restore"} <= endpoints  # fmt: skip
    for endpoint, method, rule in walked:
        run_id = fresh_run(trashed=endpoint.endswith("restore"))
        before = audit_of(url, run_id)
        path = app.url_map.bind("localhost").build(rule.endpoint, {"source": "local", "run_id": run_id})
        answer = session_client(app, "bob").open(path, method=method, **walk_inputs(endpoint, method))
        assert answer.status_code in (200, 303), (endpoint, method, answer.status_code, answer.text)
        after = audit_of(url, run_id)
        assert len(after) == len(before) + 1, (endpoint, method)
        assert after[0]["who"] == "bob"
        assert after[0]["via"] == ("api" if path.startswith("/api/") else "viewer")
        assert after[0]["action"] in ("change", "trash", "restore")


def test_a_reader_is_refused_every_change_to_a_run_and_each_refusal_is_audited(editable, url, caplog):
    app, fresh_run = editable
    run_id = fresh_run(trashed=False)
    walked = run_routes(app)
    for endpoint, method, rule in walked:
        path = app.url_map.bind("localhost").build(rule.endpoint, {"source": "local", "run_id": run_id})
        before = audit_of(url, run_id)
        answer = session_client(app, "carol").open(path, method=method, **walk_inputs(endpoint, method))
        assert answer.status_code == 403, (endpoint, method)
        after = audit_of(url, run_id)
        assert len(after) == len(before) + 1, (endpoint, method)
        entry = after[0]
        assert (entry["action"], entry["who"], entry["changes"]) == ("refused", "carol", {})
        assert f"{method} {path}" in entry["what"]
    reader_token = next(token for token, role in TOKENS.items() if role == "reader")
    path = f"/api/runs/local/{run_id}/trash"
    answer = app.test_client().post(path, headers={"Authorization": f"Bearer {reader_token}"})
    assert answer.status_code == 403
    assert (audit_of(url, run_id)[0]["who"], audit_of(url, run_id)[0]["via"]) == ("reader", "api")
    # Nothing was changed: the run is in no trash and has its logged tags only.
    annotations = (
        session_client(app, "carol").get(f"/api/runs/local/{run_id}/annotations").json["annotations"]
    )
    assert annotations["trashed"] is None
    assert annotations["tags"] == []
    assert len(audit_of(url, run_id)) == len(walked) + 1
