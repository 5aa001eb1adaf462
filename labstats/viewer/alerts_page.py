"""The alerts' history in the viewer: what was sent, when, to whom, and what resolved."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("alerts", __name__)
