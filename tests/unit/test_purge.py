"""Purge and fsck: a trashed run's keys, archive and the store files only it refers to go;
files it shares with another run stay (the store is content-addressed); fsck then finds no
orphan, and finds the ones planted. Real redis-server, real artifact store, real archives."""

import shutil
import time

import numpy as np
import pytest
import redis
from conftest import RedisServer, wait_for

import labstats
from labstats.config import LabstatsError
from labstats.curation import Curation
from labstats.format.keys import Keys
from labstats.ops import archive as archiving
from labstats.ops import purge
from labstats.store import ArtifactStore, default_artifact_dir

K = Keys()
SHARED_IMAGE = np.full((16, 16, 3), 7, np.uint8)
SHARED_TENSOR = np.arange(20_000, dtype=np.float32)  # over tensor_file_bytes: a store file


def log_run(tmp_path, name: str, own: int) -> labstats.Stats:
    options = {"tensor_file_bytes": 64 * 1024, "capture_git": False}  # the default store, as the reader's
    with labstats.Stats(tmp_path / name, name=name, **options) as stats:
        for step in range(3):
            stats.log(step=step, loss=float(step))
        stats.image("shared", SHARED_IMAGE, step=0)
        stats.image("own", np.full((16, 16, 3), own, np.uint8), step=0)
        stats.log(step=3, weights=SHARED_TENSOR)
        stats.log(step=4, mine=SHARED_TENSOR + own)
    return stats


@pytest.fixture
def two_runs(url, tmp_path):
    a = log_run(tmp_path, "a", own=1)
    b = log_run(tmp_path, "b", own=2)
    return redis.Redis.from_url(url), ArtifactStore(default_artifact_dir()), a, b


def trash(client, run_id: str) -> None:
    Curation(client, actor="test", writer="default").trash(run_id)


def files_of(store: ArtifactStore) -> set[str]:
    return {p.name for p in store.root.glob("??/*")}


def reads_whole(lab, run_id: str, own: int) -> None:
    run = lab.run(run_id)
    np.testing.assert_array_equal(run.series("weights").values[0], SHARED_TENSOR)
    np.testing.assert_array_equal(run.series("mine").values[0], SHARED_TENSOR + own)
    for name in ("shared", "own"):
        (record,) = run.media(name)
        assert lab.artifacts.read(record["digest"])  # the original, its SHA-256 checked


def test_a_purge_removes_what_only_its_run_held_and_fsck_finds_nothing(two_runs, tmp_path, lab):
    client, store, a, b = two_runs
    before = files_of(store)
    assert len(before) == 6  # the shared image and tensor, and each run's own image and tensor
    trash(client, a.run_id)
    (done,) = purge.purge(
        client, K, [a.run_id], archive_dir=tmp_path / "archive", store=store, min_file_age=0
    )
    assert done.files == 2  # a's own image and tensor
    assert done.kept_shared == 2  # the shared image and tensor stay for b
    assert not list(client.scan_iter(f"ls:run:{a.run_id}*"))
    assert not client.exists(K.annotations(a.run_id))
    assert client.hget(K.names, "a") is None  # the name is free again
    assert [r.id for r in lab.runs()] == [b.run_id]
    assert lab.runs(trashed=True) == []
    assert len(files_of(store)) == 4
    reads_whole(lab, b.run_id, own=2)
    report = purge.fsck(client, K, tmp_path / "archive", store)
    assert report.clean, purge.report_text(report)
    assert report.missing_files == []
    audit = client.xrange(K.audit("archiver"))
    assert [e[1][b"action"] for e in audit] == [b"purge"]


def test_a_purged_archived_run_loses_its_file_and_archived_runs_keep_their_shared_files(
    two_runs, tmp_path, lab
):
    client, store, a, b = two_runs
    archive_dir = lab.archive_dir = tmp_path / "archive"
    for run in (a, b):
        archiving.archive(lab, lab.run(run.run_id), archive_dir, force=True)
    assert len(list(archive_dir.glob("*.parquet"))) == 2
    trash(client, a.run_id)
    (done,) = purge.purge(client, K, [a.run_id], archive_dir=archive_dir, store=store, min_file_age=0)
    assert done.archive
    assert [p.stem for p in archive_dir.glob("*.parquet")] == [b.run_id]
    assert done.kept_shared == 2  # the shared tensor is referred to from b's archive
    reads_whole(lab, b.run_id, own=2)
    assert purge.fsck(client, K, archive_dir, store).clean


def test_a_run_not_in_the_trash_or_protected_is_refused_and_nothing_goes(two_runs, tmp_path):
    client, store, a, b = two_runs
    keys_before = sorted(client.scan_iter("ls:run:*"))
    with pytest.raises(LabstatsError, match="not in the trash"):
        purge.purge(client, K, [a.run_id], archive_dir=None, store=store, min_file_age=0)
    curation = Curation(client, actor="test", writer="default")
    curation.change(b.run_id, protected=True)
    client.hset(K.annotations(b.run_id), "trashed", f"{time.time():.3f}")  # a raw write: protect still holds
    with pytest.raises(LabstatsError, match="protected"):
        purge.purge(client, K, [b.run_id], archive_dir=None, store=store, min_file_age=0)
    assert sorted(client.scan_iter("ls:run:*")) == keys_before
    assert len(files_of(store)) == 6


def test_due_runs_are_past_the_retention_by_their_annotations_and_by_this_box(two_runs):
    client, _, a, b = two_runs
    trash(client, a.run_id)
    trash(client, b.run_id)
    now = time.time()
    assert purge.due(client, K, retention_days=30, now=now).ids == []
    later = now + 31 * 86400  # the box saw both in the trash at `now`: a month later, due
    assert sorted(purge.due(client, K, retention_days=30, now=later).ids) == sorted([a.run_id, b.run_id])
    # A backdated trash time (the web box writes annotations) waits for this box's own count.
    client.hset(K.annotations(b.run_id), "trashed", "1.0")
    client.hdel(K.trash_seen, b.run_id)
    found = purge.due(client, K, retention_days=30, now=now)
    assert found.ids == []
    assert [run_id for run_id, _ in found.waiting] == [b.run_id]
    # A purge asked for in the viewer is said, not done; a protected run is never due.
    client.hset(K.annotations(a.run_id), "purge", "requested")
    assert purge.due(client, K, retention_days=30, now=now).asked == [a.run_id]
    client.hset(K.annotations(a.run_id), "protected", "1")
    assert purge.due(client, K, retention_days=30, now=later).ids == [b.run_id]


def test_young_files_are_left_for_a_run_whose_record_may_still_be_spooled(two_runs, tmp_path):
    client, store, a, _ = two_runs
    trash(client, a.run_id)
    (done,) = purge.purge(client, K, [a.run_id], archive_dir=None, store=store)  # default: a day
    assert done.files == 0
    assert len(files_of(store)) == 6
    report = purge.fsck(client, K, None, store)
    assert len(report.orphan_files) == 2  # said by fsck, left for a later purge or by hand


def test_fsck_finds_what_was_planted(url, tmp_path):
    client = redis.Redis.from_url(url)
    store = ArtifactStore(default_artifact_dir())
    log_run(tmp_path, "real", own=3)
    client.set("ls:run:ghost.20261205-000000-abcdef:s:0:c:0", b"f")
    client.hset(K.names, "gone", "ghost.20261205-000000-abcdef")
    client.sadd(K.status("running"), "nobody")
    client.hset(K.annotations("nobody"), "note", "left behind")
    orphan = store.put(b"no run refers to me")
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "ghost.20261205-000000-abcdef.parquet").write_bytes(b"PAR1")
    report = purge.fsck(client, K, tmp_path / "archive", store)
    assert report.orphan_keys == ["ls:run:ghost.20261205-000000-abcdef:s:0:c:0", K.annotations("nobody")]
    assert sorted(report.orphan_index_entries) == sorted(
        [f"{K.names} 'gone'", f"{K.status('running')} nobody"]
    )
    assert [p.rsplit("/", 1)[1] for p in report.orphan_archives] == ["ghost.20261205-000000-abcdef.parquet"]
    assert report.orphan_files == [orphan]
    assert not report.clean


def test_the_web_box_prunes_its_copies_of_a_purged_run_and_only_those(two_runs, tmp_path, lab, redis_server):
    client, store, a, _ = two_runs
    archive_dir = lab.archive_dir = tmp_path / "archive"
    archiving.archive(lab, lab.run(a.run_id), archive_dir, force=True)
    # The web box: a replica of the master, and the copies the training box pushed.
    follow = ("--replicaof", "127.0.0.1", str(redis_server.port), "--appendonly", "no")
    replica = RedisServer(tmp_path / "replica", extra_args=follow)
    replica.start()
    try:
        web = replica.client()
        copies, archive_copies = ArtifactStore(tmp_path / "copies"), tmp_path / "archive-copies"
        shutil.copytree(store.root, copies.root)
        shutil.copytree(archive_dir, archive_copies)
        assert wait_for(
            lambda: web.execute_command("ROLE")[3] == b"connected" and web.exists(K.run(a.run_id))
        )
        # While the run is whole, nothing is a stale copy.
        kept = purge.prune_copies(web, K, archive_copies, copies, min_age=0)
        assert (kept.archives, kept.files, kept.refused) == ([], [], "")
        trash(client, a.run_id)
        purge.purge(client, K, [a.run_id], archive_dir=archive_dir, store=store, min_file_age=0)
        assert wait_for(lambda: not web.exists(K.run(a.run_id)))
        # A master is no replica (its link cannot be checked): refused, nothing removed.
        assert "not a replica" in purge.prune_copies(client, K, archive_copies, copies, min_age=0).refused
        too_many = purge.prune_copies(web, K, archive_copies, copies, min_age=0, max_share=0.1)
        assert "would go" in too_many.refused
        pruned = purge.prune_copies(web, K, archive_copies, copies, min_age=0)
        assert pruned.refused == ""
        assert pruned.archives == [f"{a.run_id}.parquet"]
        assert len(pruned.files) == 2  # a's own image and tensor; the shared ones stay for b
        assert files_of(copies) == files_of(store)
    finally:
        replica.stop()
