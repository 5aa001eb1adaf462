"""Prometheus' /metrics: the lab's state in Prometheus' text format."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("metrics", __name__)
