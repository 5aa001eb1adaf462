"""The alerts' history in the viewer: what the alerts service (labstats.ops.alerts) sent,
when, for which run and rule, and what resolved, newest first.

The service keeps it in its own SQLite file, read here read-only. Where it is: the viewer's
config, ``[alerts] history_file = "/var/lib/labstats-alerts/alerts.sqlite"`` (the alerts role
makes the file readable by the viewer's group), or ``ALERTS_HISTORY_FILE`` in the app's
config. Without either the page says that alerts are not set up here.
"""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template, request

from labstats.ops.alert_history import read_history
from labstats.viewer.openapi import declare, integer, page_errors
from labstats.viewer.sources import config_path

bp = Blueprint("alerts", __name__)

PAGE = 100  # messages a page shows
LAST_ID = 2**62  # ids are SQLite's rowids: a page "before" a larger one starts at the newest


def history_file() -> str | None:
    """The alerts service's file, from the app's config or the viewer's config file."""
    if "ALERTS_HISTORY_FILE" not in current_app.config:
        path = config_path()
        section = tomllib.loads(Path(path).read_text()).get("alerts", {}) if path else {}
        current_app.config["ALERTS_HISTORY_FILE"] = str(section.get("history_file", "")) or None
    return current_app.config["ALERTS_HISTORY_FILE"]


@bp.get("/alerts")
@declare(
    "What the alerts service sent, newest first (HTML)",
    query=[integer("before", 1, LAST_ID, "the id the page starts under (the 'older' link's)")],
    responses=page_errors(503),
)
def history():
    """Each message: when, the rule, the run (or box), its text, and how many channels took it."""
    before = request.args.get("before", type=int)
    before = None if before is None or before > LAST_ID else max(before, 0)
    path = history_file()
    rows: list[dict] = []
    if path:
        try:
            rows = read_history(path, PAGE + 1, before)
        except sqlite3.Error as exc:
            current_app.logger.warning("alerts history %s: %s", path, exc)
            abort(503, "the alerts' history cannot be read right now; try again in a moment")
    more = rows[PAGE]["id"] + 1 if len(rows) > PAGE else None
    return render_template("alerts.html", rows=rows[:PAGE], configured=bool(path), more=more, before=before)
