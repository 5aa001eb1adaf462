"""Series windows, comparison frames and exports, checked against a plain-Python model."""

import json
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import labstats
from labstats.format import chunk, keys
from labstats.format.keys import Keys


def test_windows_of_a_long_series_match_the_model(tmp_path, lab):
    n = 5000  # several chunks
    with labstats.Stats(tmp_path / "run", flush_interval=0.01) as stats:
        for i in range(n):
            stats.log(step=i * 3, v=float(i))
    run = lab.run("run")
    assert run.series_info()["v"]["last_chunk"] >= 4
    for start, stop in [(0, 0), (1, 2), (3000, 6000), (None, 10), (14990, None), (-5, 5), (20000, 30000)]:
        s = run.series("v", start, stop)
        want = [
            i * 3 for i in range(n) if (start is None or i * 3 >= start) and (stop is None or i * 3 <= stop)
        ]
        assert s.idx.tolist() == want
        assert s.values.tolist() == [i / 3 for i in want]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.integers(0, 3000), min_size=1, max_size=3000),
    window=st.tuples(st.integers(-10, 3010), st.integers(-10, 3010)),
)
def test_windows_with_steps_going_back_match_the_model(tmp_path_factory, url, steps, window):
    lab = labstats.connect(url)
    savedir = tmp_path_factory.mktemp("run")
    with labstats.Stats(savedir, flush_interval=0.01) as stats:
        for n, step in enumerate(steps):
            stats.log(step=step, v=n)
    start, stop = min(window), max(window)
    got = lab.run(stats.name).series("v", start, stop)
    model = sorted(((s, n) for n, s in enumerate(steps) if start <= s <= stop), key=lambda p: p[0])
    assert got.idx.tolist() == [s for s, _ in model]
    assert got.values.tolist() == [n for _, n in model]


def test_latest_value_and_series_names(tmp_path, lab):
    with labstats.Stats(tmp_path / "run") as stats:
        stats.log(step=1, a=1.0, b="x")
        stats.log(step=2, a=2.0)
    run = lab.run("run")
    assert run.series_names() == ["a", "b"]
    assert run.latest("a") == (2, 2.0)
    assert run.latest("b") == (1, "x")
    with pytest.raises(labstats.LabstatsError, match="no series 'zz'"):
        run.series("zz")
    with pytest.raises(labstats.LabstatsError, match="no run named"):
        lab.run("nope")


def test_compare_export_and_frames(tmp_path, lab):
    for name, scale in (("r1", 1.0), ("r2", 2.0)):
        with labstats.Stats(tmp_path / name) as stats:
            for i in range(10):
                stats.log(step=i, loss=scale * i, acc=i % 2 == 0)
    frame = lab.compare(["r1", "r2"], "loss")
    assert list(frame.columns) == ["r1", "r2"]
    assert frame.loc[4].tolist() == [4.0, 8.0]
    run = lab.run("r1")
    csv = run.export(tmp_path / "r1.csv")
    parquet = run.export(tmp_path / "r1.parquet")
    from_csv = pd.read_csv(csv, index_col="idx")
    from_parquet = pd.read_parquet(parquet)
    assert from_csv["loss"].tolist() == [float(i) for i in range(10)]
    assert from_parquet["acc"].tolist() == [i % 2 == 0 for i in range(10)]
    with pytest.raises(labstats.LabstatsError, match="unknown export format"):
        run.export(tmp_path / "r1.xlsx")


def test_malformed_records_are_reported_not_raised(tmp_path, lab, redis_server):
    with labstats.Stats(tmp_path / "run") as stats:
        stats.log(step=0, t="ok")
    run = lab.run("run")
    sid = run.series_info()["t"]["sid"]
    key = keys.Keys().chunk(run.id, sid, 0)
    redis_server.client().append(key, chunk.OBJECT_HEADER.pack(1, 3) + b"Zzz")
    values = run.series("t").values
    assert values[0] == "ok"
    assert isinstance(values[1], ValueError)


def test_connect_errors_are_clear(redis_server):
    with pytest.raises(labstats.LabstatsError, match="cannot reach Redis"):
        labstats.connect("redis://127.0.0.1:1/0", timeout=0.5)
    client = redis_server.client()
    client.acl_setuser(
        "reader-test", enabled=True, passwords=["+right"], commands=["+@read", "+ping"], keys=["*"]
    )
    with pytest.raises(labstats.LabstatsError, match=r"refused the credentials.*") as info:
        labstats.connect(f"redis://reader-test:wrong@127.0.0.1:{redis_server.port}/0")
    assert "wrong" not in str(info.value)  # passwords are never printed


def test_reader_works_as_a_read_only_user(tmp_path, url, redis_server):
    with labstats.Stats(tmp_path / "run") as stats:
        stats.log(step=0, v=np.arange(3))
    client = redis_server.client()
    client.acl_setuser(
        "viewer-test", enabled=True, passwords=["+pw"], commands=["-@all", "+@read", "+ping"], keys=["ls:*"]
    )
    lab = labstats.connect(f"redis://viewer-test:pw@127.0.0.1:{redis_server.port}/0")
    assert lab.run("run").series("v").values[0].tolist() == [0, 1, 2]
    assert [r.name for r in lab.runs(status="finished")] == ["run"]


def test_overview_keeps_first_last_and_each_chunks_extremes(tmp_path, lab):
    values = np.random.default_rng(3).standard_normal(10_000)
    values[4321] = 99.0
    values[8765] = -99.0
    values[100] = np.nan
    with labstats.Stats(tmp_path / "run", flush_interval=0.01) as stats:
        for i, v in enumerate(values):
            stats.log(step=i, v=float(v))
    run = lab.run("run")
    overview = run.overview("v")
    chunks = run.series_info()["v"]["last_chunk"] + 1
    assert len(overview) <= 4 * chunks < len(values) / 100
    assert overview.idx[0] == 0
    assert overview.idx[-1] == 9999
    assert {4321, 8765} <= set(overview.idx.tolist())
    assert np.nanmax(overview.values) == 99.0
    per_chunk = 1023
    for c in range(chunks):  # each chunk's own maximum is kept
        part = values[c * per_chunk : (c + 1) * per_chunk]
        assert np.nanmax(part) in overview.values


def test_short_series_overview_is_the_series(tmp_path, lab):
    with labstats.Stats(tmp_path / "run") as stats:
        for i in range(50):
            stats.log(step=i, v=float(i))
    assert lab.run("run").overview("v").idx.tolist() == list(range(50))


def test_the_regenerate_recipe_quotes_every_recorded_field(url, tmp_path):
    """A record is data: run in a shell, the recipe passes each hostile field as one word."""
    import json
    import subprocess

    pwned = tmp_path / "pwned"
    hostile = f"main && touch {pwned}; $(touch {pwned}) `touch {pwned}` ' \" \n"
    r = labstats.connect(url).redis
    commit = "0123456789abcdef0123456789abcdef01234567"
    r.hset(keys.Keys().run("evil"), mapping={
        "name": "evil", "git_root": "/repo", "git_remote": hostile, "git_commit": commit, "git_dirty": "1",
        "cwd_in_repo": hostile, "argv": json.dumps(["python", hostile, "--lr", "0.1"]),
        "env": json.dumps({"A": hostile}),
    })  # fmt: skip
    recipe = labstats.connect(url).run("evil").regenerate_command()
    assert recipe.splitlines()[1] == "set -e"
    # Stand-ins record their arguments instead of acting.
    stubs = "".join(f"{c}() {{ printf '{c}<%s>\\n' \"$@\"; }}; " for c in ("cd", "git", "env", "python"))
    stubs += "labstats() { :; }; "
    out = subprocess.run(
        ["bash", "-c", stubs + recipe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout  # cd is a stand-in: what the recipe writes lands here
    assert not pwned.exists()
    assert f"git<clone>\ngit<-->\ngit<{hostile}>\ngit<DIR>" in out  # never an option either
    assert f"git<--detach>\ngit<{commit}>" in out
    assert f"cd<-->\ncd<{hostile}>" in out
    assert f"env<A={hostile}>\nenv<python>\nenv<{hostile}>\nenv<--lr>" in out
    # A commit that is not a commit id is never passed to git: the recipe stops there, saying so.
    r.hset(keys.Keys().run("evil"), "git_commit", hostile)
    recipe = labstats.connect(url).run("evil").regenerate_command()
    assert (
        recipe.splitlines()[-1]
        == f"# the recorded commit {hostile!r} is not a commit id: nothing to check out"
    )
    out = subprocess.run(
        ["bash", "-c", stubs + recipe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout  # cd is a stand-in: what the recipe writes lands here
    assert not pwned.exists()
    assert "--detach" not in out


def test_a_config_with_several_sources_reads_them_all_and_warns_of_one_away(tmp_path, url, monkeypatch):
    """Jupyter's config on the web box names one source per training box: connect() reads
    them all; one that is away is left out with a warning, and named."""
    from conftest import RedisServer

    other = RedisServer(tmp_path / "other").start()
    try:
        with labstats.Stats(tmp_path / "a", url=url) as stats:
            stats.log(step=0, loss=1.0)
        with labstats.Stats(tmp_path / "b", url=other.url) as stats:
            stats.log(step=0, loss=2.0)
        config = tmp_path / "config.toml"
        config.write_text(
            f'[[sources]]\nname = "gpu1"\nurl = "{url}"\n\n'
            f'[[sources]]\nname = "gpu2"\nurl = "{other.url}"\n\n'
            '[[sources]]\nname = "off"\nurl = "redis://127.0.0.1:1/0"\n'
        )
        monkeypatch.delenv("LABSTATS_URL")
        monkeypatch.setenv("LABSTATS_CONFIG", str(config))
        with pytest.warns(UserWarning, match="source off is unreachable"):
            lab = labstats.connect()
        assert sorted(r.name for r in lab.runs()) == ["a", "b"]
        assert lab.unreachable.keys() == {"off"}
        assert lab.disconnected == []
        assert lab.run("b").series("loss").values.tolist() == [2.0]
        assert lab.run("gpu1/a").lab.source == "source gpu1"
        assert lab.compare(["a", "b"], "loss").to_dict("list") == {"a": [1.0], "b": [2.0]}
        away = r"no run named 'zz' in gpu1, gpu2, off \(off unreachable\)"
        with pytest.raises(labstats.LabstatsError, match=away):
            lab.run("zz")
    finally:
        other.stop()


def test_a_replica_whose_training_box_is_away_is_warned_of(tmp_path, url, monkeypatch):
    from conftest import RedisServer

    replica = RedisServer(tmp_path / "replica", extra_args=("--replicaof", "127.0.0.1", "1")).start()
    try:
        config = tmp_path / "config.toml"
        config.write_text(f'[[sources]]\nname = "box"\nurl = "{replica.url}"\n')
        monkeypatch.delenv("LABSTATS_URL")
        monkeypatch.setenv("LABSTATS_CONFIG", str(config))
        with pytest.warns(UserWarning, match="the training box of source box is not connected"):
            lab = labstats.connect()
        assert lab.disconnected == ["box"]
        assert lab.runs() == []
    finally:
        replica.stop()


def test_summaries_of_many_runs_equal_each_runs_own(tmp_path, lab):
    rng = np.random.default_rng(0)
    expected = {}
    for k in range(4):
        values = rng.normal(size=3000 + 1500 * k)  # several chunks each
        values[100] = np.nan
        with labstats.Stats(tmp_path / f"s{k}") as stats:
            for i, v in enumerate(values):
                stats.log(step=i, loss=float(v))
            if k == 3:
                stats.log(step=0, other=1.0)
        expected[stats.run_id] = {"last": values[-1], "min": np.nanmin(values), "max": np.nanmax(values)}
    with labstats.Stats(tmp_path / "without") as stats:
        stats.log(step=0, acc=1.0)  # no loss series: None
    runs = lab.runs(limit=None)
    got = lab.summaries(runs, "loss")
    assert got[stats.run_id] is None
    for run in runs:
        if run.id in expected:
            assert got[run.id] == run.summary("loss") == pytest.approx(expected[run.id])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from([None, "alice", "bob"]),  # whose index
            st.sampled_from([None, "alice", "bob"]),  # whose id
            st.integers(0, 40),  # id number (a few repeat)
            st.sampled_from([1.0, 2.0, 3.0, 1e10]),  # start (ties, and forged far-future ones)
        ),
        max_size=60,
    ),
    offset=st.integers(0, 30),
    limit=st.integers(0, 12),
)
def test_the_newest_first_page_of_all_indexes_matches_the_model(url, redis_server, entries, offset, limit):
    """The unfiltered page merges the shared index and each owner's: an index counts only the
    ids it owns (alice's only alice.*, the shared one only unowned ids), ordered by (start,
    id) newest first as one sorted set would be, whatever the windows it had to read."""
    from labstats.reader import Lab

    client = redis_server.client()
    client.flushall()
    k = Keys()
    client.sadd(k.owners, "alice", "bob", "Not-An-Owner")
    model: dict[str, tuple[float, str]] = {}
    for index, who, number, started in entries:
        run_id = f"{who}.r{number:02d}" if who else f"r{number:02d}"
        client.zadd(k.runs_index(index), {run_id: started})
        client.hset(k.run(run_id), "name", run_id)  # a run (index entries without one never count)
        if index == who:
            model[run_id] = (client.zscore(k.runs_index(index), run_id), run_id)
    newest = sorted(model, key=model.__getitem__, reverse=True)
    lab = Lab(client)
    assert [r.id for r in lab.runs(limit=limit, offset=offset)] == newest[offset : offset + limit]
    assert [r.id for r in lab.runs(limit=None, offset=offset)] == newest[offset:]
    assert lab.run_ids() == newest


def test_a_page_is_right_when_forged_entries_crowd_an_index(lab, redis_server):
    """Alice lists 500 of bob's ids, far in the future, in her own index: her own newest runs
    still make the page (the window grows past the entries that do not count)."""
    client = redis_server.client()
    k = Keys()
    client.sadd(k.owners, "alice", "bob")
    client.zadd(k.owner_runs("alice"), {f"bob.forged{i}": 1e10 for i in range(500)})
    client.zadd(k.owner_runs("alice"), {f"alice.r{i}": 100 + i for i in range(3)})
    client.zadd(k.runs, {f"old{i}": 50 + i for i in range(10)})
    for run_id in ["alice.r0", "alice.r1", "alice.r2", *(f"old{i}" for i in range(10))]:
        client.hset(k.run(run_id), mapping={"name": run_id, "status": "finished"})
    assert [r.id for r in lab.runs(limit=4)] == ["alice.r2", "alice.r1", "alice.r0", "old9"]
    assert [r.id for r in lab.runs(limit=2, offset=2)] == ["alice.r0", "old9"]


def test_a_page_of_several_sources_merges_sorts_and_pages_them_and_names_the_one_away(tmp_path, url):
    """The one aggregator the CLI, notebooks and the viewer list runs through: each source's
    runs merged in the order asked, paged, and a source that is away left out and named in
    its state (no warning: the viewer asks every few seconds)."""
    import warnings

    import redis
    from conftest import RedisServer

    from labstats.reader import Lab, Labs

    other = RedisServer(tmp_path / "other").start()
    try:
        for name, where in (("b1", url), ("a2", other.url), ("c3", url)):
            with labstats.Stats(tmp_path / name, url=where) as stats:
                stats.log(step=0, loss=1.0)
            time.sleep(0.01)  # distinct start times
        labs = Labs({"gpu1": labstats.connect(url), "gpu2": labstats.connect(other.url),
                     "off": Lab(redis.Redis(port=1, socket_connect_timeout=0.5))}, warn=False)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            first = labs.page(limit=2)
        assert [(source, run.name) for source, run in first.runs] == [("gpu1", "c3"), ("gpu2", "a2")]
        assert first.more
        assert first.states["gpu1"] == {"reachable": True, "link": None, "error": None}
        assert first.states["off"]["reachable"] is False
        assert "refused" in first.states["off"]["error"].lower()
        assert labs.unreachable.keys() == {"off"}
        second = labs.page(limit=2, page=2)
        assert [run.name for _, run in second.runs] == ["b1"]
        assert not second.more
        assert [run.name for _, run in labs.page(sort="name").runs] == ["a2", "b1", "c3"]
        assert [run.name for _, run in labs.page(name="c").runs] == ["c3"]
        with pytest.raises(labstats.LabstatsError, match="sort must be"):
            labs.page(sort="owner")
    finally:
        other.stop()


def test_a_series_whose_last_idx_its_owner_made_text_still_reads_its_latest_point(tmp_path, lab):
    with labstats.Stats(tmp_path / "r") as stats:
        for step in range(5):
            stats.log(step=step, loss=float(step), note=f"n{step}")
    key = lab.keys.series(stats.run_id)
    for name in (b"loss", b"note"):
        info = json.loads(lab.redis.hget(key, name))
        lab.redis.hset(key, name, json.dumps({**info, "last_idx": "x"}))
    run = lab.run(stats.run_id)
    assert run.latest("loss") == (4, 4.0)
    assert run.latest("note") == (4, "n4")
    assert run.summary("loss") == {"last": 4.0, "min": 0.0, "max": 4.0}


# ---- annotations and the trash, as the readers see them ---------------------------------------


def plant_runs(client, count, owner="alice"):
    """``count`` finished runs of ``owner``, the last one newest; their ids."""
    k = Keys()
    client.sadd(k.owners, owner)
    ids = [f"{owner}.r{i:03d}" for i in range(count)]
    for i, run_id in enumerate(ids):
        client.hset(k.run(run_id), mapping={"name": f"run{i}", "status": "finished", "started": 1000 + i,
                                            "tags": '["logged"]'})  # fmt: skip
        client.zadd(k.owner_runs(owner), {run_id: 1000 + i})
        client.sadd(k.owner_status(owner, "finished"), run_id)
    return ids


def test_trashed_runs_are_in_no_list_but_their_own_and_pages_stay_full(lab, redis_server):
    """The newest 150 of 200 runs go to the trash: the first page is the 50 others (the index
    window grows past the trashed), the trash lists them, and a run still opens by its id."""
    from labstats.curation import Curation

    client = redis_server.client()
    ids = plant_runs(client, 200)
    newest = ids[::-1]
    cur = Curation(client, actor="tester", writer="default")
    for run_id in newest[:150]:
        cur.trash(run_id)
    assert [r.id for r in lab.runs(limit=20)] == newest[150:170]
    assert [r.id for r in lab.runs(limit=20, offset=40)] == newest[190:200]
    assert [r.id for r in lab.runs(limit=None)] == newest[150:]
    assert [r.id for r in lab.runs(trashed=True, limit=None)] == newest[:150]
    assert [r.id for r in lab.runs(status="finished", limit=None)] == newest[150:]
    assert [r.id for r in lab.runs(tag="logged", limit=3)] == newest[150:153]
    assert [r.id for r in lab.runs(name="run1", trashed=True, limit=None)] == [
        i for i in newest[:150] if client.hget(f"ls:run:{i}", "name").startswith(b"run1")]  # fmt: skip
    assert lab.run(newest[0]).trashed
    assert lab.run(newest[0]).annotations.trashed_by == "tester"
    from labstats.reader import Labs

    labs = Labs({"gpu1": lab}, warn=False)  # the viewer's and Jupyter's way over several boxes
    assert [r.id for _, r in labs.page(limit=5).runs] == newest[150:155]
    assert [r.id for _, r in labs.page(limit=5, trashed=True).runs] == newest[:5]
    assert [r.id for r in labs.runs(limit=3, trashed=True)] == newest[:3]
    cur.restore(newest[0])
    assert lab.runs(limit=1)[0].id == newest[0]
    assert lab.run_ids() == newest  # the archiver and the purge still see every run


def test_each_run_carries_its_annotations_and_the_filters_go_by_them(lab, redis_server):
    from labstats.curation import Curation

    client = redis_server.client()
    ids = plant_runs(client, 3)
    cur = Curation(client, actor="tester", writer="default")
    cur.change(ids[0], name="the good one", project="vision", tags_add=["keep"], tags_remove=["logged"],
               starred=True, protected=True, note="*fine*")  # fmt: skip
    run = lab.run(ids[0])
    assert (run.display_name, run.name, run.project, run.note) == ("the good one", "run0", "vision", "*fine*")
    assert run.annotations.tags == ("keep",)
    assert run.tags == ["logged"]
    assert run.annotations.starred
    assert run.annotations.protected
    assert not run.trashed
    assert lab.run(ids[1]).display_name == "run1"
    assert [r.id for r in lab.runs(tag="keep")] == [ids[0]]
    assert [r.id for r in lab.runs(tag="logged")] == [ids[2], ids[1]]
    assert [r.id for r in lab.runs(name="GOOD")] == [ids[0]]
    assert [r.id for r in lab.runs(project="vision")] == [ids[0]]
    assert [r.id for r in lab.runs(starred=True)] == [ids[0]]
    listed = {r.id: r for r in lab.runs()}
    assert listed[ids[0]].loaded_annotations.name == "the good one"  # read with the list


def test_a_change_on_the_master_shows_on_a_replica_reader_within_a_second(tmp_path, url, redis_server):
    """Jupyter reads the web box's replica: a run listed there, and a run object kept from
    before, show a change made on the master (the viewer's or the CLI's) within 1 s."""
    from conftest import RedisServer, wait_for

    from labstats.curation import Curation

    ids = plant_runs(redis_server.client(), 2)
    replica = RedisServer(
        tmp_path / "replica",
        extra_args=("--appendonly", "no", "--replicaof", "127.0.0.1", str(redis_server.port)),
    )
    replica.start()
    try:
        lab = labstats.connect(replica.url)
        assert wait_for(lambda: len(lab.runs()) == 2)
        kept = lab.run(ids[1])
        assert kept.display_name == "run1"
        Curation(redis_server.client(), actor="tester", writer="default").change(ids[1], name="renamed")
        Curation(redis_server.client(), actor="tester", writer="default").trash(ids[0])
        changed = time.monotonic()
        assert wait_for(lambda: [r.display_name for r in lab.runs()] == ["renamed"], timeout=1.0)
        assert wait_for(lambda: kept.display_name == "renamed", timeout=2.0)
        assert time.monotonic() - changed < 1.5
    finally:
        replica.stop()
