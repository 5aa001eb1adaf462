"""Read-only links: one run, comparison or report for anyone holding the link, until it
expires or is revoked.

    POST /share                      an editor makes a link (the run page's, the compare page's
                                     and the Links page's Share forms): the link is shown once
    GET  /s/<token>                  the object, for anyone: the one-file HTML export
                                     (labstats.export, reports.report_export_html) made now
    GET  /links                      the user's links (an admin: everyone's) and their log
    POST /links/<link_id>/revoke     its owner or an admin ends it: 410 from the next request on

The token (secrets.token_urlsafe(32), 256 bits) is only ever read in the /s/ path: it is no
session and no API token, and every other route of the viewer refuses whoever holds only it.
Only its SHA-256 is kept (labstats.viewer.share_store, the viewer's SQLite file), beside who
made the link, what it shows and until when (7 days by default, at most ``share_max_days``
of [auth]). A revoked or expired link is a 410, an unknown or forged one a 404, neither
saying which runs exist. Making and revoking a link are logged (the app's log, and the
store's log shown on the Links page).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from collections import OrderedDict
from typing import Any

import redis
from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, url_for

from labstats import export
from labstats.config import LabstatsError
from labstats.format.keys import AXIS_SERIES
from labstats.reader import UNREACHABLE, Run
from labstats.viewer import reports
from labstats.viewer.auth import has_role
from labstats.viewer.data import ApiError, get_run
from labstats.viewer.openapi import declare, one_of, page_errors, parameter, strings
from labstats.viewer.pages import page_error
from labstats.viewer.share_store import (
    DEFAULT_DAYS,
    DEFAULT_MAX_DAYS,
    KINDS,
    MEMORY,
    ShareError,
    ShareStore,
)

bp = Blueprint("share", __name__)
bp.register_error_handler(ApiError, page_error)

MAX_SERIES = export.MAX_CHARTS  # series a comparison's link names at most
MAX_NAME_CHARS = 512
MAX_REPORT_VERSION = 1_000_000
RENDER_TTL_S = 15.0  # a link's page is made at most this often in a worker (see _made)
MAX_CACHED_BYTES = 64 * 1024 * 1024  # of pages kept per worker (characters)
MAX_LINK_LOCKS = 10_000
# Said to whoever holds a link that shows nothing: never which run or report it was.
GONE = {
    "unknown": (404, "There is no such link."),
    "revoked": (410, "This link was revoked by whoever shared it."),
    "expired": (410, "This link has expired."),
    "missing": (410, "What this link showed is no longer there."),
    "down": (503, "What this link shows cannot be read right now; try again in a moment."),
}
# The token never sent on as a Referer, by the page itself: nginx replaces the app's
# Referrer-Policy header with its own same-origin one (its headers snippet), under which a
# click on a report's link to the viewer would carry the token to it.
NO_REFERRER = '<meta name="referrer" content="no-referrer">'
_HEAD = re.compile(r"<head[^>]*>", re.IGNORECASE)
# Headers of every /s/ answer: never kept by a cache (a revoked link must not live on in
# one), the token never sent on as a Referer, and no search engine's index.
SHARE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}


def share_store() -> ShareStore:
    """The app's links, in the sessions file when it has one (else in memory)."""
    store = current_app.extensions.get("labstats_share")
    if store is None:
        sessions = current_app.extensions.get("labstats_sessions")
        path = getattr(sessions, "path", MEMORY) or MEMORY
        store = current_app.extensions["labstats_share"] = ShareStore(path)
    return store


def max_days() -> float:
    """The longest a link may last: [auth] share_max_days (30 without one)."""
    guard = current_app.extensions.get("labstats_guard")
    return guard.config.share_max_days if guard is not None else DEFAULT_MAX_DAYS


@bp.record_once
def _set_up(state) -> None:
    state.app.jinja_env.globals["share_max_days"] = max_days  # the Share forms' longest
    state.app.jinja_env.filters["share_utc"] = _utc


def _utc(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _user() -> str:
    """Whose links these are: the logged-in user, or "" on an open viewer (no logins)."""
    return g.get("user") or ""


# ---- the link itself, for anyone -----------------------------------------------------------


@bp.get("/s/<token>", endpoint="open")  # share.open: the endpoint auth and csp name
@declare(
    "A read-only link: the run, comparison or report it shows, as one HTML file (no login)",
    responses={
        **page_errors(404, 410, 503),
        200: {"description": "the shared object as one HTML file", "content": {"text/html": {}}},
    },
)
def open_link(token: str):
    """What the link shows, made now: a revoked or expired link is a 410 from the moment it
    ends, an unknown one a 404."""
    link = share_store().find(token)
    if link is None:
        return _gone("unknown")
    state = link.state(share_store().clock())
    if state != "active":
        return _gone(state)
    try:
        html = _made(link)
    except (ApiError, LabstatsError):
        return _gone("missing")
    except (redis.RedisError, *UNREACHABLE) as exc:
        current_app.logger.warning("share link %s not shown: %s", link.id, exc)
        return _gone("down")
    if html is None:
        return _gone("missing")
    return _shared(Response(_no_referrer(html), mimetype="text/html"))


def _no_referrer(html: str) -> str:
    """The page with NO_REFERRER first in its head (before any link or script)."""
    head = _HEAD.search(html)
    if head is None:
        return NO_REFERRER + html
    return f"{html[: head.end()]}\n{NO_REFERRER}{html[head.end() :]}"


def _made(link) -> str | None:
    """The link's page, made at most once per RENDER_TTL_S in this worker: anyone holding a
    link may ask for it as often as nginx lets an address (5 a second), and a report of 20
    panels over 60 runs takes 5 s of CPU to draw (a run of 40 series of a million points,
    seconds). What would change the answer at once is read on every request all the same:
    the link's state (above), its runs and whether they are in the trash, the report's
    version; only new points (and a run of a report's panel put in the trash) wait up to
    RENDER_TTL_S."""
    runs = _runs_shown(link.kind, link.target)
    key: tuple = (link.id,)
    if link.kind == "report":
        version = reports.report_version(str(link.target.get("report")), link.target.get("version"))
        if version is None:
            return None
        key = (link.id, version)
    cache = current_app.extensions.setdefault("labstats_share_pages", PageCache())
    with cache.lock_for(link.id):  # one drawing of a link at a time; the others wait for it
        html = cache.get(key)
        if html is None:
            html = _render(link.kind, link.target, runs)
            if html is not None:
                cache.put(key, html)
    return html


def _runs_shown(kind: str, target: dict[str, Any]) -> list[Run]:
    if kind == "run":
        return [_shown_run(target.get("source"), target.get("run"))]
    if kind == "compare":
        return [_shown_run(*ref) for ref in target.get("runs", []) if isinstance(ref, list) and len(ref) == 2]
    return []


def _render(kind: str, target: dict[str, Any], runs: list[Run]) -> str | None:
    if kind == "run":
        return export.run_html(runs[0])
    if kind == "compare":
        return export.compare_html(runs, target.get("series") or None)
    if kind == "report":
        make = getattr(reports, "report_export_html", None)
        return make(str(target.get("report")), target.get("version")) if make else None
    return None


class PageCache:
    """The pages links showed lately in this worker, by key, each for RENDER_TTL_S, at most
    MAX_CACHED_BYTES of them (the oldest dropped first)."""

    def __init__(self) -> None:
        self._pages: OrderedDict[tuple, tuple[float, str]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._link_locks: dict[str, threading.Lock] = {}

    def lock_for(self, link_id: str) -> threading.Lock:
        with self._lock:
            if len(self._link_locks) > MAX_LINK_LOCKS:
                self._link_locks.clear()  # held ones live on in their holders
            return self._link_locks.setdefault(link_id, threading.Lock())

    def get(self, key: tuple) -> str | None:
        with self._lock:
            found = self._pages.get(key)
            if found is None or found[0] < time.monotonic():
                return None
            return found[1]

    def put(self, key: tuple, html: str) -> None:
        if len(html) > MAX_CACHED_BYTES:
            return
        with self._lock:
            old = self._pages.pop(key, None)
            self._size -= len(old[1]) if old else 0
            self._pages[key] = (time.monotonic() + RENDER_TTL_S, html)
            self._size += len(html)
            while self._size > MAX_CACHED_BYTES:
                _, (_, dropped) = self._pages.popitem(last=False)
                self._size -= len(dropped)


def _shown_run(source: Any, run_id: Any) -> Run:
    # A run put in the trash is no longer shown (restoring it brings its links back).
    run = get_run(str(source), str(run_id))
    if run.annotations.trashed is not None:
        raise ApiError(410, "in the trash")
    return run


def _gone(why: str) -> Response:
    status, message = GONE[why]
    page = render_template("share_gone.html", status=status, message=message)
    return _shared(Response(_no_referrer(page), status))


def _shared(response: Response) -> Response:
    response.headers.update(SHARE_HEADERS)
    return response


# ---- making and revoking links (editors), listing them -------------------------------------


@bp.post("/share")
@declare(
    "Make a read-only link to a run, a comparison or a report (HTML form fields or query parameters)",
    query=[
        one_of("kind", KINDS, "what it shows (default: a report if one is named, a run for one run)"),
        strings("run", "source/run_id: the run, or the runs compared", maxItems=export.MAX_RUNS),
        parameter("runs", {"type": "string"}, "more runs, source/run_id one a line (the Links page's form)"),
        strings("series", "the series a comparison charts (default: all)", maxItems=MAX_SERIES),
        parameter("report", {"type": "string"}, "the report's id"),
        parameter(
            "version",
            {"type": "integer", "minimum": 1, "maximum": MAX_REPORT_VERSION},
            "the report's version (default: the latest)",
        ),
        parameter(
            "days",
            {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            "how long it lasts (default 7)",
        ),
    ],
    responses=page_errors(400, 404),
)
def create():
    """Makes the link and shows it once (only its hash is kept): the page says until when it
    works and where to revoke it."""
    form = request.values
    refs = [r.strip() for r in form.getlist("run") + form.get("runs", "").splitlines() if r.strip()]
    report = form.get("report", "").strip()
    kind = form.get("kind") or ("report" if report else "run" if len(refs) == 1 else "compare")
    days = _days(form.get("days"))
    if kind == "run":
        if len(refs) != 1:
            raise ApiError(400, "a run's link names one run (run=source/run_id)")
        source, run_id = _ref(refs[0])
        run = get_run(source, run_id)
        target, title = {"source": source, "run": run_id}, f"{run.display_name} ({source}/{run_id})"
    elif kind == "compare":
        target, title = _comparison(refs, form.getlist("series"))
    elif kind == "report":
        target, title = _report(report, form.get("version"))
    else:
        raise ApiError(400, f"a link shows a {', a '.join(KINDS)}")
    try:
        token, link = share_store().create(_user(), kind, target, title, days, max_days())
    except ShareError as exc:
        raise ApiError(400, str(exc)) from None
    current_app.logger.info("share link created: user=%r link=%s kind=%s what=%r days=%g",
                            _user(), link.id, kind, title, days)  # fmt: skip
    url = url_for("share.open", token=token, _external=True)
    response = Response(render_template("share_created.html", link=link, url=url))
    response.headers["Cache-Control"] = "no-store"  # the page holds the token
    return response


def _days(raw: str | None) -> float:
    longest = max_days()
    if raw is None or raw.strip() == "":
        return min(DEFAULT_DAYS, longest)
    try:
        days = float(raw)
    except ValueError:
        days = math.nan
    if not (math.isfinite(days) and 0 < days <= longest):
        raise ApiError(400, f"a link lasts more than 0 and at most {longest:g} days")
    return days


def _ref(ref: str) -> tuple[str, str]:
    source, _, run_id = ref.partition("/")
    if not source or not run_id or len(ref) > MAX_NAME_CHARS:
        raise ApiError(400, f"a run is named source/run_id, not {ref[:80]!r}")
    return source, run_id


def _comparison(refs: list[str], series: list[str]) -> tuple[dict[str, Any], str]:
    if not 1 <= len(refs) <= export.MAX_RUNS:
        raise ApiError(400, f"a comparison's link names between 1 and {export.MAX_RUNS} runs")
    series = [s for s in series if s][:MAX_SERIES]
    if any(len(s) > MAX_NAME_CHARS for s in series):
        raise ApiError(400, "a series name that long is no series")
    runs = [(ref, get_run(*ref)) for ref in dict.fromkeys(_ref(r) for r in refs)]
    if series:
        numeric = {
            n for _, run in runs for n, i in run.series_info().items() if i.get("kind") in ("f", "i", "b")
        } - AXIS_SERIES
        if not numeric & set(series):
            raise ApiError(400, "none of these runs has a numeric series of those names")
    names = ", ".join(run.display_name for _, run in runs[:3])
    more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
    charted = f" ({', '.join(series[:5])})" if series else ""
    target = {"runs": [list(ref) for ref, _ in runs], "series": series or None}
    return target, f"{len(runs)} runs: {names}{more}{charted}"


def _report(report: str, version: str | None) -> tuple[dict[str, Any], str]:
    make = getattr(reports, "report_export_html", None)
    if make is None:
        raise ApiError(400, "this viewer has no reports")
    if not report or len(report) > MAX_NAME_CHARS:
        raise ApiError(400, "name the report (report=ID)")
    number = None
    if version:
        try:
            number = int(version)
        except ValueError:
            number = 0
        if not 1 <= number <= MAX_REPORT_VERSION:
            raise ApiError(400, f"a report's version is a number from 1 to {MAX_REPORT_VERSION}")
    named = f"report {report}" + (f" version {number}" if number else "")
    # Its title from the store: drawing the report (seconds for one with many panels) only to
    # read its <title> made each link an editor asks for cost as much.
    found = reports.report_title(report, number)
    if found is None:
        raise ApiError(404, f"there is no {named}")
    title = f"{named}: {found.strip()}"
    return {"report": report, "version": number}, title


@bp.get("/links")
@declare("Your read-only links and their log (an admin: everyone's), with a form to make one",
         responses=page_errors())  # fmt: skip
def links_page():
    """Each link: what it shows, when it was made, until when it works, whether it was
    revoked (and by whom); a revoke button while it works."""
    store = share_store()
    everyone = has_role(g.get("role"), "admin")
    owner = None if everyone else _user()
    return render_template(
        "share_links.html",
        links=store.links(owner),
        entries=store.entries(owner),
        everyone=everyone,
        now=store.clock(),
        me=_user(),
        max_days=max_days(),
        default_days=min(DEFAULT_DAYS, max_days()),
        kinds=KINDS if getattr(reports, "report_export_html", None) else ("run", "compare"),
    )


@bp.post("/links/<link_id>/revoke")
@declare("Revoke a read-only link (its owner or an admin): 410 from the next request on",
         responses={303: {"description": "to the Links page"}, **page_errors(404)})  # fmt: skip
def revoke(link_id: str):
    link = share_store().get(link_id)
    # Another user's link is not said to exist (an admin may revoke any).
    if link is None or (link.owner != _user() and not has_role(g.get("role"), "admin")):
        abort(404, "you have no such link")
    if share_store().revoke(link_id, _user()):
        current_app.logger.info("share link revoked: user=%r link=%s owner=%r what=%r",
                                _user(), link_id, link.owner, link.title)  # fmt: skip
    return redirect(url_for("share.links_page"), 303)
