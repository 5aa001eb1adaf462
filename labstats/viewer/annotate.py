"""Annotations after the fact, in the viewer: tags, a note, a display name, a project, a star,
protect, and the trash (editors change them; every change goes to the audit trail)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("annotate", __name__)
