"""Annotations after the fact, in the viewer: tags, a note, a display name, a project, a star,
protect, and the trash (editors change them; every change goes to the audit trail).

    GET   /api/runs/<source>/<run_id>/annotations      what people said about the run
    PATCH /api/runs/<source>/<run_id>/annotations      {"name", "project", "note", "tags_add",
                                                        "tags_remove", "starred", "protected"}
    POST  /api/runs/<source>/<run_id>/trash | restore  into the trash and out again
    GET   /api/audit?run=ID                            the audit trail (admins)
    POST  /runs/<source>/<run_id>/annotations | trash | restore   the run page's forms
    GET   /trash, /audit                               the pages

Changes are written through the source's ``annotate_url`` (its master, as the Redis user
``annotator``; labstats.viewer.sources) by labstats.curation, which appends exactly one audit
entry per change in the same transaction; reads come from the replica. A refused value is a
400 with its sentence, a run that cannot go to the trash (protected, already there) a 409, a
source without annotate_url a 409. The role check (labstats.viewer.auth) refuses readers
before any of this runs, and the refusal is noted in the run's audit trail here.

A note is markdown rendered by markdown-it-py with raw HTML off and only http(s), mailto and
relative links kept (any other scheme leaves an inert link); no images (nothing is loaded
from elsewhere).
"""

from __future__ import annotations

import re
from typing import Any

import redis
from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, url_for
from markdown_it import MarkdownIt
from markupsafe import Markup

from labstats.curation import UNSET, Annotations, CurationError, read_annotations, read_audit
from labstats.format import run_record
from labstats.viewer.auth import requires
from labstats.viewer.data import ApiError, SourceDown, get_run, json_error, sources
from labstats.viewer.openapi import declare, errors, integer, page_errors, parameter
from labstats.viewer.sources import ReadOnlySource, Source

bp = Blueprint("annotate", __name__)

TEXTS = ("name", "project", "note")
FLAGS = ("starred", "protected")
TAG_LISTS = ("tags_add", "tags_remove")
MAX_AUDIT = 1000  # entries one answer of the audit holds at most
MAX_TRASH_SHOWN = 500  # trashed runs the Trash page lists at most (newest first)
# Link schemes a note may use; any other (javascript:, data:, vbscript:, file:...) is inert.
SAFE_SCHEMES = ("http", "https", "mailto")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_INVISIBLE = re.compile(r"[\x00-\x20\x7f]")  # browsers drop these inside a URL's scheme

PATCH_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "description": "display name ('' clears it; the run id never changes)"},
        "project": {"type": "string", "description": "project ('' clears it)"},
        "note": {"type": "string", "description": "markdown, at most 64 KiB"},
        "tags_add": {"type": "array", "items": {"type": "string"}},
        "tags_remove": {"type": "array", "items": {"type": "string"}},
        "starred": {"type": "boolean"},
        "protected": {"type": "boolean", "description": "a protected run cannot be put in the trash"},
    },
}


# ---- notes as markdown ---------------------------------------------------------------------


def safe_link(url: str) -> bool:
    """Whether a note may link to ``url``: http(s), mailto, or a link without a scheme
    (relative to the viewer). The check reads the scheme as a browser would."""
    scheme = _SCHEME.match(_INVISIBLE.sub("", url).lower())
    return scheme is None or scheme.group(1) in SAFE_SCHEMES


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")  # a picture would be fetched from wherever the note says
    md.validateLink = safe_link  # an unsafe link keeps its text with an empty href

    def link_open(renderer, tokens, idx, options, env):
        tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", link_open)
    return md


_MD = _markdown()


def render_note(text: str) -> Markup:
    """A note as HTML: markdown without raw HTML (shown as text) and without unsafe links."""
    # Safe to mark: markdown-it escapes every character of the text it does not turn into
    # markup itself (html off), and links pass safe_link.
    return Markup(_MD.render(text or ""))  # noqa: S704


# ---- where changes go ----------------------------------------------------------------------


def _source(name: str) -> Source:
    found = sources().get(name)
    if found is None:
        raise ApiError(404, f"unknown source {name!r}")
    return found


def _via() -> str:
    return "api" if request.path.startswith("/api/") else "viewer"


def _actor() -> str:
    # An open viewer (a laptop's loopback, no logins) has no user: say so in the audit.
    return g.get("user") or "open viewer"


def _annotations(source: str, run_id: str) -> Annotations:
    src = _source(source)
    return read_annotations(src.lab.redis, src.prefix, [run_id])[run_id]


def _curated(source: str, run_id: str, act) -> Annotations:
    """``act(curation)`` on an existing run: the annotations after it. Refusals become
    ApiErrors: a source without annotate_url 409, a value CurationError 400."""
    get_run(source, run_id)  # 404 for a run that is not there, 503 for a source that is away
    src = _source(source)
    try:
        return act(src.curation(_actor(), _via()))
    except ReadOnlySource as exc:
        raise ApiError(409, str(exc)) from None
    except CurationError as exc:
        raise ApiError(400, str(exc)) from None


def _move(source: str, run_id: str, action: str) -> Annotations:
    """Into the trash or out of it; a run that cannot (protected, already there, not there)
    is a 409 with the reason."""
    try:
        return _curated(source, run_id, lambda cur: getattr(cur, action)(run_id))
    except ApiError as exc:
        if exc.status == 400:  # the run's state refuses it, not a value the user sent
            raise ApiError(409, exc.message) from None
        raise


def record_refusal(needed: str) -> None:
    """The role check refused a change (labstats.viewer.auth): when the route names a run of
    a writable source, an audit entry of the attempt (``refused``) beside the run's changes."""
    args = request.view_args or {}
    src = sources().get(str(args.get("source", "")))
    run_id = args.get("run_id")
    if src is None or not run_id or not src.writable:
        return
    try:
        if not src.lab.redis.exists(src.lab.keys.run(run_id)):
            return  # a made-up id: the log line is enough, the audit keeps to runs
        what = f"{request.method} {request.path} (needs the {needed} role; {g.get('role')})"
        src.curation(_actor(), _via()).refused(run_id, what)
    except (redis.RedisError, OSError) as exc:
        current_app.logger.warning("refusal not in the audit trail: %s", exc)


@bp.record_once
def _set_up(state) -> None:
    state.app.extensions["labstats_on_refused"] = record_refusal
    state.app.jinja_env.globals["annotations_of"] = annotations_view
    state.app.jinja_env.filters["markdown"] = render_note


def annotations_view(source: str, run_id: str) -> dict[str, Any]:
    """What _annotations.html shows of a run: its annotations, the note as HTML, and
    whether they can be changed here."""
    ann = _annotations(source, run_id)
    return {"ann": ann, "note_html": render_note(ann.note), "writable": _source(source).writable}


@bp.errorhandler(ApiError)
def _error(exc: ApiError):
    if request.path.startswith("/api/"):
        return json_error(exc)
    return render_template("error.html", status=exc.status, message=exc.message), exc.status


# ---- the API -------------------------------------------------------------------------------


def _answer(source: str, run_id: str, ann: Annotations):
    return jsonify(
        {"source": source, "run": run_id, "writable": _source(source).writable, "annotations": ann.to_dict()}
    )


@bp.get("/api/runs/<source>/<run_id>/annotations")
@declare("A run's annotations: display name, project, note, tags, star, protect, trash",
         responses=errors(404, 503))  # fmt: skip
def api_annotations(source: str, run_id: str):
    """``writable`` says whether they can be changed here (the source has an annotate_url)."""
    get_run(source, run_id)
    return _answer(source, run_id, _annotations(source, run_id))


@bp.patch("/api/runs/<source>/<run_id>/annotations")
@declare("Change a run's annotations (editors): one audit entry per request",
         body=PATCH_BODY, responses=errors(400, 404, 409, 503))  # fmt: skip
def api_change(source: str, run_id: str):
    """Only the fields given change; tags are added, then removed. A value that breaks the
    rules (control characters, over 200 characters, a note over 64 KiB) is refused whole (400)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object of the fields to change")
    changes = _checked(body)
    ann = _curated(source, run_id, lambda cur: cur.change(run_id, **changes))
    return _answer(source, run_id, ann)


def _checked(body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(TEXTS) - set(FLAGS) - set(TAG_LISTS))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0][:40]!r}: the fields are "
                            f"{', '.join((*TEXTS, *TAG_LISTS, *FLAGS))}")  # fmt: skip
    for key in TEXTS:
        if key in body and not isinstance(body[key], str):
            raise ApiError(400, f"{key} must be a string")
    for key in FLAGS:
        if key in body and not isinstance(body[key], bool):
            raise ApiError(400, f"{key} must be true or false")
    for key in TAG_LISTS:
        if key in body and not (isinstance(body[key], list) and all(isinstance(t, str) for t in body[key])):
            raise ApiError(400, f"{key} must be a list of strings")
    return {key: body[key] for key in body}


@bp.post("/api/runs/<source>/<run_id>/trash")
@declare("Put a run in the trash (editors): hidden from every list until restored",
         responses=errors(404, 409, 503))  # fmt: skip
def api_trash(source: str, run_id: str):
    """A protected run, or one already in the trash, is refused (409)."""
    return _answer(source, run_id, _move(source, run_id, "trash"))


@bp.post("/api/runs/<source>/<run_id>/restore")
@declare("Take a run out of the trash (editors)", responses=errors(404, 409, 503))
def api_restore(source: str, run_id: str):
    return _answer(source, run_id, _move(source, run_id, "restore"))


AUDIT_QUERY = [
    parameter("run", {"type": "string"}, "only this run's entries (its id)"),
    parameter("source", {"type": "string"}, "only this source's entries"),
    integer("limit", 1, MAX_AUDIT, "entries at most (default 200)"),
]


def _audit() -> list[dict[str, Any]]:
    run_id = request.args.get("run") or None
    only = request.args.get("source") or None
    raw_limit = request.args.get("limit", "200")
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = -1
    if not 1 <= limit <= MAX_AUDIT:
        raise ApiError(400, f"query parameter 'limit' must be an integer between 1 and {MAX_AUDIT}")
    if only is not None and only not in sources():
        raise ApiError(404, f"unknown source {only!r}")
    entries = []
    for name, src in sources().items():
        if only is not None and name != only:
            continue
        try:
            found = read_audit(src.lab.redis, src.prefix, run_id=run_id, limit=limit)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise SourceDown(name, exc) from None
        entries += [{"source": name, **entry} for entry in found]
    entries.sort(key=lambda entry: entry["when"], reverse=True)
    return entries[:limit]


@bp.get("/api/audit")
@requires("admin")
@declare("The audit trail (admins): every change, newest first", query=AUDIT_QUERY,
         responses=errors(400, 404, 503))  # fmt: skip
def api_audit():
    """Each entry: source, writer (the Redis user whose stream holds it), who, when, run,
    action (change, trash, restore, refused), changes ({field: [before, after]}), via, what."""
    return jsonify({"entries": _audit()})


# ---- the pages -----------------------------------------------------------------------------


BACK = {303: {"description": "back to the run's page (or the Trash page: back=trash)"}}


def form_errors(*statuses: int) -> dict[int, Any]:
    """A form's answers: back to a page (303), or an error page."""
    return {**BACK, **{status: page for status, page in page_errors(*statuses).items() if status != 200}}


def _back_to_run(source: str, run_id: str):
    if request.form.get("back") == "trash":
        return redirect(url_for("annotate.trash_page"), 303)
    return redirect(url_for("pages.run_page", source=source, run_id=run_id), 303)


@bp.post("/runs/<source>/<run_id>/annotations")
@declare("The run page's form: change its annotations (editors), then back to the page",
         responses={**form_errors(400, 404, 409)})  # fmt: skip
def page_change(source: str, run_id: str):
    """A text field counts only when it differs from the value the form was shown with
    (``was_<field>``): two editors' forms change only what each changed."""
    # Browsers send a textarea's line ends as CRLF (the HTML standard): a note keeps LF.
    form = {key: value.replace("\r\n", "\n") for key, value in request.form.items()}
    changes: dict[str, Any] = {}
    for key in TEXTS:
        if key in form and form[key] != form.get(f"was_{key}", UNSET):
            changes[key] = form[key]
    for key in FLAGS:
        if key in form:
            changes[key] = form[key] == "1"
    for key in TAG_LISTS:
        tags = [t for t in request.form.getlist(key) if t.strip()]
        if tags:
            changes[key] = tags
    _curated(source, run_id, lambda cur: cur.change(run_id, **changes))
    return _back_to_run(source, run_id)


@bp.post("/runs/<source>/<run_id>/trash")
@declare("The run page's form: put the run in the trash (editors)",
         responses={**form_errors(404, 409)})  # fmt: skip
def page_trash(source: str, run_id: str):
    _move(source, run_id, "trash")
    return _back_to_run(source, run_id)


@bp.post("/runs/<source>/<run_id>/restore")
@declare("The run page's and the Trash page's form: take the run out of the trash (editors)",
         responses={**form_errors(404, 409)})  # fmt: skip
def page_restore(source: str, run_id: str):
    _move(source, run_id, "restore")
    return _back_to_run(source, run_id)


def trashed_runs() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The runs in the trash of every source that can be read, the most recently trashed
    first (at most MAX_TRASH_SHOWN), and the sources that cannot be read now."""
    rows: list[dict[str, Any]] = []
    away: dict[str, str] = {}
    for name, src in sources().items():
        try:
            times = src.trashed()
            ids = sorted(times, key=times.__getitem__, reverse=True)[:MAX_TRASH_SHOWN]
            found = read_annotations(src.lab.redis, src.prefix, ids)
            names = _logged_names(src, ids)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            away[name] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            continue
        rows += [
            {"source": name, "id": run_id, "name": names.get(run_id) or run_id, "ann": found[run_id],
             "writable": src.writable}
            for run_id in ids
        ]  # fmt: skip
    rows.sort(key=lambda row: row["ann"].trashed or 0.0, reverse=True)
    return rows[:MAX_TRASH_SHOWN], away


def _logged_names(src: Source, ids: list[str]) -> dict[str, str]:
    """The names the runs were logged with, in one round trip."""
    pipe = src.lab.redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hget(src.lab.keys.run(run_id), "name")
    out = {}
    for run_id, raw in zip(ids, pipe.execute(), strict=True):
        name = run_record.decode({b"name": raw}).get("name") if raw is not None else None
        out[run_id] = str(name) if name is not None else ""
    return out


@bp.get("/trash")
@declare("The runs in the trash, the most recently trashed first (HTML)", responses=page_errors())
def trash_page():
    """Editors restore them one at a time."""
    rows, away = trashed_runs()
    return render_template("trash.html", rows=rows, away=away)


@bp.get("/audit")
@requires("admin")
@declare("The audit trail (admins; HTML)", query=AUDIT_QUERY, responses=page_errors(400, 404))
def audit_page():
    return render_template("audit.html", entries=_audit(), run=request.args.get("run") or "")
