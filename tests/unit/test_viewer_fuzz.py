"""Fuzz the viewer's API and pages from its own OpenAPI document (schemathesis): whatever
the input, no answer is a server error. Runs against the real redis-server fixture; half the
cases name a real run (and names it has), so parameters are fuzzed against real data, not
only 404s. The document is generated from the endpoints' declarations (test_viewer_openapi.py
checks it lists every route but static files and the login form), so every route is fuzzed."""

import collections
import re

import numpy as np
import pytest
import schemathesis
from flask import request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

import labstats
from labstats.viewer import create_app
from labstats.viewer.openapi import NOT_DOCUMENTED, document
from labstats.viewer.sources import Source


@pytest.fixture
def app_and_run(url, tmp_path, monkeypatch):
    monkeypatch.setenv("LABSTATS_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    with labstats.Stats(tmp_path / "fuzz", name="fuzz <b>run</b>") as stats:
        for i in range(3000):
            stats.log(step=i, loss=float(np.cos(i / 50)), text=f"t{i}" if i % 100 == 0 else None)
        stats.log(step=5, weights=np.arange(12, dtype=np.float32).reshape(3, 4), odd=float("nan"))
        for step in (0, 5, 10):  # media under the example name too: the media endpoints find it
            stats.image("loss", np.full((6, 6, 3), step * 20, np.uint8), step=step)
        stats.fits("sky", np.arange(64, dtype=np.float32).reshape(8, 8), step=5)
        stats.points("cloud", np.arange(30, dtype=np.float32).reshape(10, 3), step=5)
    # annotate_url: the annotation routes change the run too (without one they refuse, 409).
    source = Source("local", url, artifact_dir=str(tmp_path / "artifacts"), annotate_url=url)
    return create_app({"local": source}), stats.run_id


# Routes of compared runs (?run=source/id...): fuzzed with the real run too.
COMPARING = ("pages.compare", "pages.compare_charts", "exports.compare_file", "media.compare_media",
             "share.create")  # fmt: skip
# Routes that move the run into the trash or out of it.
TRASHING = ("annotate.api_trash", "annotate.page_trash", "annotate.api_restore", "annotate.page_restore")
# Routes whose answer to input they take is a redirect (POST, then GET the result).
REDIRECTS = {"pages.save_view", "pages.open_view", "annotate.page_change", "annotate.page_trash",
             "annotate.page_restore", "share.revoke", "reports.create", "reports.save"}  # fmt: skip
# The name each route is fuzzed with on the real run besides "loss" (a series and an image).
REAL_NAMES = {"api.tensor": "weights", "media.fits_preview": "sky", "media.fits_header": "sky",
              "media.points": "cloud"}  # fmt: skip


def test_api_answers_every_input_without_a_server_error(app_and_run):
    app, run_id = app_and_run
    answered = collections.Counter()  # (endpoint, status // 100): how often
    windows = collections.Counter()  # live's series answers: read or refused

    @app.after_request
    def count(response):
        answered[request.endpoint, response.status_code // 100] += 1
        if request.endpoint == "api.live" and response.status_code == 200:
            for window in response.get_json()["series"]:
                windows["error" if "error" in window else "read"] += 1
        return response

    doc = document(app)
    schema = schemathesis.openapi.from_dict(doc)
    schema.app = app
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = [rule for rule in app.url_map.iter_rules() if rule.endpoint not in NOT_DOCUMENTED]
    routes = [(rule, method) for rule in documented for method in rule.methods - {"HEAD", "OPTIONS"}]
    assert len(operations) == len(routes) == 58  # test_viewer_openapi.py says which
    # A saved view named like the example name: opening it is fuzzed against a real view too.
    assert app.test_client().post("/views", data={"name": "loss", "query": "sort=name"}).status_code == 303
    # Read-only links: one to open (a real token) and another for the revoke to be fuzzed with.
    made = app.test_client().post("/share", data={"run": f"local/{run_id}"})
    token = re.search(r"/s/([A-Za-z0-9_-]{43})", made.text)[1]
    app.test_client().post("/share", data={"run": f"local/{run_id}"})
    link_id = app.extensions["labstats_share"].links()[0].id
    # A report to open, edit and export (test_viewer_reports_fuzz.py fuzzes its panels harder).
    made = app.test_client().post("/reports", data={"title": "fuzzed", "body": "# fuzzed"})
    report_id = made.headers["Location"].rsplit("/", 1)[1]
    for operation in operations:
        endpoint = doc["paths"][operation.path][operation.method.lower()]["operationId"]
        # Half the cases fuzz everything; half name the real run (and a name it has), so the
        # query parameters and the live body are fuzzed against real data too, not only 404s.
        real = {"source": "local", "run_id": run_id, "name": REAL_NAMES.get(endpoint, "loss"),
                "token": token, "link_id": link_id, "report_id": report_id, "fmt": "svg"}  # fmt: skip
        real = {key: value for key, value in real.items() if f"{{{key}}}" in operation.path}
        on_the_run = operation.as_strategy(path_parameters=real)
        if endpoint in COMPARING:
            on_the_run = operation.as_strategy(query={"run": [f"local/{run_id}"]})
        if endpoint == "figures.figure":
            on_the_run = operation.as_strategy(path_parameters=real, query={"series": "loss"})
        if endpoint in ("reports.create", "reports.save"):  # a title it takes, the rest fuzzed
            on_the_run = operation.as_strategy(path_parameters=real, query={"title": "a title"})
        if endpoint == "api.live":
            on_the_run = operation.as_strategy(body={
                "runs": [f"local/{run_id}", "local/none"],
                "series": [f"/api/runs/local/{run_id}/series/loss?max_points=100&x=time", "/api/health"],
                "watch": [{"run": f"local/{run_id}", "series": 0, "counts": {"loss": 1}, "texts": {"text": 1},
                           "media": ""}, {"run": "local/none"}, "junk"],
            })  # fmt: skip

        # A link shows no run in the trash (the trash routes before it may have put it there).
        if endpoint == "share.open":
            assert app.test_client().post(f"/api/runs/local/{run_id}/restore").status_code in (200, 409)
        # The run as the trash and restore routes can take it (the fuzzed changes may have
        # protected it, trashed or restored it): unprotected, then out of the trash or in it.
        if endpoint in TRASHING:
            client = app.test_client()
            assert (
                client.patch(f"/api/runs/local/{run_id}/annotations", json={"protected": False}).status_code
                == 200
            )
            wanted = "trash" if endpoint.endswith("restore") else "restore"
            assert client.post(f"/api/runs/local/{run_id}/{wanted}").status_code in (
                200,
                409,
            )  # 409: it is so

        @given(case=st.one_of(operation.as_strategy(), on_the_run))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()
    assert not [key for key in answered if key[1] == 5]
    # Every route was called, and each also with input it took (a 2xx, or the redirect of a
    # saved view's routes), the live poll included.
    assert {rule.endpoint for rule, _ in routes} <= {endpoint for endpoint, _ in answered}
    took = {endpoint for endpoint, kind in answered if kind == 2 or (kind == 3 and endpoint in REDIRECTS)}
    assert not [rule.endpoint for rule, _ in routes if rule.endpoint not in took]
    assert windows["read"] > 0
