"""Login for the viewer: a password checked once per session, a server-side session after that.

    [auth]                                   # in the viewer's TOML config
    users_file = "/etc/labstats/viewer-users"    # name:bcrypt-hash lines (htpasswd format)
    tokens_file = "/etc/labstats/viewer-tokens"  # name:sha256-hex lines, for scripts
    sessions_file = "/var/lib/labstats-viewer/sessions.sqlite"  # shared by all workers
    session_hours = 12                       # absolute lifetime from login
    idle_minutes = 120                       # ended after this long without a request
    origins = ["https://lab.example:8443"]   # optional: public origins besides the request's own
    secret_file = "/etc/labstats/viewer-session.key"  # optional now: Flask's key, unused by logins

A browser logs in on /login (bcrypt, once) and then carries the cookie ``__Host-labstats-viewer``
(Secure, HttpOnly, SameSite=Strict, Path=/, expiring at login + session_hours, never renewed)
holding a random session id; the session itself is in :mod:`labstats.viewer.sessions`, so
logout, a changed password (the users file is re-read when it changes), an admin
(``python -m labstats.viewer.sessions end USER``), the lifetime and the idle timeout end it at
once, in every worker. Scripts send ``Authorization: Bearer TOKEN``; a token is 32 random
bytes, so a SHA-256 comparison is enough and costs microseconds. Without an [auth] section the
viewer is open (``labstats serve`` on a laptop's loopback).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, url_for
from werkzeug.urls import iri_to_uri

# Paths reachable without a login: the login page itself and static files with no data.
PUBLIC_ENDPOINTS = {"auth.login", "static", "bokeh_js", "favicon"}
# The session cookie. __Host-: browsers keep it to this host only, Secure, Path=/, so no
# sibling host can plant one; a name of its own, so nginx can strip it from what it passes to
# Jupyter (/jupyter/ is on the same host, and a cookie's path cannot leave a subpath out).
COOKIE = "__Host-labstats-viewer"
LEGACY_COOKIE = "labstats_session"  # the signed cookie of before: dead, removed at the next login
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class AuthConfig:
    users: dict[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash
    tokens: dict[str, bytes] = field(default_factory=dict)  # name -> sha256 digest
    secret: bytes = b""
    session_hours: float = 12.0  # absolute lifetime of a session, from its login
    idle_minutes: float = 120.0  # a session unused this long ends
    sessions_file: str | None = None  # None: sessions in memory (one process only)
    origins: tuple[str, ...] = ()  # public origins accepted besides the request's own
    users_file: str | None = None  # re-read when it changes on disk
    _users_stamp: tuple | None = field(default=None, repr=False)

    @classmethod
    def load(cls, section: dict) -> AuthConfig:
        secret = b""
        if section.get("secret_file"):
            secret = Path(section["secret_file"]).read_bytes().strip()
            if len(secret) < 32:
                raise ValueError(f"{section['secret_file']}: the session key must have at least 32 bytes")
        origins = section.get("origins", ())
        origins = (origins,) if isinstance(origins, str) else tuple(origins)
        for origin in origins:
            if origin_of(origin) is None:
                raise ValueError(f"[auth] origins: {origin!r} is not an origin like https://host:port")
        config = cls(
            tokens=read_pairs(section.get("tokens_file"), bytes.fromhex),
            secret=secret,
            session_hours=float(section.get("session_hours", 12)),
            idle_minutes=float(section.get("idle_minutes", 120)),
            sessions_file=section.get("sessions_file") or None,
            origins=origins,
            users_file=section.get("users_file") or None,
        )
        if config.session_hours <= 0 or config.idle_minutes <= 0:
            raise ValueError("[auth] session_hours and idle_minutes must be positive")
        config.refresh()
        return config

    def refresh(self) -> bool:
        """Read the users file again if it changed on disk (a password changed, a user left):
        True if it did. One stat() per request; a file that cannot be read keeps the last users."""
        if not self.users_file:
            return False
        stamp = _stamp(self.users_file)  # taken before reading: a change during the read is seen next time
        if stamp is None or stamp == self._users_stamp:
            return False
        try:
            self.users = read_pairs(self.users_file, lambda v: v.encode())
        except (OSError, UnicodeDecodeError):
            return False
        self._users_stamp = stamp
        return True


def _stamp(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_pairs(path: str | None, convert) -> dict:
    pairs = {}
    if not path:
        return pairs
    for line in Path(path).read_text().splitlines():
        name, sep, value = line.strip().partition(":")
        if sep and name and not name.startswith("#"):
            pairs[name] = convert(value.strip())
    return pairs


def hash_token(token: str) -> str:
    """What a tokens file holds for ``token`` (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Guard:
    """Checks a password (bcrypt, equal cost for known and unknown users) or a token."""

    def __init__(self, config: AuthConfig) -> None:
        import bcrypt  # only the web box's viewer needs it

        self.bcrypt = bcrypt
        self.config = config
        # An unknown user's password is checked against this, so both cost the same time.
        cost = _bcrypt_cost(next(iter(config.users.values()), b"")) or 12
        self._dummy = bcrypt.hashpw(b"labstats-unknown-user", bcrypt.gensalt(cost))

    def check_password(self, user: str, password: str) -> bool:
        stored = self.config.users.get(user)
        candidate = password.encode()[:72]  # bcrypt reads at most 72 bytes
        try:
            ok = self.bcrypt.checkpw(candidate, stored if stored is not None else self._dummy)
        except ValueError:  # a malformed hash in the users file: nobody logs in with it
            ok = False
        return ok and stored is not None

    def check_token(self, token: str) -> str | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for name, stored in self.config.tokens.items():  # compare all: no early exit
            if hmac.compare_digest(digest, stored):
                found = name
        return found

    def fingerprint(self, user: str) -> str:
        """Changes when the user's password changes, which ends that user's sessions."""
        return hashlib.sha256(self.config.users.get(user, b"")).hexdigest()[:16]

    def fingerprints(self) -> dict[str, str]:
        return {user: self.fingerprint(user) for user in self.config.users}


def _bcrypt_cost(stored: bytes) -> int | None:
    parts = stored.split(b"$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None


def init_app(app: Flask, config: AuthConfig | None) -> None:
    from flask import Blueprint

    # Here, not at the top: ``python -m labstats.viewer.sessions`` imports this package first,
    # and a sessions module already imported then would run twice.
    from labstats.viewer import sessions

    bp = Blueprint("auth", __name__)
    guard = Guard(config) if config else None
    store = None
    if config is not None:
        store = sessions.SessionStore(
            config.sessions_file or sessions.MEMORY,
            lifetime_s=config.session_hours * 3600,
            idle_s=config.idle_minutes * 60,
        )
        store.check()  # a sessions file the viewer cannot write stops it here, not at each request
        if config.secret:
            app.config["SECRET_KEY"] = config.secret
    app.extensions["labstats_guard"] = guard
    app.extensions["labstats_sessions"] = store
    warned = []

    def refresh() -> None:
        # A changed users file ends the sessions it no longer vouches for, in every worker's
        # store at once (one shared file): not only those that come back.
        if config.refresh():
            store.end_stale(guard.fingerprints())

    @bp.route("/login", methods=["GET", "POST"])
    def login():
        if guard is None:
            return redirect(url_for("pages.index"))
        target = safe_next(request.values.get("next"))
        if request.method == "GET":
            return render_template("login.html", next=target, error=None)
        if not same_origin(config.origins):
            abort(403, "login form posted from another site")
        refresh()
        user = request.form.get("user", "")[:128]
        if guard.check_password(user, request.form.get("password", "")):
            store.end(request.cookies.get(COOKIE))  # a fresh id at each login (no fixation)
            session_id, created = store.create(user, guard.fingerprint(user))
            response = redirect(target)
            # Expires at login + lifetime, set once: answers never push it further.
            response.set_cookie(
                COOKIE,
                session_id,
                max_age=int(store.lifetime_s),
                expires=created + store.lifetime_s,
                path="/",
                secure=True,
                httponly=True,
                samesite="Strict",
            )
            if LEGACY_COOKIE in request.cookies:
                response.delete_cookie(LEGACY_COOKIE, secure=True, httponly=True, samesite="Strict")
            return response
        return render_template("login.html", next=target, error="wrong user name or password"), 401

    @bp.post("/logout")
    def logout():
        response = redirect(url_for("auth.login"))
        if store is not None:
            store.end(request.cookies.get(COOKIE))  # ended for every worker: the cookie is dead
            _clear_cookie(response)
        return response

    @app.before_request
    def require_login():
        g.user = None
        if guard is None or request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if store.in_memory and request.environ.get("wsgi.multiprocess") and not warned:
            warned.append(True)
            app.logger.error("[auth] has no sessions_file: each worker keeps its own sessions")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            g.user = guard.check_token(header[7:].strip())
            return None if g.user else _denied("invalid API token")
        refresh()
        cookie = request.cookies.get(COOKIE)
        found = store.lookup(cookie)
        if found and found.user in guard.config.users and found.fingerprint == guard.fingerprint(found.user):
            g.user = found.user
            return None
        if found:  # the user's password changed or the user is gone
            store.end(cookie)
        response = _denied("log in first")
        if cookie is not None:
            _clear_cookie(response)
        return response

    app.register_blueprint(bp)


def _clear_cookie(response: Response) -> None:
    # The same attributes as when it was set: a __Host- cookie is only replaced by one with them.
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


def _denied(message: str) -> Response:
    if request.path.startswith("/api/"):
        response = jsonify({"error": message})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="labstats"'
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def safe_next(target: str | None) -> str:
    """Only a path on this site, whatever ``target`` holds: never another host (no open
    redirect), never a header-breaking character (no 500). Browsers drop tabs and newlines
    from URLs and read a backslash as a slash, so "/\t/evil" and "/\\evil" would leave the site."""
    default = url_for("pages.index")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(c < " " or c == "\x7f" for c in target):
        return default
    target = iri_to_uri(target)  # non-ASCII and spaces percent-encoded, as a header needs
    try:
        parts = urlsplit(target)
    except ValueError:
        return default
    return target if not parts.scheme and not parts.netloc and target.startswith("/") else default


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, the port made explicit; None if it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, a broken [IPv6] address
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname, DEFAULT_PORTS[scheme] if port is None else port


def same_origin(allowed: tuple[str, ...] = ()) -> bool:
    """A form post carries our own Origin (browsers send it); no Origin: a script, allowed.
    Scheme, host and port must all match the request's own origin (uWSGI reads the scheme
    from nginx's HTTPS parameter and the host, with its port, from the Host header) or one of
    the configured public ``allowed`` origins: http://host:8443 is not https://host:8443."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    got = origin_of(origin)
    if got is None:
        return False
    return got == origin_of(f"{request.scheme}://{request.host}") or got in {origin_of(o) for o in allowed}
