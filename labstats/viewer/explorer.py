"""The explorer page: metrics of many runs split into subplots by one config key, coloured by
another, and the runs that differ only by the rest (seeds) aggregated as a band."""

from __future__ import annotations

from flask import Blueprint

from labstats.viewer.data import ApiError
from labstats.viewer.pages import page_error

bp = Blueprint("explorer", __name__)
bp.register_error_handler(ApiError, page_error)
