"""The viewer's login: a password checked once per session (bcrypt, the same cost for known
and unknown users), then a Secure, HttpOnly, SameSite=Strict cookie holding a server-side
session's id; API tokens for scripts; no open redirect and no 500 from any ``next=``; no login
posted from another origin (scheme, host and port). Sessions ending: test_viewer_sessions.py."""

from urllib.parse import urlsplit

import bcrypt
import pytest

import labstats
from labstats.viewer import create_app
from labstats.viewer.auth import AuthConfig, hash_token
from labstats.viewer.sources import Source

PASSWORD = "correct horse battery staple"
TOKEN = "t0ken-for-scripts-0123456789abcdefghijkl"


@pytest.fixture
def login(tmp_path):
    users = tmp_path / "users"
    users.write_text(f"alice:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    (tmp_path / "tokens").write_text(f"# comment\nci:{hash_token(TOKEN)}\n")
    (tmp_path / "secret").write_text("s" * 48)
    return AuthConfig.load(
        {
            "users_file": str(users),
            "tokens_file": str(tmp_path / "tokens"),
            "secret_file": str(tmp_path / "secret"),
            "sessions_file": str(tmp_path / "viewer-state" / "sessions.sqlite"),
        }
    )


@pytest.fixture
def app(url, login, tmp_path):
    with labstats.Stats(tmp_path / "r", name="authed") as stats:
        stats.log(step=0, loss=1.0)
    app = create_app({"local": Source("local", url)}, login=login)
    app.testing = False
    return app


def log_in(client, user="alice", password=PASSWORD, **headers):
    return client.post("/login", data={"user": user, "password": password, "next": "/"}, headers=headers)


def test_pages_and_api_demand_a_login(app):
    client = app.test_client()
    page = client.get("/?q=x")
    assert page.status_code == 302
    assert page.headers["Location"] == "/login?next=/?q%3Dx"
    api = client.get("/api/runs")
    assert api.status_code == 401
    assert api.json == {"error": "log in first"}
    assert client.get("/login").status_code == 200
    assert client.get("/static/viewer.css").status_code == 200


def test_a_login_gives_a_hardened_session_cookie(app):
    client = app.test_client()
    answer = log_in(client)
    assert answer.status_code == 302
    cookie = answer.headers["Set-Cookie"]
    # A name of its own, so nginx can strip it from requests to /jupyter/; __Host-: the browser
    # keeps it to this host, Secure and Path=/ (no Domain, so no sibling host can set it).
    assert cookie.startswith("__Host-labstats-viewer=")
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Expires=", "Path=/"):
        assert attribute in cookie
    assert "Domain" not in cookie
    assert client.get("/").status_code == 200
    assert client.get("/api/runs").json["runs"][0]["name"] == "authed"
    client.post("/logout")
    assert client.get("/api/runs").status_code == 401


def test_a_wrong_password_or_user_is_refused(app):
    client = app.test_client()
    assert log_in(client, password="nope").status_code == 401
    assert log_in(client, user="mallory").status_code == 401
    assert client.get("/api/runs").status_code == 401


def test_known_and_unknown_users_cost_one_bcrypt_check_of_the_same_cost(app, monkeypatch):
    guard = app.extensions["labstats_guard"]
    checked = []
    real = guard.bcrypt.checkpw

    def spy(password, hashed):
        checked.append(hashed.split(b"$")[2])  # the cost factor
        return real(password, hashed)

    monkeypatch.setattr(guard.bcrypt, "checkpw", spy)
    client = app.test_client()
    log_in(client, user="alice", password="wrong")
    log_in(client, user="nobody-by-this-name", password="wrong")
    log_in(client)
    assert checked == [b"04", b"04", b"04"]  # one check each, same cost, known or not
    for _ in range(5):  # then the session: no more password checks
        client.get("/api/runs")
    assert len(checked) == 3


def test_api_tokens_for_scripts(app):
    client = app.test_client()
    ok = client.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    bad = client.get("/api/runs", headers={"Authorization": "Bearer not-the-token"})
    assert bad.status_code == 401
    assert bad.headers["WWW-Authenticate"].startswith("Bearer")


def test_login_from_another_site_is_refused(app):
    client = app.test_client()
    assert log_in(client, Origin="https://evil.example").status_code == 403
    assert log_in(client, Origin="https://evil.localhost").status_code == 403
    assert log_in(client, Origin="http://localhost").status_code == 302  # the test client's origin


@pytest.mark.parametrize(
    "origin",
    [
        "https://localhost",  # another scheme
        "http://localhost:8443",  # another port
        "http://localhost:8080",
        "http://localhost.evil.example",
        "null",  # a sandboxed frame or a redirect chain
        "http://localhost:notaport",
        "http://[::1",
        "",
    ],
)
def test_an_origin_differing_in_scheme_host_or_port_is_refused(app, origin):
    assert log_in(app.test_client(), Origin=origin).status_code == 403


def test_behind_tls_on_a_port_only_that_scheme_and_port_may_post_the_login(app):
    client = app.test_client()
    site = {"base_url": "https://localhost:8443"}
    post = {"user": "alice", "password": PASSWORD, "next": "/"}
    for origin in ("http://localhost:8443", "https://localhost", "https://localhost:443", "http://localhost"):
        assert client.post("/login", data=post, headers={"Origin": origin}, **site).status_code == 403, origin
    for origin in ("https://localhost:8443", "HTTPS://LocalHost:8443"):
        assert client.post("/login", data=post, headers={"Origin": origin}, **site).status_code == 302, origin


def test_configured_public_origins_are_accepted_as_well(url, tmp_path, login):
    # Where the app cannot see the public origin (a port mapped in front of nginx), the config
    # names it; scheme and port still count.
    login.origins = ("https://lab.example:8443",)
    app = create_app({"local": Source("local", url)}, login=login)
    client = app.test_client()
    assert log_in(client, Origin="https://lab.example:8443").status_code == 302
    assert log_in(client, Origin="http://lab.example:8443").status_code == 403
    assert log_in(client, Origin="https://lab.example").status_code == 403
    assert log_in(client, Origin="http://localhost").status_code == 302  # its own origin still


HOSTILE_NEXT = [
    "//evil.example/x",
    "https://evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "javascript:x",
    "http:evil.example",
    "///evil.example",
    "/\r\nSet-Cookie: x=1",
    "/\r\n\r\n<h1>x</h1>",
    "/\n//evil.example",
    "/\t/evil.example",
    "/ /evil.example",
    "\r\n",
    "/ok\x00",
    "/ok\x7f",
    "/%0d%0aSet-Cookie:%20x=1",
    "/runs/ü?q=ä b",
    "/" + "a" * 5000,
    "",
]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_any_next_gives_a_local_redirect_never_a_500(app, target):
    client = app.test_client()
    answer = client.post("/login", data={"user": "alice", "password": PASSWORD, "next": target})
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith("/")
    assert not location.startswith("//")
    assert "\\" not in location
    assert location.isascii()
    assert all(" " < c < "\x7f" for c in location)  # no control characters, no spaces
    assert not urlsplit(location).netloc
    assert client.get("/login", query_string={"next": target}).status_code == 200
    assert app.test_client().get("/login", query_string={"next": target}).status_code == 200


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"]
)
def test_no_open_redirect_after_login(app, target):
    client = app.test_client()
    answer = client.post("/login", data={"user": "alice", "password": PASSWORD, "next": target})
    assert answer.headers["Location"] == "/"


def test_a_local_next_is_kept(app):
    answer = app.test_client().post(
        "/login", data={"user": "alice", "password": PASSWORD, "next": "/runs?q=x"}
    )
    assert answer.headers["Location"] == "/runs?q=x"


@pytest.mark.parametrize("path", ["/runs/%0d%0aX:%20y", "/%0a//evil.example", "/runs/%00"])
def test_a_hostile_path_while_logged_out_leads_to_the_login_page(app, path):
    answer = app.test_client().get(path)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/login?next=")


def test_a_changed_password_ends_old_sessions(app, login, tmp_path):
    client = app.test_client()
    log_in(client)
    assert client.get("/api/runs").status_code == 200
    # The users file changes on disk (as Ansible's htpasswd or an admin changes it): no restart.
    new = tmp_path / "users.new"
    new.write_text(f"alice:{bcrypt.hashpw(b'new password', bcrypt.gensalt(4)).decode()}\n")
    new.replace(tmp_path / "users")
    assert client.get("/api/runs").status_code == 401
    assert log_in(client, password="new password").status_code == 302
    assert client.get("/api/runs").status_code == 200


def test_a_short_session_key_is_refused(tmp_path):
    (tmp_path / "secret").write_text("short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        AuthConfig.load({"secret_file": str(tmp_path / "secret")})


@pytest.mark.parametrize("origin", ["http://localhost/path", "http://user@localhost", "http://localhost?x"])
def test_an_origin_is_only_scheme_host_and_port(app, origin):
    assert log_in(app.test_client(), Origin=origin).status_code == 403


# Forged requests: a change sent with the session cookie must come from the viewer's own pages.


@pytest.fixture
def change_app(app):
    from flask import jsonify

    app.add_url_rule(
        "/api/test/change", "test_change", lambda: jsonify(changed=True), methods=["POST", "PATCH"]
    )
    return app


def logged_in(app):
    client = app.test_client()
    assert log_in(client).status_code == 302
    return client


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://localhost:8080"},  # another port of the same host: another site
        {"Origin": "null"},
        {"Referer": "https://evil.example/forged.html"},  # no Origin: the Referer's origin counts
        {"Referer": "http://localhost:8080/forged.html"},
        {"Referer": "not a url at all"},
        {"Origin": "https://evil.example", "Referer": "http://localhost/runs"},  # Origin wins
        {},  # neither: not one of the viewer's own pages
    ],
)
def test_a_change_with_the_session_cookie_from_elsewhere_is_refused(change_app, headers, caplog):
    client = logged_in(change_app)
    for method in ("POST", "PATCH"):
        answer = client.open("/api/test/change", method=method, headers=headers)
        assert answer.status_code == 403, (method, headers)
        assert answer.json == {"error": "a change sent from another site (or without its Origin) is refused"}
    assert "refused a cross-site request" in caplog.text
    # Even what a reader may change (her saved views) is refused: nothing was saved.
    assert (
        client.post("/views", data={"name": "forged", "query": "sort=name"}, headers=headers).status_code
        == 403
    )
    assert client.get("/views/forged").status_code == 404


@pytest.mark.parametrize(
    "headers", [{"Origin": "http://localhost"}, {"Referer": "http://localhost/runs/local/x?y=1"}]
)
def test_a_change_from_the_viewers_own_pages_goes_through(change_app, headers):
    client = logged_in(change_app)  # a reader: her own saved views are hers to change
    view = {"name": "mine", "query": "sort=name"}
    assert client.post("/views", data=view, headers=headers).status_code == 303
    assert client.get("/views/mine").status_code == 302
    assert client.get("/api/runs").status_code == 200  # reads need no Origin
    assert client.post("/views", data=view).status_code == 403  # the same without it


def test_a_token_needs_no_origin_and_the_session_cookie_stays_samesite_strict(change_app):
    answer = change_app.test_client().post("/api/test/change", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 403  # a reader's token: refused by its role, not by its origin
    assert answer.json["error"].startswith("this needs the editor role")
    cookie = log_in(change_app.test_client()).headers["Set-Cookie"]
    assert "SameSite=Strict" in cookie


def test_an_open_viewer_refuses_a_change_posted_by_another_site(url):
    app = create_app({"local": Source("local", url)})
    app.add_url_rule("/api/test/change", "test_change", lambda: "changed", methods=["POST"])
    client = app.test_client()
    assert client.post("/api/test/change", headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post("/api/test/change", headers={"Referer": "http://evil.example/"}).status_code == 403
    assert client.post("/api/test/change", headers={"Origin": "http://localhost"}).status_code == 200
    assert client.post("/api/test/change").status_code == 200  # a script on the laptop
