"""A single chart as a file for a paper: SVG or PNG."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("figures", __name__)
