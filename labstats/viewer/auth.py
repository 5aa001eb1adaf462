"""Login for the viewer: a password checked once per session, a signed cookie after that.

    [auth]                                   # in the viewer's TOML config
    users_file = "/etc/labstats/viewer-users"    # name:bcrypt-hash lines (htpasswd format)
    tokens_file = "/etc/labstats/viewer-tokens"  # name:sha256-hex lines, for scripts
    secret_file = "/etc/labstats/viewer-secret"  # key that signs session cookies
    session_hours = 12

A browser logs in on /login (bcrypt, once) and then carries a session cookie (signed,
Secure, HttpOnly, SameSite=Strict, expiring). Scripts send ``Authorization: Bearer TOKEN``;
a token is 32 random bytes, so a SHA-256 comparison is enough and costs microseconds.
Without an [auth] section the viewer is open (``labstats serve`` on a laptop's loopback).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, session, url_for

# Paths reachable without a login: the login page itself and static files with no data.
PUBLIC_ENDPOINTS = {"auth.login", "static", "bokeh_js", "favicon"}


@dataclass
class AuthConfig:
    users: dict[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash
    tokens: dict[str, bytes] = field(default_factory=dict)  # name -> sha256 digest
    secret: bytes = b""
    session_hours: float = 12.0

    @classmethod
    def load(cls, section: dict) -> AuthConfig:
        secret = Path(section["secret_file"]).read_bytes().strip()
        if len(secret) < 32:
            raise ValueError(f"{section['secret_file']}: the session key must have at least 32 bytes")
        return cls(
            users=_read_pairs(section.get("users_file"), lambda v: v.encode()),
            tokens=_read_pairs(section.get("tokens_file"), bytes.fromhex),
            secret=secret,
            session_hours=float(section.get("session_hours", 12)),
        )


def _read_pairs(path: str | None, convert) -> dict:
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


def _bcrypt_cost(stored: bytes) -> int | None:
    parts = stored.split(b"$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None


def init_app(app: Flask, config: AuthConfig | None) -> None:
    from flask import Blueprint

    bp = Blueprint("auth", __name__)
    app.extensions["labstats_guard"] = guard = Guard(config) if config else None
    if config is not None:
        app.config.update(
            SECRET_KEY=config.secret,
            SESSION_COOKIE_NAME="labstats_session",
            SESSION_COOKIE_SECURE=True,
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Strict",
            PERMANENT_SESSION_LIFETIME=timedelta(hours=config.session_hours),
        )

    @bp.route("/login", methods=["GET", "POST"])
    def login():
        if guard is None:
            return redirect(url_for("pages.index"))
        target = safe_next(request.values.get("next"))
        if request.method == "GET":
            return render_template("login.html", next=target, error=None)
        if not same_origin():
            abort(403, "login form posted from another site")
        user = request.form.get("user", "")[:128]
        if guard.check_password(user, request.form.get("password", "")):
            session.clear()
            session.permanent = True
            session.update(user=user, fp=guard.fingerprint(user), at=int(time.time()))
            return redirect(target)
        return render_template("login.html", next=target, error="wrong user name or password"), 401

    @bp.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("auth.login"))

    @app.before_request
    def require_login():
        g.user = None
        if guard is None or request.endpoint in PUBLIC_ENDPOINTS:
            return None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            g.user = guard.check_token(header[7:].strip())
            return None if g.user else _denied("invalid API token")
        user = session.get("user")
        if user in guard.config.users and session.get("fp") == guard.fingerprint(user):
            g.user = user
            return None
        return _denied("log in first")

    app.register_blueprint(bp)


def _denied(message: str) -> Response:
    if request.path.startswith("/api/"):
        response = jsonify({"error": message})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="labstats"'
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def safe_next(target: str | None) -> str:
    """Only a path on this site: never another host (no open redirect)."""
    default = url_for("pages.index")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else default


def same_origin() -> bool:
    """A form post carries our own Origin (browsers send it); no Origin: a script, allowed.
    Host names are compared, not ports: nginx hands the app the Host without its port."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).hostname == urlsplit(f"//{request.host}").hostname
