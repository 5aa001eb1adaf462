"""The viewer's OpenAPI document is generated from the endpoints' declarations: it lists every
route of the app's URL map (each method, each path parameter) but static files and the login
form, so the fuzzer (test_viewer_fuzz.py) reaches them all, and the bounds it declares are
the ones the endpoints and pages enforce."""

import numpy as np
import pytest
import schemathesis
from flask import Blueprint

import labstats
from labstats.viewer import create_app
from labstats.viewer.openapi import NOT_DOCUMENTED, declare, document, openapi_path, undocumented
from labstats.viewer.sources import Source


@pytest.fixture
def app(url):
    return create_app({"local": Source("local", url)})


def _operations(doc):
    return {(path, method): op for path, ops in doc["paths"].items() for method, op in ops.items()}


def test_every_api_route_is_in_the_document_with_its_parameters(app):
    doc = app.test_client().get("/api/openapi.json").json
    operations = _operations(doc)
    documented = [rule for rule in app.url_map.iter_rules() if rule.endpoint not in NOT_DOCUMENTED]
    routes = [(rule, method.lower()) for rule in documented for method in rule.methods - {"HEAD", "OPTIONS"}]
    # 9 of the API (POST /api/live one of them), 10 of the media, 4 pages and the charts of two
    # of them as JSON (run, compare), the runs table's saved views (save, open), the one-file
    # exports (a run, a comparison), the explorer (page, view), 10 of the annotations, 7 of the
    # reports, 4 of the read-only links, the Boxes page and its state, a run's System group, a
    # chart as a figure, /metrics and the alerts' history; 6 files and forms left out
    assert len(routes) == 58
    # (the own-password form exists only where logins do)
    assert len(list(app.url_map.iter_rules())) == 58 + len(NOT_DOCUMENTED - {"auth.password"})
    assert undocumented(app) == []
    for rule, method in routes:
        op = operations[openapi_path(rule.rule), method]
        assert op["operationId"] == rule.endpoint
        named = [p.get("name") or p["$ref"].rsplit("/", 1)[1] for p in op["parameters"]]
        in_path = [p for p in named if f"{{{p}}}" in openapi_path(rule.rule)]
        assert in_path == list(rule.arguments) or sorted(in_path) == sorted(rule.arguments)
        assert {"200", "303"} & set(op["responses"])  # its answer: a page, JSON, or a form's redirect
    assert ("/api/live", "post") in operations
    body = operations["/api/live", "post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"runs", "series", "watch"}
    assert body["properties"]["watch"]["maxItems"] == 20
    schemathesis.openapi.from_dict(doc)  # a document schemathesis reads


def test_a_route_without_a_declaration_is_named(app):
    extra = Blueprint("extra", __name__, url_prefix="/api")
    extra.add_url_rule("/undeclared/<thing>", "undeclared", lambda thing: thing, methods=["GET", "POST"])
    extra.add_url_rule("/declared", "declared", declare("declared")(lambda: "ok"))
    app.register_blueprint(extra)
    assert undocumented(app) == ["GET /api/undeclared/<thing>", "POST /api/undeclared/<thing>"]
    assert "/api/declared" in document(app)["paths"]


def _query(doc, path, method="get"):
    return {p["name"]: p for p in doc["paths"][path][method]["parameters"] if "name" in p}


def test_the_declared_bounds_are_the_ones_the_endpoints_check(app, tmp_path):
    with labstats.Stats(tmp_path / "bounds") as stats:
        for i in range(10):
            stats.log(
                step=i, loss=float(i), note=f"n{i}", weights=np.zeros(3, np.float32) if i == 9 else None
            )
    client = app.test_client()
    doc = document(app)
    checked = {
        "/api/runs": ["limit", "page"],
        "/api/runs/{source}/{run_id}/series/{name}": ["max_points"],
        "/api/runs/{source}/{run_id}/tensor/{name}": ["idx"],
        "/api/runs/{source}/{run_id}/csv/{name}": ["start", "stop"],
    }
    urls = {
        "/api/runs": "/api/runs",
        "/api/runs/{source}/{run_id}/series/{name}": f"/api/runs/local/{stats.run_id}/series/loss",
        "/api/runs/{source}/{run_id}/tensor/{name}": f"/api/runs/local/{stats.run_id}/tensor/weights",
        "/api/runs/{source}/{run_id}/csv/{name}": f"/api/runs/local/{stats.run_id}/csv/loss",
    }
    for path, names in checked.items():
        params = _query(doc, path)
        for name in names:
            low, high = params[name]["schema"]["minimum"], params[name]["schema"]["maximum"]
            for inside in (low, high):
                assert client.get(urls[path], query_string={name: inside}).status_code != 400, (name, inside)
            for outside in (low - 1, high + 1):
                assert client.get(urls[path], query_string={name: outside}).status_code == 400, (
                    name,
                    outside,
                )
    # Choices: each declared one is taken, one not declared is refused.
    series_path = "/api/runs/{source}/{run_id}/series/{name}"
    for path, name in [("/api/runs", "order"), ("/api/runs", "status"), (series_path, "x")]:
        url = urls[path]
        for choice in _query(doc, path)[name]["schema"]["enum"]:
            assert client.get(url, query_string={name: choice}).status_code in (200, 404), (name, choice)
        assert client.get(url, query_string={name: "nonsense"}).status_code == 400
    # The sorts the runs list names in its description are taken, and its length is bounded.
    sort = _query(doc, "/api/runs")["sort"]
    for choice in ("started", "name", "status", "heartbeat", "duration", "config:lr", "metric:loss:min"):
        assert choice.partition(":")[0] in sort["description"]
        assert client.get("/api/runs", query_string={"sort": choice}).status_code == 200, choice
    assert client.get("/api/runs", query_string={"sort": "nonsense"}).status_code == 400
    assert (
        client.get(
            "/api/runs", query_string={"sort": "config:" + "k" * sort["schema"]["maxLength"]}
        ).status_code
        == 400
    )
    # The pages' bounds: a text series' pages, the runs compared.
    page = f"/runs/local/{stats.run_id}"
    most = _query(doc, "/runs/{source}/{run_id}")["text_page"]["schema"]["maximum"]
    assert client.get(page, query_string={"text_page": most}).status_code == 200
    assert client.get(page, query_string={"text_page": most + 1}).status_code == 400
    compared = _query(doc, "/compare")["run"]["schema"]
    assert compared["minItems"] == 1
    assert client.get("/compare").status_code == 400
    runs = [f"local/{stats.run_id}"] * compared["maxItems"]
    assert client.get("/compare", query_string={"run": runs}).status_code == 200
    assert client.get("/compare", query_string={"run": [*runs, runs[0]]}).status_code == 400
    assert _query(doc, "/")["also"]["schema"]["type"] == "array"
    assert _query(doc, "/runs/{source}/{run_id}")["merge"]["schema"]["type"] == "array"
    # The live poll's limit on its lists is the one it checks.
    live = doc["paths"]["/api/live"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    most = live["properties"]["runs"]["maxItems"]
    assert client.post("/api/live", json={"runs": ["local/x"] * most}).status_code == 200
    assert client.post("/api/live", json={"runs": ["local/x"] * (most + 1)}).status_code == 400
