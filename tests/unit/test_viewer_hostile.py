"""Every page and API answer survives any record a training user can write. Hostile records
go straight into a real Redis as the training user alice (the role's ACL: her own runs and
indexes, and names), plus the shared (legacy) index entries an old trainer user could write
(through ops), next to runs logged through the normal API (NaN and infinity in a config among
them); then every page and endpoint is walked: no 500, only strict JSON, the good runs still
listed, the bad ones marked."""

import json
import re

import numpy as np
import pytest
from conftest import password

import labstats
from labstats.format import blob, chunk, keys, tensor_file
from labstats.viewer import create_app
from labstats.viewer.sources import Source

K = keys.Keys()


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity, as browsers' JSON.parse does."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def hostile_run(r, run_id: str, fields: dict, started: float = 1.7e9) -> None:
    r.hset(K.run(run_id), mapping=fields)
    r.zadd(K.owner_runs("alice"), {run_id: started})
    r.sadd(K.owner_status("alice", "running"), run_id)
    r.sadd(K.owners, "alice")


@pytest.fixture
def store(acl_server, tmp_path):
    ops = acl_server.client()
    ops.flushall()
    alice_url = acl_server.url_for("alice", password("alice"))
    viewer_url = acl_server.url_for("viewer", password("viewer"))
    # Runs logged through the normal API: one good, one with NaN/inf/huge values in its config.
    with labstats.Stats(tmp_path / "good", name="good-run", url=alice_url) as good:
        for i in range(100):
            good.log(step=i, loss=1.0 / (i + 1), w=np.ones(3) * i)
    config = {"lr": float("nan"), "wd": float("inf"), "neg": float("-inf"), "huge": 10**400, "x": [1e308] * 3}
    with labstats.Stats(tmp_path / "nan", name="nan-config", url=alice_url, config=config) as nan_run:
        nan_run.log(step=0, acc=float("nan"), big=1e308)

    r = acl_server.client("alice", password("alice"))
    hostile_run(
        r, "alice.bad-heartbeat", {"name": "bad-heartbeat", "heartbeat": "soon", "started": "yesterday"}
    )
    hostile_run(r, "alice.bad-utf8", {b"name": b"\xff\xfe name", b"\xc3\x28": b"\xa0\xa1", b"host": b"\x80"})
    hostile_run(
        r,
        "alice.bad-json",
        {"name": "bad-json", "config": "{not json", "tags": "5", "argv": '{"a": 1}', "status": "exploded"},
    )
    hostile_run(
        r, "alice.huge", {"name": "huge", "host": "h" * 1_000_000, "config": json.dumps({"k": "v" * 100_000})}
    )
    hostile_run(
        r, "alice.config-list", {"name": "config-list", "config": "[1, 2]", "tags": '[1, null, {"a": 2}]'}
    )
    hostile_run(
        r,
        "alice.bad-series",
        {"name": "bad-series", "heartbeat": "1e400", "git_root": "/r", "git_commit": "main && rm -rf ~"},
    )
    series = {
        "not-json": b"\xff{",
        "wrong-types": json.dumps({"sid": "x", "kind": 5}),
        "a list": "[1,2]",
        "unknown-kind": json.dumps({"sid": 0, "kind": "Z", "count": 3, "last_chunk": 0}),
        "missing-chunks": json.dumps({"sid": 1, "kind": "f", "count": 10**6, "last_chunk": 500}),
        "torn-object": json.dumps({"sid": 2, "kind": "o", "count": 2, "last_chunk": 0}),
        "lost-blob": json.dumps({"sid": 3, "kind": "o", "count": 1, "last_chunk": 0}),
        "ragged-floats": json.dumps({"sid": 4, "kind": "f", "count": 2, "last_chunk": 0}),
        "lost-tensor-file": json.dumps({"sid": 5, "kind": "o", "count": 1, "last_chunk": 0}),
    }
    r.hset(K.series("alice.bad-series"), mapping=series)
    r.set(K.chunk("alice.bad-series", 0, 0), b"Zgarbage")
    r.set(K.chunk("alice.bad-series", 2, 0), chunk.KIND_OBJECT + chunk.OBJECT_HEADER.pack(0, 999) + b"short")
    ref = blob.REF.pack(blob.TAG, 7, 3, 100)
    r.set(K.chunk("alice.bad-series", 3, 0), chunk.KIND_OBJECT + chunk.OBJECT_HEADER.pack(0, len(ref)) + ref)
    r.set(K.chunk("alice.bad-series", 4, 0), chunk.KIND_FLOAT + b"\x01" * 21)  # not a whole record
    ref = tensor_file.make_ref("0" * 64, 100)  # a tensor file that is in no store
    r.set(K.chunk("alice.bad-series", 5, 0), chunk.KIND_OBJECT + chunk.OBJECT_HEADER.pack(0, len(ref)) + ref)
    r.hsetnx(K.names, "ghost", "alice.no-such-run")  # names are claimed first come (HSETNX only)
    r.hsetnx(K.names, "\u202eevil", "alice.bad-json")
    odd_ids = ["no-hash-at-all", "<script>alert(1)</script>", "../../etc", "..", "x.y"]
    r.zadd(K.owner_runs("alice"), {f"alice.{i}": 1.8e9 for i in odd_ids})
    ops.zadd(K.runs, {i: 1.8e9 for i in odd_ids})  # as the shared index may hold from before
    app = create_app({"local": Source("local", viewer_url)})
    app.testing = False  # errors handled as in production
    return app, good.run_id, nan_run.run_id


def get(client, path):
    answer = client.get(path)
    assert answer.status_code < 500, f"{path}: {answer.status_code} {answer.get_data(as_text=True)[:300]}"
    if answer.mimetype == "application/json":
        strict_json(answer.get_data(as_text=True))
    return answer


def test_every_page_and_endpoint_survives_hostile_records(store):
    app, good_id, nan_id = store
    client = app.test_client()
    listing = get(client, "/api/runs?limit=1000").json["runs"]
    by_id = {r["id"]: r for r in listing}
    hostile = {f"alice.{i}" for i in ("bad-heartbeat", "bad-utf8", "bad-json", "huge", "bad-series")}
    assert {good_id, nan_id, *hostile} <= set(by_id)
    assert by_id[good_id]["malformed"] == []
    assert by_id[nan_id]["config"]["lr"] is None  # NaN sent as null
    assert by_id[nan_id]["config"]["wd"] is None
    assert "heartbeat" in by_id["alice.bad-heartbeat"]["malformed"]
    assert {"config", "tags", "argv", "status"} <= set(by_id["alice.bad-json"]["malformed"])
    assert by_id["alice.bad-json"]["status"] == "crashed"
    assert by_id["alice.bad-utf8"]["malformed"]
    queries = ["", "?sort=name", "?sort=heartbeat", "?sort=status", "?status=crashed", "?status=running",
               "?q=bad", "?q=%ff", "?tag=5", "?_method=POST&_external=1&_scheme=javascript"]  # fmt: skip
    for query in queries:
        page = get(client, f"/{query}")
        assert page.status_code == 200
        get(client, f"/api/runs{query}")
    html = get(client, "/").get_data(as_text=True)
    assert "good-run" in html
    assert "malformed" in html
    links = sorted(set(re.findall(r'href="(/runs/[^"]+)"', html)))
    assert len(links) >= 7
    refs, urls = [], []
    for link in links:
        run_page = get(client, link)
        _, _, source, run_id = link.split("/", 3)
        run = get(client, f"/api/runs/{source}/{run_id}")
        if run.status_code != 200:
            continue
        refs.append(f"{source}/{run_id}")
        assert run_page.status_code == 200
        get(client, f"/api/runs/{source}/{run_id}/diff")
        for name in run.json["series"]:
            quoted = "/".join(__import__("urllib.parse").parse.quote(p, safe="") for p in name.split("/"))
            for kind in ("series", "csv", "tensor"):
                get(client, f"/api/runs/{source}/{run_id}/{kind}/{quoted}")
            get(client, f"/api/runs/{source}/{run_id}/series/{quoted}?start=0&stop=10")
            urls.append(f"/api/runs/{source}/{run_id}/series/{quoted}?columns=1")
    assert "bad-series" in "".join(refs)
    lost = get(client, "/api/runs/local/alice.bad-series/series/lost-tensor-file").get_data(as_text=True)
    assert "not in the artifact store" in lost  # said, not a 500 or a silent gap
    compare = "&".join(f"run={ref}" for ref in refs[:20])
    assert get(client, f"/compare?{compare}").status_code == 200
    live = client.post("/api/live", json={"runs": [*refs, "nope/x", 5], "series": [*urls, "/etc/passwd", 7]})
    assert live.status_code == 200
    body = strict_json(live.get_data(as_text=True))
    assert len(body["series"]) == len(urls) + 2
    assert get(client, "/api/health").status_code == 200


def test_the_recipe_of_a_hostile_record_is_inert(store):
    app, _, _ = store
    recipe = app.test_client().get("/api/runs/local/alice.bad-series").json["regenerate"]
    assert "'main && rm -rf ~'" in recipe  # quoted: checked out as a name, or said not to be a commit
    assert "main && rm -rf ~\n" not in recipe.replace("'main && rm -rf ~'", "")
