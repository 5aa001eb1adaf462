"""Read-only links: one run, comparison or report for anyone holding the link, until it
expires or is revoked."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("share", __name__)
