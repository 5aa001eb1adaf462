"""Reports: titled Markdown documents with live panels (charts, comparisons, media, tables),
every version kept."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("reports", __name__)
