"""The viewer's OpenAPI document (/api/openapi.json), generated with apispec from what each
endpoint declares beside it:

    @bp.get("/runs/<source>/<run_id>/tensor/<path:name>")
    @declare("A tensor value at (or before) an idx", query=[integer("idx")], responses=errors(400, 404))
    def tensor(source, run_id, name): ...

document(app) walks the app's URL map: each rule whose view is declared becomes a path with
an operation per method, its path parameters taken from the rule itself (source, run_id and
name are shared components), so the document lists exactly the routes the app serves and
the fuzzer (tests/unit/test_viewer_fuzz.py) reaches every one of them. The HTML pages declare
their query too (tag "pages"): only static files and the login form are left out.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from apispec import APISpec
from flask import Flask

TITLE = "labstats viewer API"
API_VERSION = "1"  # of the API, not of the package
DESCRIPTION = (
    "Read-only access to logged runs. Errors are JSON objects with an 'error' sentence; "
    "NaN and infinities in stored values are sent as null."
)
# Path parameters every run route has, described once (the fuzzer gives them real examples).
PATH_PARAMETERS = {
    "source": "the source (training box) the run is on",
    "run_id": "the run's id",
    "name": "a series or media name (may contain /)",
}
STRING = {"type": "string"}
JSON_OK = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")  # <path:name> → name


def declare(
    summary: str,
    *,
    query: Iterable[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
    responses: dict[int, dict[str, Any]] | None = None,
) -> Callable:
    """Declare a view's operation: ``query`` its query parameters (see ``parameter``),
    ``body`` its JSON request body's schema, ``responses`` by status (default: 200 JSON).
    Its docstring, if any, is the operation's description."""

    def mark(view: Callable) -> Callable:
        view.openapi = {  # type: ignore[attr-defined]
            "summary": summary,
            "query": list(query),
            "body": body,
            "responses": responses or {200: JSON_OK},
        }
        return view

    return mark


def parameter(name: str, schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    """A query parameter; a list (``?also=a&also=b``) when ``schema`` is an array."""
    param: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
    if description:
        param["description"] = description
    if schema.get("type") == "array":
        param["style"], param["explode"] = "form", True
    return param


def integer(name: str, low: int | None = None, high: int | None = None, description: str | None = None):
    """An integer query parameter within [low, high] (what int_arg checks)."""
    schema: dict[str, Any] = {"type": "integer"}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return parameter(name, schema, description)


def one_of(name: str, choices: Iterable[str], description: str | None = None) -> dict[str, Any]:
    """A string query parameter taking one of ``choices``."""
    return parameter(name, {"type": "string", "enum": list(choices)}, description)


def content(media_type: str, description: str | None = None, schema: dict | None = None) -> dict[str, Any]:
    """A 200 answer of ``media_type`` (binary unless ``schema`` says otherwise)."""
    schema = schema or ({"type": "string"} if media_type.startswith("text/") else BINARY)
    return {"description": description or media_type, "content": {media_type: {"schema": schema}}}


BINARY = {"type": "string", "format": "binary"}


def errors(*statuses: int, ok: dict[str, Any] | None = None) -> dict[int, Any]:
    """The responses of an operation: ``ok`` (default JSON) and each error status (JSON
    with an 'error' sentence)."""
    return {200: ok or JSON_OK, **{status: "Error" for status in sorted(statuses)}}


def page_errors(*statuses: int) -> dict[int, Any]:
    """The responses of an HTML page: the page, and each error status as an error page."""
    error = {"description": "error page", "content": {"text/html": {"schema": STRING}}}
    return {200: content("text/html", "page"), **{status: error for status in sorted(statuses)}}


def strings(name: str, description: str, **bounds: int) -> dict[str, Any]:
    """A repeatable string query parameter (?name=a&name=b); ``bounds``: minItems, maxItems."""
    return parameter(name, {"type": "array", "items": STRING, **bounds}, description)


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: /api/runs/<source>/<path:name> → /api/runs/{source}/{name}."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3 document of every declared route of ``app``."""
    spec = APISpec(TITLE, API_VERSION, "3.0.3", info={"description": DESCRIPTION})
    for name, text in PATH_PARAMETERS.items():
        spec.components.parameter(name, "path", {"schema": STRING, "description": text})
    spec.components.schema(
        "Error", {"type": "object", "required": ["error"], "properties": {"error": STRING}}
    )
    spec.components.response(
        "Error", {"description": "error", "content": {"application/json": {"schema": "Error"}}}
    )
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        declared = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if declared is None:
            continue
        view = app.view_functions[rule.endpoint]
        operation = _operation(rule.endpoint, declared, view, _rule_arguments(rule.rule))
        methods = sorted(m.lower() for m in rule.methods or () if m not in ("HEAD", "OPTIONS"))
        spec.path(path=openapi_path(rule.rule), operations={method: operation for method in methods})
    return spec.to_dict()


# Routes the document leaves out: files with no data (static files, BokehJS, three.js, the
# favicon) and the login form. Every other route declares itself.
NOT_DOCUMENTED = {"static", "bokeh_js", "three", "favicon", "auth.login", "auth.logout", "auth.password"}


def undocumented(app: Flask) -> list[str]:
    """The routes of ``app`` that declare nothing and are not in NOT_DOCUMENTED, as
    "METHOD rule" (the unit tests keep this empty: each route is in the document, so the
    fuzzer reaches it)."""
    return sorted(
        f"{method} {rule.rule}"
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in NOT_DOCUMENTED and not hasattr(app.view_functions[rule.endpoint], "openapi")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    )


def _rule_arguments(rule: str) -> list[str]:
    return _RULE_ARGUMENT.findall(rule)


def _operation(endpoint: str, declared: dict[str, Any], view: Callable, arguments: list[str]) -> dict:
    path = [
        name if name in PATH_PARAMETERS else {"name": name, "in": "path", "schema": STRING}
        for name in arguments
    ]
    operation: dict[str, Any] = {
        "operationId": endpoint,
        "tags": [endpoint.partition(".")[0]],
        "summary": declared["summary"],
        "parameters": [*path, *declared["query"]],
        "responses": dict(declared["responses"]),
    }
    if view.__doc__:
        operation["description"] = inspect.cleandoc(view.__doc__)
    if declared["body"] is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": declared["body"]}},
        }
    return operation
