"""The labstats viewer: a Flask app reading runs through labstats.reader, read-only.

create_app()                       # sources from $LABSTATS_VIEWER_CONFIG or the usual lookup
labstats-viewer via uWSGI:         module = labstats.viewer.wsgi:app
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import redis
from bokeh.util.paths import bokehjs_path
from flask import Flask, jsonify, render_template, request, send_file, send_from_directory
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from labstats import __version__
from labstats.viewer import (
    alerts_page,
    annotate,
    api,
    auth,
    boxes,
    explorer,
    exports,
    figures,
    media,
    metrics,
    pages,
    reports,
    share,
)
from labstats.viewer.csp import policy_for
from labstats.viewer.sources import Source, load_auth, load_sources
from labstats.viewer.windows import X_AXES

# Debian's libjs-three (the viewer role installs it); config THREE_JS names another file.
THREE_JS = "/usr/share/javascript/three/build/three.min.js"


class StrictJSONProvider(DefaultJSONProvider):
    """JSON that browsers can parse: NaN and infinities (a config may hold them) become
    null, documented in the API description, instead of the invalid tokens NaN/Infinity."""

    sort_keys = False  # Bokeh's document JSON must keep its order

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        try:
            return json.dumps(obj, allow_nan=False, **kwargs)
        except ValueError:  # a non-finite float somewhere: replace, then encode
            return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def _duration_text(seconds: float | None) -> str:
    """1h 05m, 4m 12s, 37s: a run's duration as the runs table shows it."""
    if seconds is None:
        return ""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def create_app(
    sources: dict[str, Source] | None = None,
    config: dict[str, Any] | None = None,
    login: auth.AuthConfig | None = None,
) -> Flask:
    """The viewer. ``sources`` and ``login`` default to the viewer's config file (see
    :mod:`labstats.viewer.sources` and :mod:`labstats.viewer.auth`)."""
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=1 << 20)
    app.json = StrictJSONProvider(app)
    app.jinja_env.policies["json.dumps_kwargs"] = {}
    if config:
        app.config.update(config)
    app.extensions["labstats_sources"] = sources if sources is not None else load_sources()
    app.jinja_env.globals["version"] = __version__
    app.jinja_env.globals["x_axes"] = X_AXES  # the charts' x axis control
    # JSON as text to show (autoescape then escapes it); `tojson` is for data blocks only.
    app.jinja_env.filters["json"] = lambda value: json.dumps(value, default=str, ensure_ascii=False)
    app.jinja_env.filters["duration"] = _duration_text
    if login is None and sources is None:
        section = load_auth()
        login = auth.AuthConfig.load(section) if section else None
    auth.init_app(app, login)
    app.register_blueprint(api.bp)
    app.register_blueprint(media.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(exports.bp)
    app.register_blueprint(explorer.bp)
    app.register_blueprint(annotate.bp)
    for module in (reports, share, figures, boxes, metrics, alerts_page):
        app.register_blueprint(module.bp)

    bokeh_static = str(bokehjs_path() / "js")

    @app.get("/bokeh/<path:filename>")
    def bokeh_js(filename: str):
        # BokehJS from the installed bokeh package: no CDN, the boxes may be offline.
        return send_from_directory(bokeh_static, filename, max_age=86400)

    three_js = Path(app.config.get("THREE_JS", THREE_JS))

    @app.get("/vendor/three.min.js")
    def three():
        # three.js for the point-cloud view, from the box (Debian's libjs-three): no CDN.
        if not three_js.is_file():
            return "three.js is not installed on this box (Debian package libjs-three)", 404
        return send_file(three_js, mimetype="text/javascript", max_age=86400)

    @app.get("/favicon.ico")
    def favicon():
        return "", 204

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", policy_for(request.endpoint))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.description}), exc.code
        return render_template("error.html", status=exc.code, message=exc.description), exc.code

    @app.errorhandler(redis.RedisError)
    def redis_error(exc: redis.RedisError):
        message = "the run store is unreachable right now; try again in a moment"
        app.logger.warning("redis error: %s", exc)
        if request.path.startswith("/api/"):
            return jsonify({"error": message}), 503
        return render_template("error.html", status=503, message=message), 503

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unexpected error")  # the traceback goes to the log, never the page
        if request.path.startswith("/api/"):
            return jsonify({"error": "internal error"}), 500
        return render_template("error.html", status=500, message="internal error"), 500

    return app
