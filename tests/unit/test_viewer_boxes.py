"""The Boxes page (labstats.viewer.boxes) over the real redis-server: the box agent's keys
written as the agent writes them (the contract's ls:box:<source> hash and its history stream),
read by the viewer as its Redis user does (the role's ACL), shown with each GPU's run and
user; hostile state (markup, megabyte strings, wrong types, non-JSON) bounded and escaped;
a box without agent data and a box whose Redis is down each said, never a 500."""

import json
import re
import time

import pytest
from conftest import password

import labstats
from labstats.format.keys import Keys
from labstats.viewer import boxes, create_app
from labstats.viewer.sources import Source

KEYS = Keys("ls")
GIB = 2**30


def agent_state(runs=(), **changes) -> dict:
    """A state as the box agent writes it (the contract's fields and types)."""
    state = {
        "cpu_percent": 37.5,
        "cpu_count": 32,
        "memory_used_bytes": 100 * GIB,
        "memory_total_bytes": 256 * GIB,
        "memory_available_bytes": 150 * GIB,
        "disks": [{"path": "/var/lib/labstats/spool", "free_bytes": 400 * GIB, "total_bytes": 1000 * GIB}],
        "gpu_status": "2 GPU(s) through NVML, driver 550.54.15",
        "gpus": [
            {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaa", "util_percent": 97.0,
             "memory_used_bytes": 70 * GIB, "memory_total_bytes": 80 * GIB, "power_watts": 612.5,
             "temperature_celsius": 71.0,
             "processes": [{"pid": 4242, "user": "alice", "run": runs[0] if runs else None}]},
            {"index": 1, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-bbbb", "util_percent": 0.0,
             "memory_used_bytes": 1 * GIB, "memory_total_bytes": 80 * GIB, "power_watts": 70.0,
             "temperature_celsius": 35.0, "processes": []},
        ],
        "runs": list(runs),
    }  # fmt: skip
    state.update(changes)
    return state


def write_box(
    client, source: str, state, *, at: float | None = None, raw_state: bytes | None = None, **fields
):
    """HSET the box's hash as the agent does (all fields strings)."""
    mapping = {
        "at": repr(time.time() if at is None else at),
        "interval": "10",
        "host": f"{source}.lab",
        "agent_version": labstats.__version__,
        "state": raw_state if raw_state is not None else json.dumps(state),
        **fields,
    }
    client.hset(KEYS.box(source), mapping=mapping)


def write_history(client, source: str, samples: int = 30):
    for k in range(samples):
        client.xadd(KEYS.box_history(source), {
            "cpu_percent": 10 + k, "memory_used_bytes": (50 + k) * GIB,
            "gpu0_util_percent": 90.0, "gpu0_memory_used_bytes": 70 * GIB, "gpu1_util_percent": k,
            "disk0_free_bytes": 400 * GIB,
        }, maxlen=8640, approximate=True)  # fmt: skip


def client_of(app):
    app.testing = True
    return app.test_client()


def card(html: str, source: str) -> str:
    """The card of one box in the page."""
    start = html.index(f'<article class="box" data-source="{source}"')
    end = html.find("<article", start + 10)
    return html[start : end if end > 0 else None]


@pytest.fixture
def app(url):
    return create_app({"local": Source("local", url)})


def test_the_page_shows_each_gpu_with_its_run_and_user(app, url, lab, tmp_path):
    with labstats.Stats(tmp_path / "run", name="big-train", system_metrics=False) as stats:
        stats.log(step=0, loss=1.0)
        stats.flush()
        write_box(lab.redis, "local", agent_state(runs=[stats.run_id]))
        write_history(lab.redis, "local")
        html = client_of(app).get("/boxes").get_data(as_text=True)
        answer = client_of(app).get("/boxes/state").get_json()
    box = card(html, "local")
    assert 'data-state="agent"' in box
    gpu0 = re.search(r'<tr class="gpu" data-index="0">.*?</tr>', box, re.S).group(0)
    # The run on it by its name (the box's reader lists it), linked to its page.
    link = f'href="/runs/local/{stats.run_id}" title="{stats.run_id}">big-train</a>'
    assert f'{link} <span class="user">alice</span>' in gpu0
    assert "97 %" in gpu0
    assert "70.0 GiB of 80.0 GiB" in gpu0
    assert "71 °C" in gpu0
    assert "612 W" in gpu0
    gpu1 = re.search(r'<tr class="gpu" data-index="1">.*?</tr>', box, re.S).group(0)
    assert "free" in gpu1
    assert "37.5 % of 32 cores" in box
    assert "100.0 GiB of 256.0 GiB" in box
    assert "/var/lib/labstats/spool" in box
    assert "600.0 GiB of 1000.0 GiB (60 %)" in box
    assert "2 GPU(s) through NVML" in box
    # The running run, from the box's reader, with a link to its page.
    assert re.search(rf'<a href="/runs/local/{stats.run_id}">big-train</a> <span class="badge running">', box)
    # Link: this store is a master (no replica here); last seen a moment ago.
    assert "this is the box&#39;s own Redis" in box
    assert re.search(r'last seen <span class="age">\d s ago</span>', box)
    # Sparklines from the history: CPU, memory and each GPU.
    assert box.count('<svg class="spark"') == 4
    (state,) = answer["boxes"]
    assert sorted(state["history"]) == ["cpu", "gpu0", "gpu1", "memory"]
    assert state["history"]["cpu"]["last"] == 39.0
    assert state["agent"]["gpus"][0]["processes"][0] == {
        "pid": 4242, "user": "alice", "run": stats.run_id, "url": f"/runs/local/{stats.run_id}",
        "run_name": "big-train"}  # fmt: skip
    assert card(answer["html"], "local").count('<tr class="gpu"') == 2


def test_the_viewer_reads_the_box_through_its_own_redis_user(acl_server):
    """The role's ACL lets the viewer's user read all of it (HSTRLEN, XLEN, XREVRANGE, ROLE)."""
    ops = acl_server.client()
    ops.flushall()
    write_box(ops, "gpu1", agent_state())
    write_history(ops, "gpu1", samples=5)
    viewer = acl_server.url_for("viewer", password("viewer"))
    html = client_of(create_app({"gpu1": Source("gpu1", viewer)})).get("/boxes").get_data(as_text=True)
    box = card(html, "gpu1")
    assert 'data-state="agent"' in box
    assert "answered with an error" not in box
    assert box.count('<tr class="gpu"') == 2
    assert box.count('<svg class="spark"') == 4
    assert "this is the box&#39;s own Redis" in box  # ROLE answered


HOSTILE = [
    pytest.param(None, b"{not json", "its state is not JSON", id="not-json"),
    pytest.param(None, b"[1, 2, 3]", "its state is not a JSON object", id="not-an-object"),
    pytest.param(None, b"\xff\xfe garbage", "its state is not JSON", id="not-utf8"),
    pytest.param(
        None, b"x" * (boxes.FIELD_BYTES["state"] + 1), "left out as too large: state", id="1-MB-ish"
    ),
]


@pytest.mark.parametrize(("state", "raw", "said"), HOSTILE)
def test_a_state_that_cannot_be_read_is_said(app, lab, state, raw, said):
    write_box(lab.redis, "local", state, raw_state=raw)
    response = client_of(app).get("/boxes")
    assert response.status_code == 200
    assert said in card(response.get_data(as_text=True), "local")
    assert client_of(app).get("/boxes/state").status_code == 200


def test_hostile_state_is_bounded_and_escaped(app, lab):
    markup = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    long = "A" * 60_000  # within the state's bound, far over a text's
    small_gpu = {"index": "zero", "name": markup, "util_percent": 1e400, "memory_used_bytes": -5,
                 "memory_total_bytes": 0, "power_watts": "hot", "temperature_celsius": None,
                 "processes": [{"pid": "x", "user": markup, "run": "<b>r</b>"}, None, "p"] * 11}  # fmt: skip
    state = agent_state(
        cpu_percent="100",  # a string where a number belongs
        cpu_count=True,  # a bool where an int belongs
        memory_available_bytes=float("nan"),
        memory_used_bytes=[1, 2],
        memory_total_bytes={"a": 1},
        disks=[{"path": markup, "free_bytes": "many", "total_bytes": None}, "a string", 7] * 10,
        gpu_status=markup + "B" * 1000,
        gpus=[{**small_gpu, "name": markup + long}, None, 5, "gpu", *[small_gpu] * 70],
        runs=[markup, 5, None],
    )
    assert len(json.dumps(state)) < boxes.FIELD_BYTES["state"]
    write_box(lab.redis, "local", state, host=markup + "A" * 1_000_000, agent_version=markup, at="soon",
              interval="NaN")  # fmt: skip
    lab.redis.xadd(KEYS.box_history("local"), {"cpu_percent": "hot", "gpu0_util_percent": "1e999",
                                               "<b>": "1", "gpu99999_util_percent": "5"})  # fmt: skip
    response = client_of(app).get("/boxes")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "A" * boxes.MAX_TEXT not in html
    box = card(html, "local")
    assert "left out as too large: host" in box
    assert box.count('<tr class="gpu"') == boxes.MAX_GPUS - 3  # None, 5 and "gpu" are no GPUs
    # Of each GPU's processes, the first MAX_PROCESSES entries: 11 of them are objects.
    assert box.count('class="process"') == (boxes.MAX_GPUS - 3) * 11
    assert "&lt;b&gt;r&lt;/b&gt;" in box
    assert "B" * 500 not in box
    assert 'last seen <span class="age">never</span>' in box
    answer = client_of(app).get("/boxes/state")
    assert answer.status_code == 200
    found = answer.get_json()["boxes"][0]
    assert found["agent"]["cpu_percent"] is None
    assert found["agent"]["cpu_count"] is None
    assert found["agent"]["memory_text"] == ""
    gpu = found["agent"]["gpus"][0]
    assert gpu["index"] is None
    assert gpu["util_percent"] is None
    assert gpu["memory_percent"] is None
    assert found["history"] == {}  # nothing in it was a percentage to draw


def test_whole_floats_are_counts_and_the_agents_host_status_is_shown(app, lab):
    state = agent_state(memory_used_bytes=1.0 * 100 * GIB, memory_total_bytes=256.5, cpu_count=3.0,
                        host_status="CPU and memory metrics stopped (psutil <b>broke</b>)")  # fmt: skip
    write_box(lab.redis, "local", state)
    found = client_of(app).get("/boxes/state").get_json()["boxes"][0]["agent"]
    assert found["memory_used_bytes"] == 100 * GIB
    assert found["memory_total_bytes"] is None  # not a whole number of bytes
    assert found["cpu_count"] == 3
    box = card(client_of(app).get("/boxes").get_data(as_text=True), "local")
    assert "psutil &lt;b&gt;broke&lt;/b&gt;" in box


def test_a_box_without_agent_data_says_so(app, lab, tmp_path):
    with labstats.Stats(tmp_path / "run", name="older-box", system_metrics=False) as stats:
        stats.log(step=0, loss=1.0)
        stats.flush()
        html = client_of(app).get("/boxes").get_data(as_text=True)
    box = card(html, "local")
    assert 'data-state="no-agent"' in box
    assert boxes.NO_AGENT in box
    assert "older-box" in box  # its running runs still listed


def test_a_box_whose_redis_is_down_is_said_and_the_others_still_show(url, lab, own_redis):
    write_box(lab.redis, "local", agent_state())
    app = create_app({"local": Source("local", url), "gpu9": Source("gpu9", own_redis.url)})
    own_redis.stop()
    for path in ("/boxes", "/boxes/state"):
        response = client_of(app).get(path)
        assert response.status_code == 200
    html = client_of(app).get("/boxes").get_data(as_text=True)
    down = card(html, "gpu9")
    assert 'data-state="down"' in down
    assert "source gpu9 cannot be read right now" in down
    assert 'data-state="agent"' in card(html, "local")
    answer = client_of(app).get("/boxes/state").get_json()
    assert [b["reachable"] for b in answer["boxes"]] == [False, True]  # gpu9, local (by name)


def test_the_link_of_a_replica_is_its_role(tmp_path, url, lab):
    """A replica of the test's store, as on the web box: its link is up; then its master
    goes away and the link says down."""
    from conftest import RedisServer, wait_for

    master_port = int(url.rsplit(":", 1)[1].split("/")[0])
    replica = RedisServer(
        tmp_path / "replica", extra_args=("--replicaof", "127.0.0.1", str(master_port))
    ).start()
    try:
        write_box(lab.redis, "gpu1", agent_state())
        app = create_app({"gpu1": Source("gpu1", replica.url)})
        assert wait_for(lambda: replica.client().exists(KEYS.box("gpu1")))
        assert wait_for(
            lambda: client_of(app).get("/boxes/state").get_json()["boxes"][0]["link"]["up"] is True
        )
        box = card(client_of(app).get("/boxes").get_data(as_text=True), "gpu1")
        assert '<span class="link up"' in box
        assert "link: connected" in box
        replica.client().execute_command("REPLICAOF", "127.0.0.1", "1")  # a master that is not there
        assert wait_for(
            lambda: client_of(app).get("/boxes/state").get_json()["boxes"][0]["link"]["up"] is False
        )
        box = card(client_of(app).get("/boxes").get_data(as_text=True), "gpu1")
        assert '<span class="link down"' in box
        assert "link: down (" in box
    finally:  # a replica looking for its master can take more than stop()'s 10 s to end
        replica.proc.kill()
        replica.proc.wait(10)
