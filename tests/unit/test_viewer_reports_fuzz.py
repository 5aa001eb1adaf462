"""Fuzz the report routes from the viewer's own OpenAPI document (schemathesis), as
test_viewer_fuzz.py does for every route, but with a real report to open, edit and export
(random ids only reach its 404): whatever the input, no answer is a server error, and each
route takes some input (a page, a file, or the redirect of a save)."""

import collections

import numpy as np
import schemathesis
from flask import request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

import labstats
from labstats.viewer import create_app
from labstats.viewer.openapi import document
from labstats.viewer.sources import Source


def test_the_report_routes_answer_every_input_without_a_server_error(url, tmp_path):
    with labstats.Stats(tmp_path / "fuzz", name="fuzz") as stats:
        for i in range(200):
            stats.log(step=i, loss=float(np.cos(i / 50)))
        stats.image("samples", np.full((6, 6, 3), 9, np.uint8), step=3)
    app = create_app({"local": Source("local", url)})
    body = (f"```labstats\nchart run=local/{stats.run_id} series=loss\nmedia run=local/{stats.run_id} "
            "name=samples\ntable\nhparams\ncompare metric=loss\n```\n")  # fmt: skip
    answered = collections.Counter()

    @app.after_request
    def count(response):
        answered[request.endpoint, response.status_code // 100] += 1
        return response

    answer = app.test_client().post("/reports", data={"title": "fuzzed", "body": body})
    report_id = answer.headers["Location"].rsplit("/", 1)[1]
    doc = document(app)
    schema = schemathesis.openapi.from_dict(doc)
    schema.app = app
    operations = [result.ok() for result in schema.get_all_operations()]
    ours = [
        op
        for op in operations
        if doc["paths"][op.path][op.method.lower()]["operationId"].startswith("reports.")
    ]
    assert len(ours) == 7
    for operation in ours:
        real = {"report_id": report_id} if "{report_id}" in operation.path else {}
        on_the_report = operation.as_strategy(path_parameters=real)
        if operation.method.upper() == "POST":  # a title it takes, the rest fuzzed
            on_the_report = operation.as_strategy(path_parameters=real, query={"title": "a title"})

        @given(case=st.one_of(operation.as_strategy(), on_the_report))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()
    assert not [key for key in answered if key[1] == 5]
    took = {endpoint for endpoint, kind in answered if kind in (2, 3)}
    assert {f"reports.{name}" for name in ("list_page", "new_page", "create", "report_page", "edit_page",
                                           "save", "export_file")} <= took  # fmt: skip
