"""The Boxes page: each training box, its GPUs and who uses them, its runs and its link."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("boxes", __name__)
