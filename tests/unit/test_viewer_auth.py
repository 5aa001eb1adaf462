"""The viewer's login: a password checked once per session (bcrypt, the same cost for known
and unknown users), then a signed, Secure, HttpOnly, SameSite=Strict cookie; API tokens for
scripts; no open redirect; no login posted from another site."""

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
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Expires="):
        assert attribute in cookie
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
    # The test client's host; nginx passes the Host without the public port, so ports differ.
    assert log_in(client, Origin="https://localhost:8443").status_code == 302


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"]
)
def test_no_open_redirect_after_login(app, target):
    client = app.test_client()
    answer = client.post("/login", data={"user": "alice", "password": PASSWORD, "next": target})
    assert answer.headers["Location"] == "/"


def test_a_changed_password_ends_old_sessions(app, login, tmp_path):
    client = app.test_client()
    log_in(client)
    assert client.get("/api/runs").status_code == 200
    login.users["alice"] = bcrypt.hashpw(b"new password", bcrypt.gensalt(4))
    assert client.get("/api/runs").status_code == 401


def test_a_short_session_key_is_refused(tmp_path):
    (tmp_path / "secret").write_text("short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        AuthConfig.load({"secret_file": str(tmp_path / "secret")})
