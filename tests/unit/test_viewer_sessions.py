"""Viewer sessions end: they live server-side (one SQLite file shared by every uWSGI worker),
the cookie holds only a random id, and logout, a changed password, an admin, the absolute
lifetime and the idle timeout each end them at once. Times are set through the store's clock,
never slept."""

import hashlib
import multiprocessing
import sqlite3
import subprocess
import sys
from email.utils import parsedate_to_datetime
from pathlib import Path

import bcrypt
import pytest
from clock import Clock

import labstats
from labstats.viewer import create_app
from labstats.viewer.auth import AuthConfig
from labstats.viewer.sources import Source

PASSWORD = "correct horse battery staple"
COOKIE = "__Host-labstats-viewer"
HOUR = 3600.0


def users_line(user: str, password: str) -> str:
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"


@pytest.fixture
def section(tmp_path):
    """The [auth] section the viewer role writes, with a sessions file."""
    (tmp_path / "users").write_text(users_line("alice", PASSWORD) + users_line("bob", PASSWORD))
    (tmp_path / "tokens").write_text("")
    return {
        "users_file": str(tmp_path / "users"),
        "tokens_file": str(tmp_path / "tokens"),
        "sessions_file": str(tmp_path / "viewer-state" / "sessions.sqlite"),
    }


@pytest.fixture
def make_app(url, tmp_path):
    with labstats.Stats(tmp_path / "r", name="authed") as stats:
        stats.log(step=0, loss=1.0)

    def make(section: dict):
        app = create_app({"local": Source("local", url)}, login=AuthConfig.load(section))
        app.testing = False
        return app

    return make


@pytest.fixture
def app(make_app, section):
    return make_app(section)


def clock_of(app) -> Clock:
    clock = Clock()
    app.extensions["labstats_sessions"].clock = clock
    return clock


def log_in(client, user="alice", password=PASSWORD):
    return client.post("/login", data={"user": user, "password": password, "next": "/"})


def cookie_value(client) -> str:
    return client.get_cookie(COOKIE).value


def replay(app, value: str):
    """A fresh client (another browser, or the same one after logout) carrying ``value``."""
    client = app.test_client()
    client.set_cookie(COOKIE, value)
    return client


def rows(section) -> list[tuple]:
    with sqlite3.connect(section["sessions_file"]) as db:
        return db.execute("SELECT * FROM sessions").fetchall()


def test_the_cookie_holds_a_random_id_and_the_store_only_its_hash(app, section):
    client = app.test_client()
    log_in(client)
    value = cookie_value(client)
    assert len(value) >= 43  # 32 random bytes, URL-safe base64: 256 bits
    other = app.test_client()
    log_in(other)
    assert cookie_value(other) != value
    stored = rows(section)
    assert len(stored) == 2
    text = repr(stored)
    assert value not in text  # a copy of the file lets nobody log in
    assert hashlib.sha256(value.encode()).hexdigest() in text
    assert "alice" in text


def test_a_cookie_replayed_after_logout_gets_the_login_page(app):
    client = app.test_client()
    log_in(client)
    value = cookie_value(client)
    assert replay(app, value).get("/api/runs").status_code == 200
    assert client.post("/logout").status_code == 302
    assert replay(app, value).get("/api/runs").status_code == 401
    page = replay(app, value).get("/")
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/login")


def test_a_forged_or_unknown_cookie_is_refused(app):
    assert replay(app, "x" * 43).get("/api/runs").status_code == 401
    assert replay(app, "").get("/api/runs").status_code == 401
    assert replay(app, "é" * 300).get("/api/runs").status_code == 401


def test_the_cookie_expires_at_login_plus_the_lifetime_and_is_never_renewed(app):
    clock = clock_of(app)
    client = app.test_client()
    answer = log_in(client)
    expires = parsedate_to_datetime(answer.headers["Set-Cookie"].split("Expires=")[1].split(";")[0])
    assert abs(expires.timestamp() - (clock.now + 12 * HOUR)) <= 1
    assert "Max-Age=43200" in answer.headers["Set-Cookie"]
    for _ in range(3):
        clock.now += 0.5 * HOUR
        page = client.get("/")
        assert page.status_code == 200
        assert "Set-Cookie" not in page.headers  # no new 12 h from each response


def test_a_session_ends_at_its_absolute_lifetime_even_when_used(app):
    clock = clock_of(app)
    client = app.test_client()
    log_in(client)
    start = clock.now
    while clock.now < start + 12 * HOUR - 60:  # a request every hour, never idle
        clock.now = min(clock.now + HOUR, start + 12 * HOUR - 60)
        assert client.get("/api/runs").status_code == 200
    clock.now = start + 12 * HOUR + 1
    assert client.get("/api/runs").status_code == 401


def test_an_idle_session_ends(app):
    clock = clock_of(app)
    client = app.test_client()
    log_in(client)
    clock.now += 119 * 60  # the default idle timeout is 120 minutes
    assert client.get("/api/runs").status_code == 200
    clock.now += 119 * 60  # idle counts from the last request
    assert client.get("/api/runs").status_code == 200
    clock.now += 121 * 60
    assert client.get("/api/runs").status_code == 401
    clock.now -= 121 * 60  # and it is gone, not just out of time
    assert client.get("/api/runs").status_code == 401


def test_lifetime_and_idle_timeout_are_configurable(make_app, section):
    app = make_app({**section, "session_hours": 1, "idle_minutes": 5})
    clock = clock_of(app)
    idle, busy = app.test_client(), app.test_client()
    log_in(idle)
    answer = log_in(busy)
    assert "Max-Age=3600" in answer.headers["Set-Cookie"]
    start = clock.now
    for minutes in range(4, 60, 4):
        clock.now = start + minutes * 60
        assert busy.get("/api/runs").status_code == 200
    assert idle.get("/api/runs").status_code == 401  # 5 minutes without a request
    clock.now = start + HOUR + 1
    assert busy.get("/api/runs").status_code == 401


def test_two_workers_share_the_sessions_and_their_ends(make_app, section):
    worker1, worker2 = make_app(section), make_app(section)  # two app instances, as two uWSGI workers
    client = worker1.test_client()
    log_in(client)
    value = cookie_value(client)
    assert replay(worker2, value).get("/api/runs").status_code == 200
    assert replay(worker2, value).post("/logout").status_code == 302
    assert replay(worker1, value).get("/api/runs").status_code == 401
    assert replay(worker2, value).get("/api/runs").status_code == 401


def _child_request(app, value: str, results) -> None:
    client = app.test_client()
    client.set_cookie(COOKIE, value)
    results.put(client.get("/api/runs").status_code)
    results.put(client.post("/logout").status_code)


def test_a_forked_worker_shares_the_store_opened_before_the_fork(app):
    # uWSGI loads the app in its master and forks the workers: the store must not use a
    # connection opened before the fork.
    client = app.test_client()
    log_in(client)
    assert client.get("/api/runs").status_code == 200  # the parent's connection is open
    results = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(
        target=_child_request, args=(app, cookie_value(client), results)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert [results.get(timeout=5), results.get(timeout=5)] == [200, 302]
    assert client.get("/api/runs").status_code == 401  # the child's logout, seen here


def test_a_changed_password_ends_all_that_users_sessions_only(app, section, tmp_path):
    alice1, alice2, bob = app.test_client(), app.test_client(), app.test_client()
    log_in(alice1)
    log_in(alice2)
    log_in(bob, user="bob")
    new = tmp_path / "users.new"
    new.write_text(
        users_line("alice", "a new password") + (tmp_path / "users").read_text().split("\n")[1] + "\n"
    )
    new.replace(tmp_path / "users")
    assert alice1.get("/api/runs").status_code == 401
    assert [r for r in rows(section) if "alice" in r] == []  # both ended, not only the one seen
    assert alice2.get("/api/runs").status_code == 401
    assert bob.get("/api/runs").status_code == 200
    assert log_in(alice1, password="a new password").status_code == 302
    assert alice1.get("/api/runs").status_code == 200


def test_a_user_removed_from_the_users_file_is_logged_out(app, tmp_path):
    client = app.test_client()
    log_in(client)
    new = tmp_path / "users.new"
    new.write_text(users_line("bob", PASSWORD))
    new.replace(tmp_path / "users")
    assert client.get("/api/runs").status_code == 401


@pytest.fixture
def config_file(section, tmp_path):
    """The viewer's TOML config holding the [auth] section."""
    path = tmp_path / "viewer.toml"
    path.write_text("[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in section.items()))
    return path


def test_an_admin_ends_a_users_sessions(app, config_file):
    from labstats.viewer import sessions

    alice1, alice2, bob = app.test_client(), app.test_client(), app.test_client()
    log_in(alice1)
    log_in(alice2)
    log_in(bob, user="bob")
    assert sessions.end_sessions("alice", config=str(config_file)) == 2
    assert alice1.get("/api/runs").status_code == 401
    assert alice2.get("/api/runs").status_code == 401
    assert bob.get("/api/runs").status_code == 200
    assert sessions.end_all(config=str(config_file)) == 1
    assert bob.get("/api/runs").status_code == 401


def test_the_admin_command_line(app, config_file):
    alice, bob = app.test_client(), app.test_client()
    log_in(alice)
    log_in(bob, user="bob")
    command = [sys.executable, "-m", "labstats.viewer.sessions"]
    listed = subprocess.run([*command, "list", "--config", str(config_file)], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout
    assert "bob" in listed.stdout
    assert cookie_value(alice) not in listed.stdout
    ended = subprocess.run(
        [*command, "end", "alice", "--config", str(config_file)], capture_output=True, text=True
    )
    assert ended.returncode == 0, ended.stderr
    assert "1 session" in ended.stdout
    assert alice.get("/api/runs").status_code == 401
    assert bob.get("/api/runs").status_code == 200
    ended = subprocess.run(
        [*command, "end-all", "--config", str(config_file)], capture_output=True, text=True
    )
    assert ended.returncode == 0, ended.stderr
    assert bob.get("/api/runs").status_code == 401


def test_the_sessions_file_is_for_the_viewer_only(app, section):
    import os
    import stat

    log_in(app.test_client())
    path = section["sessions_file"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_without_a_sessions_file_sessions_are_kept_in_memory_and_still_end(make_app, section):
    # labstats on a laptop (one process): same rules, sessions forgotten at exit.
    app = make_app({k: v for k, v in section.items() if k != "sessions_file"})
    client = app.test_client()
    log_in(client)
    value = cookie_value(client)
    assert client.get("/api/runs").status_code == 200
    client.post("/logout")
    assert replay(app, value).get("/api/runs").status_code == 401


def test_a_sessions_file_that_cannot_be_written_stops_the_viewer_at_startup(make_app, section, tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(RuntimeError, match=r"sessions_file .*not-a-folder"):
        make_app({**section, "sessions_file": str(tmp_path / "not-a-folder" / "sessions.sqlite")})


def test_the_signed_cookie_of_before_is_not_accepted_and_is_removed_at_login(app):
    client = app.test_client()
    client.set_cookie("labstats_session", "eyJ1c2VyIjoiYWxpY2UifQ.forged.sig")
    assert client.get("/api/runs").status_code == 401
    answer = log_in(client)
    assert any(c.startswith("labstats_session=;") for c in answer.headers.getlist("Set-Cookie"))


def test_the_admin_command_run_as_root_becomes_the_sessions_folders_owner(
    app, config_file, section, monkeypatch
):
    # SQLite may create -wal and -shm files beside the database; made by root, they would
    # lock the viewer out of its own sessions. So root first becomes the folder's owner.
    import os

    from labstats.viewer import sessions

    log_in(app.test_client())
    folder = os.path.dirname(section["sessions_file"])
    if os.geteuid() == 0:
        os.chown(folder, 65534, 65534)  # as the viewer's own account owns it on the web box
    owner = os.stat(folder)
    became = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "setgroups", lambda groups: became.append(("groups", groups)))
    monkeypatch.setattr(os, "setgid", lambda gid: became.append(("gid", gid)))
    monkeypatch.setattr(os, "setuid", lambda uid: became.append(("uid", uid)))
    assert sessions.main(["end", "alice", "--config", str(config_file)]) == 0
    assert became == [("groups", []), ("gid", owner.st_gid), ("uid", owner.st_uid)]


def test_the_admin_command_does_not_make_a_missing_sessions_file(config_file, section):
    import os

    from labstats.viewer import sessions

    assert sessions.main(["end-all", "--config", str(config_file)]) == 0
    assert not os.path.exists(os.path.dirname(section["sessions_file"]))


def test_the_threads_of_a_worker_share_its_store(app):
    # uWSGI runs several threads per worker; they share the process's one connection.
    from concurrent.futures import ThreadPoolExecutor

    store = app.extensions["labstats_sessions"]

    def session_cycle(i: int) -> bool:
        session_id, _ = store.create(f"user{i % 3}", "fp")
        alive = store.lookup(session_id) is not None
        store.end(session_id)
        return alive and store.lookup(session_id) is None

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(session_cycle, range(400)))
    assert store.sessions() == []


def test_a_password_set_in_the_viewer_is_kept_as_a_bcrypt_hash_beside_the_sessions(app, section):
    client = app.test_client()
    log_in(client)
    form = {"current": PASSWORD, "new": "alice's own new password", "again": "alice's own new password"}
    assert client.post("/account/password", data=form).status_code == 200
    with sqlite3.connect(section["sessions_file"]) as db:
        stored = db.execute("SELECT user, hash, replaces FROM own_passwords").fetchall()
    assert [user for user, _, _ in stored] == ["alice"]
    assert "own new password" not in repr(stored)  # a copy of the file gives no password
    assert bcrypt.checkpw(b"alice's own new password", stored[0][1].encode())
    inventory = Path(section["users_file"]).read_text().splitlines()[0].split(":")[1]
    assert stored[0][2] == hashlib.sha256(inventory.encode()).hexdigest()  # the hash it replaced
    # Ending every session (an admin's end-all) leaves the password the user chose.
    assert app.extensions["labstats_sessions"].end_all() == 1
    assert log_in(app.test_client(), password="alice's own new password").status_code == 302
