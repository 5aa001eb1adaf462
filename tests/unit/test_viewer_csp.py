"""The viewer sends its Content-Security-Policy itself on every answer (nginx passes it
through): the pages', the API's, errors and files alike, and the login page its stricter
one. labstats.viewer.csp is the one place either is written (tests/roles/test_nginx_csp.py
checks the nginx role adds the same policy to the answers nginx makes itself)."""

import bcrypt

from labstats.viewer import create_app
from labstats.viewer.auth import AuthConfig
from labstats.viewer.csp import CSP, LOGIN_CSP
from labstats.viewer.openapi import undocumented
from labstats.viewer.sources import Source


def test_every_answer_carries_the_policy_once(url):
    client = create_app({"local": Source("local", url)}).test_client()
    for path in ["/", "/api/runs", "/api/runs/local/none", "/runs/local/none", "/static/viewer.css",
                 "/bokeh/bokeh.min.js", "/favicon.ico", "/no/such/page"]:  # fmt: skip
        response = client.get(path)
        assert response.headers.getlist("Content-Security-Policy") == [CSP], path
    assert client.post("/api/live", json={}).headers.getlist("Content-Security-Policy") == [CSP]


def test_the_login_page_has_the_stricter_policy(url, tmp_path):
    users = tmp_path / "users"
    users.write_text(f"alice:{bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}\n")
    login = AuthConfig.load(
        {"users_file": str(users), "sessions_file": str(tmp_path / "state" / "sessions.sqlite")}
    )
    client = create_app({"local": Source("local", url)}, login=login).test_client()
    assert client.get("/login").headers.getlist("Content-Security-Policy") == [LOGIN_CSP]
    assert "'unsafe-eval'" not in LOGIN_CSP
    refused = client.post(
        "/login", data={"user": "alice", "password": "wrong"}, headers={"Origin": "http://localhost"}
    )
    assert refused.status_code == 401
    assert refused.headers.getlist("Content-Security-Policy") == [LOGIN_CSP]
    assert client.get("/").headers.getlist("Content-Security-Policy") == [CSP]  # the redirect to /login


def test_the_password_page_has_the_stricter_policy_and_is_left_out_of_the_api_document(url, tmp_path):
    users = tmp_path / "users"
    users.write_text(f"alice:{bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}:reader\n")
    login = AuthConfig.load(
        {"users_file": str(users), "sessions_file": str(tmp_path / "state" / "sessions.sqlite")}
    )
    app = create_app({"local": Source("local", url)}, login=login)
    assert undocumented(app) == []
    client = app.test_client()
    client.post("/login", data={"user": "alice", "password": "pw"}, headers={"Origin": "http://localhost"})
    page = client.get("/account/password")
    assert page.status_code == 200
    assert page.headers.getlist("Content-Security-Policy") == [LOGIN_CSP]
    assert client.get("/").headers.getlist("Content-Security-Policy") == [CSP]
