"""The Boxes page against a training user's hostile run records: any training user may mark
thousands of its own runs running with fresh heartbeats. The page (polled every 5 s by each
open one) reads a bounded number of them and still lists the other users' runs. Real
redis-server, real app."""

from __future__ import annotations

import time

from labstats.format.keys import Keys
from labstats.viewer import boxes, create_app
from labstats.viewer.sources import Source

K = Keys()


def plant_running(pipe, run_id: str) -> None:
    owner, now = run_id.split(".")[0], time.time()
    pipe.hset(K.run(run_id), mapping={"name": run_id, "status": "running", "started": f"{now:.3f}",
                                      "heartbeat": f"{now:.3f}", "last_call": f"{now:.3f}"})  # fmt: skip
    pipe.sadd(K.owners, owner)
    pipe.zadd(K.owner_runs(owner), {run_id: now})
    pipe.sadd(K.owner_status(owner, "running"), run_id)


def test_thousands_of_forged_running_runs_are_read_within_a_bound_and_crowd_out_no_one(url, redis_server):
    pipe = redis_server.client().pipeline(transaction=False)
    plant_running(pipe, "alice.20261205-090000-aaaaaa")  # older than every forged one
    for n in range(5000):
        plant_running(pipe, f"mallory.20261205-{n:06d}-ffffff")
    pipe.execute()
    app = create_app({"local": Source("local", url)})
    with app.test_request_context("/boxes"):
        started = time.perf_counter()
        (box,) = boxes.read_boxes()
        took = time.perf_counter() - started
    ids = [run["id"] for run in box["runs"]]
    assert "alice.20261205-090000-aaaaaa" in ids
    assert len(ids) <= boxes.MAX_RUNS
    assert sum(i.startswith("mallory.") for i in ids) == boxes.MAX_RUNS_PER_OWNER
    assert took < 1.0, f"{took:.2f} s for one poll"  # 20 ms here; 2 s read whole
