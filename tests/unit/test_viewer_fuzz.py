"""Fuzz the viewer's JSON API from its own OpenAPI document (schemathesis): whatever the
input, no answer is a server error. Runs against the real redis-server fixture, with real
runs whose ids are offered to the fuzzer as examples."""

import collections
import copy

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

import labstats
from labstats.viewer import create_app
from labstats.viewer.api import OPENAPI
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
    return create_app({"local": Source("local", url, artifact_dir=str(tmp_path / "artifacts"))}), stats.run_id


def test_api_answers_every_input_without_a_server_error(app_and_run):
    app, run_id = app_and_run
    answered = collections.Counter()

    @app.after_request
    def count(response):
        answered[response.status_code // 100] += 1
        return response

    doc = copy.deepcopy(OPENAPI)
    params = doc["components"]["parameters"]
    params["source"]["example"] = "local"
    params["run_id"]["example"] = run_id
    params["name"]["example"] = "loss"
    schema = schemathesis.openapi.from_dict(doc)
    schema.app = app
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(OPENAPI["paths"])
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()
    assert answered[2] > 20  # the fuzzer also reached real runs and series, not only 404s
    assert answered[5] == 0
