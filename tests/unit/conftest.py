"""Fixtures: a real redis-server per test session (and per test where a test stops it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

import labstats
from labstats.store import ArtifactStore


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll ``predicate`` every 50 ms until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of our own on a free loopback port, with AOF so restarts keep data."""

    def __init__(self, workdir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server; make host does it)")
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.extra_args = extra_args
        self.username: str | None = None
        self.password: str | None = None

    def url_for(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log",
             *self.extra_args],
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self, user: str | None = None, password: str | None = None) -> redis.Redis:
        user, password = user or self.username, password or self.password
        return redis.Redis(port=self.port, socket_timeout=5, username=user, password=password)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path):
    """A server this test may stop and restart."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def url(redis_server, monkeypatch):
    """A clean store for each test, and the environment pointing at it."""
    redis_server.client().flushall()
    monkeypatch.setenv("LABSTATS_URL", redis_server.url)
    return redis_server.url


@pytest.fixture
def lab(url):
    return labstats.connect(url)


# The Redis users exactly as the redis role writes them (roles/redis/templates/users.acl.j2).
ACL_PASSWORDS = {
    "viewer": "viewer-pw",
    "replication": "repl-pw",
    "ops": "ops-pw",
    "archiver": "archiver-pw",
    "annotator": "annotator-pw",
    "agent": "agent-pw",
}
# The training users (the labstats_client role's accounts): each its own Redis user, which
# may write only its own runs and indexes.
TRAINING_USERS = ["alice", "bob"]
USER_PASSWORDS = {name: f"{name}-pw" for name in TRAINING_USERS}


def password(user: str) -> str:
    """The test password of any Redis user of the rendered ACL."""
    return USER_PASSWORDS.get(user) or ACL_PASSWORDS[user]


def render_acl(role: str = "master") -> str:
    import hashlib

    import jinja2

    templates = Path(__file__).resolve().parents[2] / "roles" / "redis" / "templates"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates), trim_blocks=True)
    env.filters["hash"] = lambda text, algo: hashlib.new(algo, text.encode()).hexdigest()
    return env.get_template("users.acl.j2").render(
        ansible_managed="Ansible managed",
        redis_role=role,
        redis_key_prefix="ls",
        redis__passwords=ACL_PASSWORDS,
        redis_training_users=TRAINING_USERS,
        redis__user_passwords=USER_PASSWORDS,
    )


@pytest.fixture(scope="session")
def acl_server(tmp_path_factory):
    """A redis-server with the role's ACL users (default user off), as on a training box."""
    server = start_acl_server(tmp_path_factory.mktemp("redis-acl"))
    yield server
    server.stop()


@pytest.fixture
def own_acl_server(tmp_path):
    """The same, for a test that stops and restarts it."""
    server = start_acl_server(tmp_path / "redis-acl")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def open_acl_server(tmp_path_factory):
    """The role's ACL users next to a default user that may do anything: a store where old
    clients (or a laptop's) still log runs without a username, beside the training users."""
    server = start_acl_server(tmp_path_factory.mktemp("redis-acl-open"), default_user=True)
    yield server
    server.stop()


def start_acl_server(workdir: Path, *, default_user: bool = False) -> RedisServer:
    workdir.mkdir(parents=True, exist_ok=True)
    rules = render_acl()
    if default_user:
        rules = rules.replace("user default off ~* &* +@all", "user default on nopass ~* &* +@all")
        assert "user default on" in rules
    (workdir / "users.acl").write_text(rules)
    # Debug commands on, so that it is the ACL (not that setting) that refuses them.
    args = ("--aclfile", str(workdir / "users.acl"), "--enable-debug-command", "yes")
    server = RedisServer(workdir, extra_args=args)
    server.username, server.password = "ops", ACL_PASSWORDS["ops"]
    return server.start()


@pytest.fixture
def store(tmp_path):
    """The test's own artifact store: the folder own_state_dir names in LABSTATS_ARTIFACT_DIR,
    where the logger writes media and tensor files (a module may define its own)."""
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture(autouse=True)
def own_state_dir(tmp_path, monkeypatch):
    """Each test notes its spools in an index of its own, not the real user's."""
    monkeypatch.setenv("LABSTATS_STATE_DIR", str(tmp_path / "state"))
    # ...and its media and tensor files in a store of its own (a test may point it elsewhere).
    monkeypatch.setenv("LABSTATS_ARTIFACT_DIR", str(tmp_path / "artifacts"))


def same(a, b) -> bool:
    """Equal in value and type, NaN equal to NaN, arrays in dtype, shape and bytes."""
    import math

    import numpy as np

    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and (a.dtype, a.shape, a.tobytes()) == (
            b.dtype,
            b.shape,
            b.tobytes(),
        )
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.fixture(autouse=True)
def no_freeze_by_default(monkeypatch):
    """pip freeze costs a second per run, and a bundle of this repository half a second and
    2 MB in each test's store; the tests that need them turn them back on."""
    monkeypatch.setenv("LABSTATS_CAPTURE_FREEZE", "0")
    monkeypatch.setenv("LABSTATS_CODE_BUNDLE_BYTES", "0")


@pytest.fixture
def client(url):
    """The viewer over the test's store, without logins, errors handled as in production
    (a module needing another viewer defines its own ``client``)."""
    from labstats.viewer import create_app  # the viewer extra: only its tests need it
    from labstats.viewer.sources import Source

    app = create_app({"local": Source("local", url)})
    app.testing = False  # errors must be handled as in production, not raised
    return app.test_client()
