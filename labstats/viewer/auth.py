"""Login for the viewer: a password checked once per session, a server-side session after that,
and a role checked at every request.

    [auth]                                   # in the viewer's TOML config
    users_file = "/etc/labstats/viewer-users"    # name:bcrypt-hash:role lines
    tokens_file = "/etc/labstats/viewer-tokens"  # name:sha256-hex:role lines, for scripts
    sessions_file = "/var/lib/labstats-viewer/sessions.sqlite"  # shared by all workers
    session_hours = 12                       # absolute lifetime from login
    idle_minutes = 120                       # ended after this long without a request
    origins = ["https://lab.example:8443"]   # optional: public origins besides the request's own
    secret_file = "/etc/labstats/viewer-session.key"  # optional now: Flask's key, unused by logins
    share_max_days = 30                      # the longest a read-only link may last (labstats.viewer.share)

A browser logs in on /login (bcrypt, once) and then carries the cookie ``__Host-labstats-viewer``
(Secure, HttpOnly, SameSite=Strict, Path=/, expiring at login + session_hours, never renewed)
holding a random session id; the session itself is in :mod:`labstats.viewer.sessions`, so
logout, a changed password (the users file is re-read when it changes), an admin
(``python -m labstats.viewer.sessions end USER``), the lifetime and the idle timeout end it at
once, in every worker. Scripts send ``Authorization: Bearer TOKEN``; a token is 32 random
bytes, so a SHA-256 comparison is enough and costs microseconds. Without an [auth] section the
viewer is open (``labstats serve`` on a laptop's loopback).

Roles: each user and token is a ``reader``, an ``editor`` or an ``admin`` (each may do what the
one before may). One check before every request, here: GET, HEAD and OPTIONS need a reader,
any other method an editor, except the few endpoints in READER_POSTS (a read sent by POST, the
user's own login, logout, password and saved views of the runs table); a view marked
``@requires("admin")`` needs more. A refusal is 403 (JSON under /api/) and one warning line in
the log: user, role, method, path.
A line of the files without a role (written before roles existed) reads as a reader until the
viewer role's next converge writes the role in.

Forged requests: every request that changes something (any method but GET, HEAD and OPTIONS)
sent with the session cookie must carry this viewer's own origin in its Origin header (or,
without one, its Referer): a form another site serves is refused with 403 before anything
runs, even where the browser sent the cookie (SameSite=Strict keeps it from doing so). Only
logout and the own password (which asks for the current one) take a request with neither
header, as scripts send them. Tokens are exempt: a browser never adds them by itself. An open
viewer (no [auth]) refuses a foreign Origin or Referer on such requests as well.

Own password: /account/password (current password, the new one twice, at least 12
characters). It is kept in the sessions file with the SHA-256 of the users file's hash it
replaced: it is the user's password until that hash changes (an admin's reset from the
inventory), then the users file's wins again. Setting it ends the user's other sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, url_for
from werkzeug.urls import iri_to_uri

log = logging.getLogger(__name__)

# Each role may do all that the ones before it may.
ROLES = ("reader", "editor", "admin")
# What a users or tokens line without a role (written before roles existed) is: the least,
# until the viewer role's next converge writes each line with the inventory's role.
ROLELESS = "reader"
# Methods that read: a reader may send them anywhere its login reaches.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The only endpoints a reader may send another method to: each reads by POST or acts on the
# user's own things (login, password, saved views). Any other endpoint taking POST, PUT, PATCH
# or DELETE needs an editor.
READER_POSTS = frozenset(
    {
        "api.live",  # the live page's poll: a read, POSTed for its list of series
        "auth.login",
        "auth.logout",
        "auth.password",  # the user's own password
        "pages.save_view",  # the user's own saved views of the runs table (saved or deleted)
    }
)
# Changing endpoints that take a session's request without Origin or Referer (scripts, older
# clients): logging out does no harm, and a new password needs the current one. A foreign
# Origin or Referer is refused there too.
NO_ORIGIN_NEEDED = frozenset({"auth.login", "auth.logout", "auth.password"})
MIN_PASSWORD_CHARS = 12
# Wrong current passwords on the own-password page, per user, before it answers 429 for a
# while: a stolen session cannot guess its way to the password (nginx limits /login itself).
PASSWORD_FAILURES = 5
PASSWORD_FAILURE_WINDOW_S = 15 * 60
# Paths reachable without a login: the login page itself, static files with no data, and a
# read-only link (/s/<token>: its token opens that one object there and nothing else; it is
# never read as a session or an API token).
PUBLIC_ENDPOINTS = {"auth.login", "static", "bokeh_js", "favicon", "share.open"}
# The session cookie. __Host-: browsers keep it to this host only, Secure, Path=/, so no
# sibling host can plant one; a name of its own, so nginx can strip it from what it passes to
# Jupyter (/jupyter/ is on the same host, and a cookie's path cannot leave a subpath out).
COOKIE = "__Host-labstats-viewer"
LEGACY_COOKIE = "labstats_session"  # the signed cookie of before: dead, removed at the next login
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_role(text: str) -> str:
    """``text`` if it is a role; ValueError naming the roles otherwise."""
    if text not in ROLES:
        raise ValueError(f"unknown role {text!r}: a role is one of {', '.join(ROLES)}")
    return text


def has_role(role: str | None, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def requires(role: str):
    """Mark a view as needing at least ``role`` (e.g. "admin"). Only ever more than its method
    needs: a POST marked "reader" still needs an editor unless it is in READER_POSTS."""
    parse_role(role)

    def mark(view):
        view.labstats_role = role
        return view

    return mark


def required_role(endpoint: str | None, method: str, view) -> str | None:
    """The least role a request needs; None for one that matched no route (404 or 405:
    nothing runs)."""
    if endpoint is None:
        return None
    needed = "reader" if method in READ_METHODS or endpoint in READER_POSTS else "editor"
    marked = getattr(view, "labstats_role", None)
    return marked if marked and ROLES.index(marked) > ROLES.index(needed) else needed


@dataclass
class AuthConfig:
    users: dict[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash
    roles: dict[str, str] = field(default_factory=dict)  # user name -> role
    tokens: dict[str, bytes] = field(default_factory=dict)  # name -> sha256 digest
    token_roles: dict[str, str] = field(default_factory=dict)  # token name -> role
    secret: bytes = b""
    session_hours: float = 12.0  # absolute lifetime of a session, from its login
    idle_minutes: float = 120.0  # a session unused this long ends
    sessions_file: str | None = None  # None: sessions in memory (one process only)
    origins: tuple[str, ...] = ()  # public origins accepted besides the request's own
    share_max_days: float = 30.0  # the longest a read-only link may last
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
        tokens = read_entries(section.get("tokens_file"), bytes.fromhex)
        config = cls(
            tokens={name: digest for name, (digest, _) in tokens.items()},
            token_roles={name: role for name, (_, role) in tokens.items()},
            secret=secret,
            session_hours=float(section.get("session_hours", 12)),
            idle_minutes=float(section.get("idle_minutes", 120)),
            sessions_file=section.get("sessions_file") or None,
            origins=origins,
            share_max_days=float(section.get("share_max_days", 30)),
            users_file=section.get("users_file") or None,
        )
        if config.session_hours <= 0 or config.idle_minutes <= 0:
            raise ValueError("[auth] session_hours and idle_minutes must be positive")
        if not 0 < config.share_max_days <= 3660:
            raise ValueError("[auth] share_max_days must be more than 0 and at most 3660 (ten years)")
        config.refresh(strict=True)
        return config

    def refresh(self, strict: bool = False) -> bool:
        """Read the users file again if it changed on disk (a password or role changed, a user
        left): True if it did. One stat() per request; a file that cannot be read, or with an
        unknown role, keeps the last users (``strict``, at startup: it is an error)."""
        if not self.users_file:
            return False
        stamp = _stamp(self.users_file)  # taken before reading: a change during the read is seen next time
        if stamp is None or stamp == self._users_stamp:
            return False
        try:
            entries = read_entries(self.users_file, str.encode)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            if strict:
                raise
            log.error("[auth] users_file not read, the last users kept: %s", exc)
            return False
        self.users = {name: hashed for name, (hashed, _) in entries.items()}
        self.roles = {name: role for name, (_, role) in entries.items()}
        self._users_stamp = stamp
        return True


def _stamp(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def read_entries(path: str | None, convert) -> dict[str, tuple]:
    """name -> (convert(value), role) from ``name:value:role`` lines; "#" starts a comment, a
    line without a role is a ROLELESS one, an unknown role is a ValueError naming the line."""
    entries = {}
    if not path:
        return entries
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        name, sep, rest = line.strip().partition(":")
        if not sep or not name or name.startswith("#"):
            continue
        value, has_role, role = rest.partition(":")  # neither a bcrypt hash nor hex holds ":"
        try:
            role = parse_role(role.strip()) if has_role else ROLELESS
        except ValueError as exc:
            raise ValueError(f"{path} line {number}: {exc}") from None
        entries[name] = (convert(value.strip()), role)
    return entries


def hash_digest(stored: bytes) -> str:
    """SHA-256 of a users file's hash: what a viewer-set password records it replaced."""
    return hashlib.sha256(stored).hexdigest()


def hash_token(token: str) -> str:
    """What a tokens file holds for ``token`` (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Guard:
    """Checks a password (bcrypt, equal cost for known and unknown users) or a token. With a
    session store, a password the user set in the viewer counts (see ``stored_hash``)."""

    def __init__(self, config: AuthConfig, store=None) -> None:
        import bcrypt  # only the web box's viewer needs it

        self.bcrypt = bcrypt
        self.config = config
        self.store = store
        # An unknown user's password is checked against this, so both cost the same time.
        cost = _bcrypt_cost(next(iter(config.users.values()), b"")) or 12
        self._dummy = bcrypt.hashpw(b"labstats-unknown-user", bcrypt.gensalt(cost))

    def stored_hash(self, user: str) -> bytes | None:
        """The hash ``user``'s password is checked against: the one set in the viewer while the
        users file still holds the hash it replaced, else the users file's; None: no such user."""
        inventory = self.config.users.get(user)
        if inventory is None or self.store is None:
            return inventory
        own = self.store.own_password(user)
        if own is not None and own[1] == hash_digest(inventory):
            return own[0]
        return inventory

    def role(self, user: str) -> str | None:
        return self.config.roles.get(user) if user in self.config.users else None

    def check_password(self, user: str, password: str) -> bool:
        stored = self.stored_hash(user)
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
        return hashlib.sha256(self.stored_hash(user) or b"").hexdigest()[:16]

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
    guard = Guard(config, store) if config else None
    app.extensions["labstats_guard"] = guard
    app.extensions["labstats_sessions"] = store
    # Pages show a control only to whom may use it: {% if may("editor") %}...{% endif %}.
    app.jinja_env.globals["may"] = lambda needed: has_role(g.get("role"), needed)
    warned = []

    def refresh() -> None:
        # A changed users file ends the sessions it no longer vouches for, in every worker's
        # store at once (one shared file): not only those that come back. A viewer-set
        # password whose users-file hash changed (an admin's reset) is forgotten.
        if config.refresh():
            store.forget_replaced_passwords({u: hash_digest(h) for u, h in config.users.items()})
            store.end_stale(guard.fingerprints())

    def start_session(response: Response, user: str) -> Response:
        store.end(request.cookies.get(COOKIE))  # a fresh id at each login (no fixation)
        session_id, created = store.create(user, guard.fingerprint(user))
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
        return response

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
            response = start_session(redirect(target), user)
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

    def password():
        """The logged-in user's own password: the current one, the new one twice."""
        if g.via != "session":
            abort(403, "an API token has no password; log in to change yours")

        def page(status: int = 200, error: str | None = None, done: bool = False) -> Response:
            return app.make_response((render_template("password.html", error=error, done=done), status))

        if request.method == "GET":
            return page()
        if not same_origin(config.origins):
            abort(403, "password form posted from another site")
        user = g.user
        if store.password_failures(user, PASSWORD_FAILURE_WINDOW_S) >= PASSWORD_FAILURES:
            return page(429, "too many wrong passwords: try again in 15 minutes")
        new = request.form.get("new", "")
        if not guard.check_password(user, request.form.get("current", "")):
            store.note_password_failure(user)
            app.logger.warning("own password: wrong current password user=%r", user)
            return page(403, "the current password is wrong")
        if new != request.form.get("again", ""):
            return page(400, "the two new passwords differ")
        problem = password_problem(new, request.form.get("current", ""))
        if problem:
            return page(400, problem)
        inventory = guard.config.users[user]  # there: this request's session was checked against it
        cost = _bcrypt_cost(inventory) or 12
        store.set_own_password(
            user, guard.bcrypt.hashpw(new.encode(), guard.bcrypt.gensalt(cost)), hash_digest(inventory)
        )
        store.clear_password_failures(user)
        ended = store.end_user(user)  # this session too: it gets a fresh id below
        app.logger.info("own password changed: user=%r, %d other session(s) ended", user, max(ended - 1, 0))
        return start_session(page(done=True), user)

    if guard is not None:  # an open viewer has no accounts, so no password page
        bp.add_url_rule("/account/password", "password", password, methods=["GET", "POST"])

    @app.before_request
    def require_login():
        g.user = None
        g.role = None
        g.via = None  # "session" or "token" once known
        if guard is None:
            g.role = "admin"  # an open viewer (a laptop's loopback): no logins, no roles
            if request.method not in READ_METHODS and request_site() is False:
                return _forged()  # a page of another site posting to the laptop's viewer
            return None
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if store.in_memory and request.environ.get("wsgi.multiprocess") and not warned:
            warned.append(True)
            app.logger.error("[auth] has no sessions_file: each worker keeps its own sessions")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            g.user = guard.check_token(header[7:].strip())
            if not g.user:
                return _denied("invalid API token")
            g.role, g.via = guard.config.token_roles.get(g.user, ROLELESS), "token"
            return authorize()
        refresh()
        cookie = request.cookies.get(COOKIE)
        found = store.lookup(cookie)
        if found and found.user in guard.config.users and found.fingerprint == guard.fingerprint(found.user):
            g.user, g.role, g.via = found.user, guard.role(found.user), "session"
            if request.method not in READ_METHODS and not own_site(request.endpoint, config.origins):
                return _forged()
            return authorize()
        if found:  # the user's password changed or the user is gone
            store.end(cookie)
        response = _denied("log in first")
        if cookie is not None:
            _clear_cookie(response)
        return response

    def authorize() -> None:
        """403 unless the user's role may make this request (see READER_POSTS)."""
        view = app.view_functions.get(request.endpoint)
        needed = required_role(request.endpoint, request.method, view)
        if needed is None or has_role(g.role, needed):
            return None
        # Who was refused what: one line in the log, and an entry in the audit trail when the
        # route names a run (the annotations blueprint records it).
        app.logger.warning(
            "refused: user=%r role=%s method=%s path=%r needs=%s",
            g.user,
            g.role,
            request.method,
            request.path,
            needed,
        )
        on_refused = app.extensions.get("labstats_on_refused")
        if on_refused is not None and request.method not in READ_METHODS:
            on_refused(needed)
        abort(403, f"this needs the {needed} role; {g.user} is a {g.role}")

    app.register_blueprint(bp)


def password_problem(new: str, current: str) -> str | None:
    """Why ``new`` cannot be a password (None: it can)."""
    if len(new) < MIN_PASSWORD_CHARS:
        return f"the new password needs at least {MIN_PASSWORD_CHARS} characters"
    if len(new.encode()) > 72:
        return "the new password is over 72 bytes, more than bcrypt reads"
    if new == current:
        return "the new password is the current one"
    return None


def _clear_cookie(response: Response) -> None:
    # The same attributes as when it was set: a __Host- cookie is only replaced by one with them.
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


def own_site(endpoint: str | None, allowed: tuple[str, ...] = ()) -> bool:
    """Whether a changing request sent with the session cookie comes from this viewer's own
    pages: its Origin (or Referer) is ours; neither is allowed only at NO_ORIGIN_NEEDED."""
    site = request_site(allowed)
    return site is True or (site is None and endpoint in NO_ORIGIN_NEEDED)


def _forged() -> NoReturn:
    log.warning("refused a cross-site request: method=%s path=%r origin=%r referer=%r", request.method,
                request.path, request.headers.get("Origin"), request.headers.get("Referer"))  # fmt: skip
    abort(403, "a change sent from another site (or without its Origin) is refused")


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


def request_site(allowed: tuple[str, ...] = ()) -> bool | None:
    """Whether the request comes from this viewer's own origin, by its Origin header or,
    without one, its Referer's origin: True or False; None when it carries neither (a script).
    Scheme, host and port must all match the request's own origin (uWSGI reads the scheme
    from nginx's HTTPS parameter and the host, with its port, from the Host header) or one of
    the configured public ``allowed`` origins: http://host:8443 is not https://host:8443.
    "null" (a sandboxed frame, a redirect chain) is no origin of ours."""
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if referer is None:
            return None
        try:
            parts = urlsplit(referer)
        except ValueError:
            return False
        origin = f"{parts.scheme}://{parts.netloc}"
    got = origin_of(origin)
    if got is None:
        return False
    return got == origin_of(f"{request.scheme}://{request.host}") or got in {origin_of(o) for o in allowed}


def same_origin(allowed: tuple[str, ...] = ()) -> bool:
    """A form post carries our own Origin (browsers send it) or Referer; neither: a script,
    allowed (see request_site)."""
    return request_site(allowed) is not False
