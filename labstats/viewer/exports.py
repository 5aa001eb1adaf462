"""The run and compare pages as one self-contained HTML file (labstats.export): a download
that opens offline, for a supervisor without an account or a paper's supplement."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, request

from labstats import export
from labstats.viewer.data import ApiError, get_run
from labstats.viewer.openapi import declare, page_errors, strings
from labstats.viewer.pages import page_error

bp = Blueprint("exports", __name__)
bp.register_error_handler(ApiError, page_error)

HTML_FILE = {200: {"description": "one HTML file that opens offline", "content": {"text/html": {}}}}


@bp.get("/runs/<source>/<path:run_id>/export.html")
@declare(
    "A run as one HTML file that opens offline (a download)", responses={**HTML_FILE, **page_errors(404)}
)
def run_file(source: str, run_id: str):
    run = get_run(source, run_id)
    return _download(export.run_html(run), run.name)


@bp.get("/compare/export.html")
@declare(
    "Runs compared, as one HTML file that opens offline (a download)",
    query=[
        {**strings("run", "source/run_id", minItems=1, maxItems=export.MAX_RUNS), "required": True},
        strings("series", "the series charted (default: all)"),
    ],
    responses={**HTML_FILE, **page_errors(400, 404)},
)
def compare_file():
    refs = request.args.getlist("run")
    if not 1 <= len(refs) <= export.MAX_RUNS:
        abort(400, f"choose between 1 and {export.MAX_RUNS} runs to compare (?run=source/id&run=...)")
    runs = [get_run(*ref.partition("/")[::2]) for ref in refs]
    try:
        html = export.compare_html(runs, request.args.getlist("series") or None)
    except export.LabstatsError as exc:
        abort(400, str(exc))
    return _download(html, f"{runs[0].name}-compared")


def _download(html: str, name: str) -> Response:
    # A file name of plain characters only: the run's name is the training user's text.
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:100] or "run"
    response = Response(html, mimetype="text/html")
    response.headers["Content-Disposition"] = f'attachment; filename="{safe}.html"'
    return response
