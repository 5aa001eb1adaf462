"""Training users isolated from each other (issue 22, finding 6), against a real redis-server
loaded with the redis role's ACL file: each training user logs as its own Redis user and owns
its runs (ids ``alice.<id>``, indexes ``ls:owner:alice:...``); it cannot write anything of
another's; every reader lists every owner's runs together with unowned (legacy) ones."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis
import torch
from conftest import password

import labstats
from labstats import cli
from labstats.config import LabstatsError
from labstats.format import keys, run_record
from labstats.reader import Lab

K = keys.Keys()


def url_of(server, user: str) -> str:
    return server.url_for(user, password(user))


def as_user(server, user: str) -> redis.Redis:
    return server.client(user, password(user))


def viewer(server) -> Lab:
    return labstats.connect(url_of(server, "viewer"))


def refused(server) -> list[dict]:
    """Commands the server refused since the last ACL LOG RESET (users and what)."""
    entries = server.client().execute_command("ACL", "LOG")
    out = []
    for entry in entries:
        fields = dict(zip(entry[::2], entry[1::2], strict=True))
        out.append({k.decode(): v.decode() if isinstance(v, bytes) else v for k, v in fields.items()})
    return out


def log_every_call(url: str, savedir, name: str, tags: list[str], *, crash: bool = False):
    """One run through every documented call of the logger; returns its Stats."""
    stats = labstats.Stats(
        savedir, name=name, url=url, tags=tags, config={"lr": 0.01, "who": name}, seed=7,
        tensor_file_bytes=0, handle_signals=False, flush_interval=0.02, capture_freeze=True,
    )  # fmt: skip
    try:
        weights = np.arange(300_000, dtype=np.float32)  # 1.2 MB: a blob in Redis (no tensor files)
        canvas = np.zeros((8, 8), np.uint8)
        stats.watch(weights, "weights", every=5)
        stats.watch(torch.ones(16), "bias")
        stats.watch(lambda: 0.5, "callable")
        stats.watch(weights, "hist", kind="histogram", bins=8)
        stats.watch(canvas, "canvas", kind="image")
        stats.retain("sample", every=3, last=1)
        stats.set_config(batch=32)
        for step in range(12):
            canvas[:] = step
            stats.update(step // 4, 40, 10, step % 4)
            stats.log(step=step, loss=1.0 / (step + 1), text=f"s{step}", flag=step % 2 == 0)
            stats.image("sample", np.full((4, 4, 3), step, np.uint8), step=step)
        stats.add_scalar("scalar", 1.5, 12)
        stats.histogram("h", np.arange(100.0), 12)
        stats.write_immediate(3.0, "immediate", 3, 0, 12)
        stats.images("batch", np.zeros((2, 4, 4, 3), np.uint8))
        stats.fits("sky", np.ones((4, 4), np.float32), header={"OBJECT": "M31"})
        stats.points("cloud", np.random.default_rng(0).random((20, 3)), colors=np.zeros((20, 3), np.uint8))
        (savedir / "ckpt.bin").write_bytes(b"weights")
        stats.file("checkpoint", savedir / "ckpt.bin")
        stats.save_jpg(np.zeros((4, 4, 3), np.uint8), savedir, "val_", 0, 1, 0)
        stats.save_fits(np.ones((3, 3)), savedir, "fit_", 0, 1, 0)
        stats.save_points(np.zeros((5, 3)), savedir, 0, 1, ply=True)
        assert stats.flush(30)
        if crash:
            raise RuntimeError("boom")
    except RuntimeError as exc:
        stats.close(run_record.CRASHED, f"RuntimeError: {exc}")
    except BaseException:
        stats.close(run_record.CRASHED, "test failed")  # its writer must not outlive the test
        raise
    else:
        stats.close()
    return stats


def log_legacy(server, savedir, name: str, **options) -> labstats.Stats:
    """A run written without a username (an old client, a laptop): the layout of version 1."""
    with labstats.Stats(savedir, name=name, url=server.url, capture_git=False, **options) as stats:
        stats.log(step=0, loss=1.0)
    return stats


@pytest.fixture
def open_store(open_acl_server):
    ops = open_acl_server.client()
    ops.flushall()
    ops.execute_command("ACL", "LOG", "RESET")
    return open_acl_server


# ---- what another training user cannot do ------------------------------------------------------


def bob_run(server, tmp_path) -> labstats.Stats:
    with labstats.Stats(
        tmp_path / "bob", name="bobs-run", url=url_of(server, "bob"), tags=["mine"], capture_git=False
    ) as stats:
        stats.retain("pic", every=1)
        for step in range(3):
            stats.log(step=step, loss=float(step))
            stats.image("pic", np.full((4, 4), step, np.uint8), step=step)
    assert stats.pending_spool is None
    return stats


def snapshot(server, run_id: str) -> dict[bytes, bytes]:
    """Every key of bob's (his run's and his indexes) and the shared ones, as DUMP sees them."""
    ops = server.client()
    keys = [*ops.scan_iter(f"ls:run:{run_id}*"), *ops.scan_iter("ls:owner:bob:*"), b"ls:names", b"ls:owners"]
    return {key: ops.dump(key) for key in sorted(keys)}


def forgeries(run_id: str) -> list[tuple]:
    """Each way finding 6 (and more) erased, hid or relabelled another's run."""
    run, chunk = K.run(run_id), K.chunk(run_id, 0, 0)
    from labstats.write.media import media_id

    records = K.media_records(run_id, media_id("pic"))
    return [
        ("SET", chunk, ""),  # points gone
        ("APPEND", chunk, "junk"),
        ("SETRANGE", chunk, "3", "x"),
        ("HSET", run, "archived", "1"),  # hidden behind an archive that does not exist
        ("HSET", run, "status", "finished", "ended", "not-a-number"),  # taken by the archive job
        ("HSET", run, "status", "running"),
        ("HSETNX", run, "forged", "1"),
        ("HDEL", records, "0:0"),  # a media record gone
        ("HDEL", run, "heartbeat"),
        ("HSET", K.series(run_id), "loss", "{}"),
        ("SET", K.seq(run_id), "999999"),  # its spool would never replay
        ("SET", K.diff(run_id), "forged diff"),
        ("ZADD", K.chunk_lo(run_id, 0), "0", "5"),
        ("SMOVE", K.owner_status("bob", "finished"), K.owner_status("bob", "crashed"), run_id),
        ("SADD", K.owner_status("bob", "crashed"), run_id),
        ("SREM", K.owner_status("bob", "finished"), run_id),
        ("SADD", K.owner_tag("bob", "evil"), run_id),
        ("ZADD", K.owner_runs("bob"), "0", run_id),  # moved to the end of the list
        ("ZADD", K.owner_runs("bob"), "1", "bob.forged"),
        ("ZREM", K.owner_runs("bob"), run_id),
        ("ZADD", K.runs, "9e9", run_id),  # the legacy indexes: nobody's to write any more
        ("SADD", K.status("crashed"), run_id),
        ("SADD", K.tag("evil"), run_id),
        ("HSET", K.names, "bobs-run", "alice.x"),  # a name taken over
        ("HDEL", K.names, "bobs-run"),
        ("SREM", K.owners, "bob"),
        ("SPOP", K.owners),
        ("DEL", run),
        ("UNLINK", run),
        ("DEL", K.names),
        ("UNLINK", K.owners),
        ("DEL", K.owner_runs("bob")),
        ("DEL", K.run("alice.mine")),  # nor her own: deleting is the archiver's
        ("EXPIRE", run, "1"),
        ("PEXPIRE", K.owner_runs("bob"), "1"),
        ("RENAME", run, K.run("alice.stolen")),
        ("COPY", K.run("alice.mine"), run, "REPLACE"),
        ("MOVE", run, "1"),
        ("SORT", K.owner_runs("bob"), "STORE", K.owner_runs("alice")),
        ("HINCRBY", run, "started", "1"),
        ("ZINCRBY", K.owner_runs("bob"), "1", run_id),
        ("SMOVE", K.owner_status("bob", "finished"), K.owner_status("alice", "finished"), run_id),
        ("ZUNIONSTORE", K.owner_runs("bob"), "1", K.owner_runs("alice")),
        ("SET", "other:key", "outside the prefix"),
    ]


def test_a_training_user_cannot_erase_hide_or_forge_anothers_run(acl_server, tmp_path):
    ops = acl_server.client()
    ops.flushall()
    stats = bob_run(acl_server, tmp_path)
    run_id = stats.run_id
    assert run_id.startswith("bob.")
    before = snapshot(acl_server, run_id)
    alice = as_user(acl_server, "alice")
    assert alice.hgetall(K.run(run_id))  # reading another's run stays allowed
    for command in forgeries(run_id):
        with pytest.raises(redis.exceptions.NoPermissionError):
            alice.execute_command(*command)
    # A transaction holding one forgery is refused whole (EXECABORT): nothing of it applies.
    pipe = alice.pipeline(transaction=True)
    pipe.set(K.run("alice.x") + ":seq", 1)
    pipe.hset(K.run(run_id), "archived", "1")
    with pytest.raises(redis.exceptions.ResponseError):
        pipe.execute()
    assert not alice.exists(K.run("alice.x") + ":seq")
    # What alice may write of the shared keys cannot take anything from bob: a name is first come.
    assert alice.hsetnx(K.names, "bobs-run", "alice.x") == 0
    assert snapshot(acl_server, run_id) == before
    run = viewer(acl_server).run("bobs-run")
    assert (run.id, run.owner, run.status, run.archived) == (run_id, "bob", "finished", False)
    assert run.series("loss").values.tolist() == [0.0, 1.0, 2.0]
    assert run.media_steps("pic") == [0, 1, 2]
    assert run.meta["owner"] == "bob"


def test_forged_index_entries_in_ones_own_indexes_or_the_legacy_ones_relabel_nothing(open_store, tmp_path):
    """Alice may write her own indexes: listing bob's run there (or a run that does not exist),
    or a name that points at his run, neither relabels nor duplicates nor hides it; entries
    left in the legacy sets (from before owners) are checked against the run's record too."""
    stats = bob_run(open_store, tmp_path)
    legacy = log_legacy(open_store, tmp_path / "old", "old-run", tags=["old"])
    alice = as_user(open_store, "alice")
    alice.sadd(K.owners, "alice", "Not An Owner", "bob")
    alice.zadd(K.owner_runs("alice"), {stats.run_id: 9e9, "alice.ghost": 9e9, legacy.run_id: 9e9})
    alice.sadd(K.owner_status("alice", "crashed"), stats.run_id, legacy.run_id)
    alice.sadd(K.owner_status("alice", "running"), stats.run_id)
    alice.sadd(K.owner_tag("alice", "evil"), stats.run_id, legacy.run_id, "alice.ghost")
    alice.hsetnx(K.names, "fake", stats.run_id)
    alice.hsetnx(K.names, "ghost-name", "alice.ghost")
    ops = open_store.client()  # entries an old trainer could write into the shared sets
    ops.sadd(K.status("crashed"), legacy.run_id, stats.run_id)
    ops.sadd(K.tag("evil"), legacy.run_id)
    ops.zadd(K.runs, {stats.run_id: 9e9})

    lab = viewer(open_store)
    listed = lab.runs(limit=None)
    assert [r.id for r in listed] == [legacy.run_id, stats.run_id]  # each once, by its own start
    assert lab.runs(status="crashed") == []
    assert lab.runs(status="running") == []
    assert lab.runs(tag="evil") == []
    assert [r.id for r in lab.runs(tag="mine")] == [stats.run_id]
    assert [r.id for r in lab.runs(tag="old")] == [legacy.run_id]
    assert [r.id for r in lab.runs(status="finished", limit=None)] == [legacy.run_id, stats.run_id]
    assert lab.runs(name="fake") == []
    assert lab.runs(name="ghost") == []
    with pytest.raises(LabstatsError):
        lab.run("fake")  # a name that another run's record does not carry
    with pytest.raises(LabstatsError):
        lab.run("ghost-name")  # a name of a run that does not exist
    assert lab.run("bobs-run").id == stats.run_id
    assert lab.run(stats.run_id).owner == "bob"
    assert lab.run(legacy.run_id).owner is None


def test_a_run_named_after_anothers_id_does_not_take_over_its_pages(open_store, tmp_path):
    """A name is anyone's to claim: alice naming her run after bob's run id made bob's id open
    alice's run (his pages, his diff and package list in the recipe). An id comes first."""
    bobs = bob_run(open_store, tmp_path)
    with labstats.Stats(
        tmp_path / "a", name=bobs.run_id, url=url_of(open_store, "alice"), capture_git=False
    ) as a:
        a.log(step=0, loss=9.0)
    assert a.name == bobs.run_id  # the name was free: claimed
    lab = viewer(open_store)
    assert lab.run(bobs.run_id).owner == "bob"
    assert lab.run(bobs.run_id).series("loss").values.tolist() == [0.0, 1.0, 2.0]


def test_made_up_ids_at_the_top_of_ones_own_index_push_no_run_off_the_page(open_store, tmp_path):
    """Alice may write her own index: 300 ids of runs that do not exist, scored far in the
    future, filled the first page (200) with nothing, and bob's and the legacy runs were gone
    from it with no next page."""
    bobs = bob_run(open_store, tmp_path)
    legacy = log_legacy(open_store, tmp_path / "old", "old-run")
    alice = as_user(open_store, "alice")
    alice.sadd(K.owners, "alice")
    alice.zadd(K.owner_runs("alice"), {f"alice.fake-{i}": 9e99 for i in range(300)})
    alice.zadd(
        K.owner_runs("alice"), {f"alice.late-{i}": bobs_start for i, bobs_start in enumerate([1.0] * 5)}
    )
    lab = viewer(open_store)
    assert [r.id for r in lab.runs(limit=200)] == [legacy.run_id, bobs.run_id]
    assert lab.run_ids() == [legacy.run_id, bobs.run_id]


def test_names_in_the_owners_list_without_runs_cost_nothing(open_store, tmp_path):
    """Anyone may add names to ls:owners; only owners with an index of runs are read."""
    bobs = bob_run(open_store, tmp_path)
    as_user(open_store, "alice").sadd(K.owners, *[f"junk{i}" for i in range(2000)])
    lab = viewer(open_store)
    assert lab.owners() == ["bob"]
    assert [r.id for r in lab.runs()] == [bobs.run_id]


# ---- two training users at once, every call, and the readers --------------------------------


def test_two_training_users_log_every_call_at_once_and_readers_list_both_with_legacy_runs(
    open_store, tmp_path
):
    server = open_store
    old = log_legacy(server, tmp_path / "old1", "old-first", tags=["sweep"], config={"lr": 0.5})
    time.sleep(0.01)
    done: dict[str, labstats.Stats] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def user(who: str, crash: bool) -> None:
        try:
            start.wait(10)
            name = f"{who}-{'crash' if crash else 'ok'}"
            done[name] = log_every_call(
                url_of(server, who), tmp_path / name, name, ["sweep", who], crash=crash
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=user, args=(who, crash)) for who in ("alice", "bob") for crash in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    time.sleep(0.01)
    new = log_legacy(server, tmp_path / "old2", "old-last")
    assert not refused(server), refused(server)  # no command of any batch was refused
    for name, stats in done.items():
        assert stats.pending_spool is None, name  # nothing left in a spool
        assert stats.run_id.startswith(f"{name.split('-')[0]}.")
    assert old.run_id.count(".") == 0
    assert new.run_id.count(".") == 0

    lab = viewer(server)
    listed = lab.runs(limit=None)
    assert {r.name for r in listed} == {"old-first", "old-last", *done}
    assert listed[0].name == "old-last"
    assert listed[-1].name == "old-first"
    starts = [float(r.meta["started"]) for r in listed]
    assert starts == sorted(starts, reverse=True)
    pages = [r.id for offset in range(0, 6, 2) for r in lab.runs(limit=2, offset=offset)]
    assert pages == [r.id for r in listed]
    assert {r.name for r in lab.runs(status="crashed")} == {"alice-crash", "bob-crash"}
    assert {r.name for r in lab.runs(status="finished")} == {"alice-ok", "bob-ok", "old-first", "old-last"}
    assert {r.name for r in lab.runs(tag="sweep")} == {"old-first", *done}
    assert {r.name for r in lab.runs(tag="bob")} == {"bob-ok", "bob-crash"}
    assert {r.name for r in lab.runs(tag="bob", status="crashed")} == {"bob-crash"}
    assert {r.name for r in lab.runs(name="ok")} == {"alice-ok", "bob-ok"}
    assert {r.name for r in lab.runs(params={"lr": (0.001, 0.1)})} == set(done)
    assert {r.name for r in lab.runs(params={"lr": 0.5})} == {"old-first"}

    for name, stats in done.items():
        who = name.split("-")[0]
        run = lab.run(name)
        assert (run.id, run.owner, run.meta["owner"]) == (stats.run_id, who, who)
        assert run.status == ("crashed" if "crash" in name else "finished")
        assert run.config == {"lr": 0.01, "who": name, "batch": 32}
        assert run.series("loss").values.tolist() == [1.0 / (s + 1) for s in range(12)]
        assert run.series("weights").values[0].tobytes() == np.arange(300_000, dtype=np.float32).tobytes()
        assert len(run.series("hist")) == 12
        assert len(run.series("bias")) == 12
        assert run.latest("immediate") == (12, 3.0)
        assert run.media_steps("sample") == [0, 3, 6, 9, 11]  # retain(every=3, last=1)
        assert {"canvas", "batch", "sky", "cloud", "checkpoint", "val", "fit", "shape"} <= set(
            run.media_names()
        )
        assert run.freeze()  # the package list went to the run's own key
    assert lab.run("old-first").owner is None


def test_the_same_page_whichever_layout_a_run_uses(open_store, tmp_path):
    """30 runs, a third of each kind (legacy, alice's, bob's), started one second apart in
    turn: every page of the unfiltered list and of a filter is the same as one read of all."""
    server = open_store
    ids = []
    for i in range(30):
        who = (None, "alice", "bob")[i % 3]
        url = server.url if who is None else url_of(server, who)
        with labstats.Stats(tmp_path / f"r{i}", name=f"r{i}", url=url, capture_git=False,
                            tags=["odd"] if i % 2 else []) as stats:  # fmt: skip
            stats.backdate(1.7e9 + i)  # an imported run's start: its own index
        ids.append(stats.run_id)
    assert not refused(server)
    lab = viewer(server)
    newest = ids[::-1]
    assert [r.id for r in lab.runs(limit=None)] == newest
    for limit in (1, 4, 7, 30, 100):
        for offset in (0, 3, 10, 29, 31):
            assert [r.id for r in lab.runs(limit=limit, offset=offset)] == newest[offset : offset + limit]
            odd = [i for i in newest if ids.index(i) % 2]
            got = lab.runs(tag="odd", status="finished", limit=limit, offset=offset)
            assert [r.id for r in got] == odd[offset : offset + limit]
    assert set(lab.run_ids()) == set(ids)


# ---- names -------------------------------------------------------------------------------------


def test_a_name_squatted_first_makes_the_other_users_run_a_suffixed_one(acl_server, tmp_path):
    acl_server.client().flushall()
    url_a, url_b = url_of(acl_server, "alice"), url_of(acl_server, "bob")
    with labstats.Stats(tmp_path / "a", name="exp", url=url_a, capture_git=False) as first:
        first.log(step=0, loss=1.0)
    with labstats.Stats(tmp_path / "b", name="exp", url=url_b, capture_git=False) as second:
        second.log(step=0, loss=2.0)
    as_user(acl_server, "alice").hsetnx(K.names, "paper", "alice.squatted")  # a bare claim
    with labstats.Stats(tmp_path / "c", name="paper", url=url_b, capture_git=False) as third:
        third.log(step=0, loss=3.0)
    assert (first.name, second.name, third.name) == ("exp", "exp.2", "paper.2")
    assert first.pending_spool is None
    assert second.pending_spool is None
    assert third.pending_spool is None
    lab = viewer(acl_server)
    assert (lab.run("exp").owner, lab.run("exp.2").owner) == ("alice", "bob")
    assert lab.run("exp.2").series("loss").values.tolist() == [2.0]
    assert lab.run("paper.2").id == third.run_id
    with pytest.raises(LabstatsError):
        lab.run("paper")  # names an id that has no run
    assert [r.name for r in lab.runs(name="paper")] == ["paper.2"]


def test_a_name_reserved_at_replay_as_the_owner(own_acl_server, tmp_path):
    """Redis away at the start: the writer reserves the name (HSETNX) as alice when it answers."""
    url = url_of(own_acl_server, "alice")
    own_acl_server.stop()
    stats = labstats.Stats(tmp_path / "late", name="late", url=url, capture_git=False, flush_interval=0.02)
    stats.log(step=0, loss=1.0)
    own_acl_server.start()
    stats.log(step=1, loss=2.0)
    stats.close(timeout=30)
    assert stats.pending_spool is None
    run = viewer(own_acl_server).run("late")
    assert run.owner == "alice"
    assert run.series("loss").values.tolist() == [1.0, 2.0]


# ---- spools ------------------------------------------------------------------------------------


def test_the_spool_of_an_owned_run_replays_as_its_owner(own_acl_server, tmp_path, capsys):
    url = url_of(own_acl_server, "alice")
    own_acl_server.stop()
    with labstats.Stats(tmp_path / "off", name="offline", url=url, tags=["t"], capture_git=False,
                        flush_interval=0.02) as stats:  # fmt: skip
        for step in range(500):
            stats.log(step=step, loss=float(step))
        stats.image("pic", np.zeros((4, 4), np.uint8))
        stats.retain("pic", last=1)
        stats.backdate(1.6e9)
    assert stats.pending_spool is not None
    own_acl_server.start()
    assert cli.main(["--url", url, "replay"]) == 0
    assert "replayed" in capsys.readouterr().out
    assert stats.pending_spool is None
    assert not refused(own_acl_server)
    lab = viewer(own_acl_server)
    [run] = lab.runs(tag="t", status="finished")
    assert (run.id, run.name, run.owner) == (stats.run_id, "offline", "alice")
    assert run.series("loss").values.tolist() == [float(s) for s in range(500)]
    assert float(run.meta["started"]) == 1.6e9


def test_the_writer_recovers_an_owned_run_as_its_owner(own_acl_server, tmp_path):
    url = url_of(own_acl_server, "bob")
    with labstats.Stats(tmp_path / "r", name="resilient", url=url, capture_git=False,
                        flush_interval=0.02) as stats:  # fmt: skip
        stats.log(step=0, loss=0.0)
        assert stats.flush(10)
        own_acl_server.stop()
        for step in range(1, 200):
            stats.log(step=step, loss=float(step))
        assert stats.flush(10)
        assert stats.pending_spool is not None
        own_acl_server.start()
        stats.log(step=200, loss=200.0)
        deadline = time.monotonic() + 30
        while stats.pending_spool is not None and time.monotonic() < deadline:
            stats.log(step=200, loss=200.0)
            time.sleep(0.1)
        assert stats.pending_spool is None
    assert not refused(own_acl_server)
    run = viewer(own_acl_server).run("resilient")
    assert run.owner == "bob"
    assert run.status == "finished"
    assert run.series("loss").values[:201].tolist() == [float(s) for s in range(201)]
