"""Stats against a real redis-server: values, runs, names, statuses."""

import json
import re
import time

import numpy as np
import pytest
import torch

import labstats
from labstats.format import keys


def read_all(lab, run_name, series):
    return lab.run(run_name).series(series)


@pytest.mark.parametrize(
    ("value", "expected_kind"),
    [
        (3.25, "f"),
        (-7, "i"),
        (2**70, "o"),
        (True, "b"),
        ("héllo <b>", "o"),
        (None, "o"),
        ({"a": [1, 2.5, {"b": None}], "c": (1, "x")}, "o"),
        (np.float32(1.5), "f"),
        (np.int16(-3), "i"),
        (np.bool_(False), "b"),
    ],
)
def test_each_value_type_round_trips(tmp_path, lab, value, expected_kind):
    with labstats.Stats(tmp_path / "run") as stats:
        stats.log(step=5, v=value)
    series = read_all(lab, "run", "v")
    assert series.kind == expected_kind
    assert list(series.idx) == [5]
    got = series.values[0]
    got = got.item() if isinstance(got, np.generic) else got
    assert got == value
    assert type(got) is type(value.item() if isinstance(value, np.generic) else value)


def test_arrays_and_tensors_keep_dtype_shape_and_bytes(tmp_path, lab):
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    ten = torch.arange(6, dtype=torch.float64).reshape(2, 3).requires_grad_()
    big = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    with labstats.Stats(tmp_path / "run") as stats:
        stats.log(step=1, arr=arr, ten=ten, big=big, int_tensor=torch.tensor([1, 2], dtype=torch.int32))
        arr += 100  # changing the array after logging must not change what was logged
    run = lab.run("run")
    got = run.series("arr").values[0]
    assert got.dtype == np.float32
    assert got.shape == (2, 3, 4)
    assert (got == np.arange(24).reshape(2, 3, 4)).all()
    got = run.series("ten").values[0]
    assert got.dtype == np.float64
    assert (got == ten.detach().numpy()).all()
    assert (run.series("big").values[0] == big).all()
    assert run.series("int_tensor").values[0].dtype == np.int32


def test_zero_dim_tensors_and_arrays_are_scalars(tmp_path, lab):
    with labstats.Stats(tmp_path / "run") as stats:
        stats.log(step=0, loss=torch.tensor(0.5, requires_grad=True) * 2, n=np.array(3))
    run = lab.run("run")
    assert run.series("loss").values.tolist() == [1.0]
    assert run.series("n").kind == "i"


def test_update_records_watched_objects_at_the_original_idx(tmp_path, lab):
    weights = np.zeros(3)
    state = {"loss": 0.0}
    with labstats.Stats(tmp_path / "run") as stats:
        stats.watch(weights, "weights")
        stats.watch(lambda: state["loss"], "loss")
        for epoch in range(2):
            for step in range(3):
                weights += 1
                state["loss"] = epoch * 10 + step
                stats.update(epoch, 100, 8, step)
    run = lab.run("run")
    loss = run.series("loss")
    assert loss.idx.tolist() == [0, 8, 16, 100, 108, 116]
    assert loss.values.tolist() == [0, 1, 2, 10, 11, 12]
    assert run.series("weights").values[-1].tolist() == [6, 6, 6]
    assert run.series("_epoch").values.tolist() == [0, 1]


def test_log_without_step_counts_on(tmp_path, lab):
    with labstats.Stats(tmp_path / "run") as stats:
        stats.log(a=1)
        stats.log(a=2)
        stats.log(step=10, a=3)
        stats.log(a=4)
        stats.add_scalar("b", 0.5, global_step=3)
    assert lab.run("run").series("a").idx.tolist() == [0, 1, 10, 11]
    assert lab.run("run").series("b").idx.tolist() == [3]


def test_a_series_can_change_kind(tmp_path, lab):
    with labstats.Stats(tmp_path / "run") as stats:
        stats.log(step=0, x=1.5)
        stats.log(step=1, x="nan (diverged)")
        stats.log(step=2, x=2.5)
    assert lab.run("run").series("x").values == [1.5, "nan (diverged)", 2.5]


def test_bad_values_and_steps_raise_clear_errors(tmp_path, url):
    with labstats.Stats(tmp_path / "run") as stats:
        with pytest.raises(TypeError, match=r"series 'x'.*object"):
            stats.log(step=0, x=object())
        with pytest.raises(TypeError, match="step must be an integer"):
            stats.log(step=1.5, x=1)
        with pytest.raises(ValueError, match="invalid series name"):
            stats.watch(1, "")


def test_a_taken_name_gets_a_suffix_and_nothing_is_merged(tmp_path, lab):
    names = []
    for value in (1, 2, 3):
        with labstats.Stats(tmp_path / "exp42") as stats:
            names.append(stats.name)  # final as soon as the constructor returns
            stats.log(step=0, v=value)
        assert stats.name == names[-1]
    assert names == ["exp42", "exp42.2", "exp42.3"]
    assert [lab.run(n).series("v").values.tolist() for n in names] == [[1], [2], [3]]
    assert len({lab.run(n).id for n in names}) == 3


def test_a_taken_name_is_refused_when_asked(tmp_path, url):
    labstats.Stats(tmp_path / "exp42").close()
    with pytest.raises(labstats.LabstatsError, match="exists already"):
        labstats.Stats(tmp_path / "exp42", on_conflict="error")


def test_metadata_regenerates_the_run(tmp_path, lab):
    with labstats.Stats(tmp_path / "run", config={"lr": 0.01, "layers": [64, 64]}, seed=7, tags=["a", "b"]):
        pass
    run = lab.run("run")
    assert run.config == {"lr": 0.01, "layers": [64, 64]}
    assert run.meta["seed"] == "7"
    assert run.tags == ["a", "b"]
    assert run.status == "finished"
    assert float(run.meta["ended"]) >= float(run.meta["started"])
    assert run.meta["argv"]
    assert run.meta["python"]
    assert run.meta["host"]
    assert "numpy" in run.meta["packages"]
    assert run.meta["git_commit"]  # the tests run inside the labstats repository
    assert run.meta["argv"][-1] in run.regenerate_command()


def test_an_exception_marks_the_run_crashed(tmp_path, lab):
    def train():
        with labstats.Stats(tmp_path / "run") as stats:
            stats.log(step=0, v=1)
            raise RuntimeError("diverged")

    with pytest.raises(RuntimeError):
        train()
    run = lab.run("run")
    assert run.status == "crashed"
    assert run.meta["reason"] == "RuntimeError: diverged"
    assert run.series("v").values.tolist() == [1]


def test_runs_are_listed_and_filtered(tmp_path, lab):
    for name, lr, tags in (("a-1", 0.1, ["x"]), ("a-2", 0.01, ["x", "y"]), ("b-1", 0.001, [])):
        labstats.Stats(tmp_path / name, config={"lr": lr}, tags=tags).close()
    running = labstats.Stats(tmp_path / "live", config={"lr": 0.5})
    try:
        running.flush()
        assert [r.name for r in lab.runs()] == ["live", "b-1", "a-2", "a-1"]
        assert [r.name for r in lab.runs(limit=2, offset=1)] == ["b-1", "a-2"]
        assert {r.name for r in lab.runs(name="A-")} == {"a-1", "a-2"}
        assert {r.name for r in lab.runs(tag="y")} == {"a-2"}
        assert {r.name for r in lab.runs(status="running")} == {"live"}
        assert {r.name for r in lab.runs(status="finished", tag="x")} == {"a-1", "a-2"}
        assert {r.name for r in lab.runs(params={"lr": 0.01})} == {"a-2"}
        assert {r.name for r in lab.runs(params={"lr": (0.005, 0.2)})} == {"a-1", "a-2"}
        assert {r.name for r in lab.runs(params={"lr": (None, 0.005)})} == {"b-1"}
    finally:
        running.close()


def test_a_run_without_heartbeat_reads_as_crashed(tmp_path, url):
    stats = labstats.Stats(tmp_path / "run")
    stats.flush()
    lab = labstats.connect(url)
    assert lab.run("run").status == "running"
    lab.stale_after = 0.05
    time.sleep(0.1)
    assert lab.run("run").status == "crashed"
    assert [r.name for r in lab.runs(status="crashed")] == ["run"]
    stats.close()


def test_schema_version_is_recorded(tmp_path, redis_server, url):
    labstats.Stats(tmp_path / "run").close()
    client = redis_server.client()
    assert client.get("ls:schema") == str(keys.SCHEMA_VERSION).encode()
    run_id = client.hget("ls:names", "run").decode()
    info = json.loads(client.hget(f"ls:run:{run_id}:series", "_epoch") or "null")
    assert info is None  # log() alone records no epoch series


def test_a_config_over_the_size_limit_is_refused_at_the_call(tmp_path, lab):
    """Every viewer page lists configs (a 20 MB one slowed `/` to 1.6 s): the logger refuses
    one whose JSON is over MAX_CONFIG_BYTES, at the call, and starts no run."""
    from labstats.logger import MAX_CONFIG_BYTES

    assert MAX_CONFIG_BYTES == 256 * 1024
    big = {"table": "x" * MAX_CONFIG_BYTES}
    with pytest.raises(
        ValueError, match=r"labstats: config is 262,\d{3} bytes as JSON; the limit is 262,144"
    ):
        labstats.Stats(tmp_path / "big", config=big)
    with pytest.raises(ValueError, match="the limit is 262,144"):
        labstats.Stats(config=big)  # before on(): refused at the call too
    assert lab.runs() == []
    # Just under the limit is fine, and set_config() is held to the same limit.
    fits = {"table": "x" * (MAX_CONFIG_BYTES - 100)}
    with labstats.Stats(tmp_path / "ok", config=fits) as stats:
        with pytest.raises(ValueError, match="the limit is 262,144"):
            stats.set_config(more="y" * 200)
        stats.set_config(lr=0.1)
        stats.log(step=0, v=1.0)
    run = lab.run("ok")
    assert run.status == "finished"
    assert run.config == {**fits, "lr": 0.1}


@pytest.mark.parametrize(
    ("url", "owner"),
    [
        ("redis://alice:pw@127.0.0.1:6379/0", "alice"),
        ("rediss://_svc-2:pw@box/0", "_svc-2"),
        ("unix://bob:pw@/run/redis.sock?db=0", "bob"),
        ("redis://127.0.0.1/0?username=carol", "carol"),
        ("redis://127.0.0.1:6379/0", None),  # no ACL user: the shared layout of version 1
        ("redis://:pw@127.0.0.1/0", None),
        ("redis://default:pw@127.0.0.1/0", None),  # Redis's own user owns nothing
        ("redis://Alice:pw@127.0.0.1/0", None),  # not a name the redis role gives a training user
        ("redis://a.b:pw@127.0.0.1/0", None),  # a dot would end the owner inside the id
        ("redis://" + "a" * 33 + ":pw@127.0.0.1/0", None),
        ("not a url", None),
    ],
)
def test_the_owner_of_a_run_is_the_username_of_its_url(url, owner):
    from labstats.config import url_owner
    from labstats.logger import new_run_id

    assert url_owner(url) == owner
    run_id = new_run_id(owner)
    assert keys.run_owner(run_id) == owner
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", run_id.removeprefix(f"{owner}.") if owner else run_id)


def test_a_run_without_username_keeps_the_shared_layout(tmp_path, lab, redis_server):
    """No username in the URL (a laptop): the run's keys and indexes are those of version 1."""
    with labstats.Stats(tmp_path / "plain", tags=["t"]) as stats:
        stats.log(step=0, v=1.0)
    client = redis_server.client()
    assert "." not in stats.run_id
    assert stats.owner is None
    assert client.zscore("ls:runs", stats.run_id) is not None
    assert client.sismember("ls:status:finished", stats.run_id)
    assert client.sismember("ls:tag:t", stats.run_id)
    assert not client.exists("ls:owners")
    assert "owner" not in lab.run("plain").meta
    assert lab.run("plain").owner is None
    assert client.get("ls:schema") == str(keys.SCHEMA_VERSION).encode()
