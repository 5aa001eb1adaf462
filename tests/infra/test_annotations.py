"""Annotations on the real lab: the viewer on the web box writes them to the run's master on
the training box over the tunnel (as the annotator Redis user), replication brings them back
to the web box's replica, and the training box's CLI reads them; the annotator can do nothing
else there."""

import json

from conftest import box, https_request, log_run_on_trainbox, redis_cli, wait_until, web_token

testinfra_hosts = ["trainbox"]


def patch(run_id: str, body: dict):
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    return https_request(f"/api/runs/trainbox/{run_id}/annotations", "PATCH", web_token(), headers, data)


def test_the_viewer_annotates_a_run_on_its_master_and_every_reader_sees_it(host):
    _, run_id = log_run_on_trainbox("annotate-check", steps=20)
    status, _, body = patch(run_id, {"name": "best so far", "tags_add": ["lab"], "project": "infra"})
    assert status == 200, body
    # On the master, written by the annotator over the tunnel, audited in its own stream.
    fields = redis_cli(host, "ops", "hgetall", f"ls:ann:{run_id}").stdout.split()
    assert "best so far" in " ".join(fields)
    assert redis_cli(host, "ops", "xlen", "ls:audit:annotator").stdout.strip() != "0"
    # Back on the web box's replica, and in the training box's CLI, within a second.
    web = box("webbox")
    key = f"ls:ann:{run_id}"
    assert wait_until(lambda: "infra" in redis_cli(web, "viewer", "hget", key, "project").stdout, 5)
    with host.sudo("researcher"):
        shown = host.check_output("/opt/labstats/venv/bin/labstats show %s", run_id)
    assert "best so far" in shown
    # The trash hides it from the API's list; restore brings it back.
    status, _, _ = https_request(f"/api/runs/trainbox/{run_id}/trash", "POST", web_token())
    assert status == 200
    assert wait_until(lambda: run_id not in json.dumps(listed()), 5)
    status, _, _ = https_request(f"/api/runs/trainbox/{run_id}/restore", "POST", web_token())
    assert status == 200
    assert wait_until(lambda: run_id in json.dumps(listed()), 5)


def listed() -> dict:
    status, _, body = https_request("/api/runs?limit=200", token=web_token())
    assert status == 200
    return json.loads(body)


def test_the_annotator_can_touch_nothing_but_annotations_on_the_master(host):
    _, run_id = log_run_on_trainbox("annotator-bounds", steps=5)
    web = box("webbox")
    with web.sudo():
        config = web.check_output("cat /etc/labstats/viewer.toml")
    url = next(line.split('"')[1] for line in config.splitlines() if line.startswith("annotate_url"))
    tries = {
        "delete the run": ["DEL", f"ls:run:{run_id}"],
        "rewrite its record": ["HSET", f"ls:run:{run_id}", "status", "finished"],
        "cut its own audit": ["XTRIM", "ls:audit:annotator", "MAXLEN", "0"],
        "write another's audit": ["XADD", "ls:audit:researcher", "*", "who", "forged"],
    }
    for what, command in tries.items():
        with web.sudo():
            answer = web.run("redis-cli -u %s --no-auth-warning" + " %s" * len(command), url, *command)
        assert "NOPERM" in answer.stdout + answer.stderr, what
    assert redis_cli(host, "ops", "exists", f"ls:run:{run_id}").stdout.strip() == "1"
