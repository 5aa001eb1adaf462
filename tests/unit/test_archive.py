"""The archive tier: a run moved to Parquet reads exactly as it did from Redis, frees its
points in Redis, comes back with unarchive, and is refused when it is not safe to move."""

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import password, same

import labstats
from labstats import cli
from labstats.ops import archive
from labstats.read import archive_file
from labstats.reader import Lab

WINDOWS = [(None, None), (0, 0), (5, 17), (100, 2500), (-10, 3), (2999, None), (None, 40), (10**6, None)]


def everything(run, names, in_order=None):
    """Every series of a run, whole and in windows, plus the other ways the reader reads.
    The last points in logging order only for series whose idx never went back (``in_order``,
    as the run was logged): an archive keeps idx order."""
    in_order = in_order if in_order is not None else {n for n in names if run.series_meta(n)["monotonic"]}
    out = {}
    for name in names:
        for start, stop in WINDOWS:
            s = run.series(name, start, stop)
            out[(name, start, stop)] = (s.idx, s.values, s.kind)
        out[(name, "latest")] = run.latest(name)
        if name in in_order:
            out[(name, "recent")] = run.recent(name, 7)
            out[(name, "steps")] = run.steps(name, 50)
    out["diff"], out["freeze"] = run.diff(), run.freeze()
    out["in_order"] = in_order
    return out


def assert_same_reads(before, after):
    assert before.keys() == after.keys()
    for key in before:
        a, b = before[key], after[key]
        if isinstance(a, tuple) and len(a) == 3 and isinstance(a[0], np.ndarray):
            assert same(a[0], b[0]), key
            assert a[2] == b[2], key
            if isinstance(a[1], np.ndarray):
                assert same(a[1], b[1]), key
            else:
                assert len(a[1]) == len(b[1]), key
                for x, y in zip(a[1], b[1], strict=True):
                    assert _same_value(x, y), (key, x, y)
        elif isinstance(a, np.ndarray):
            assert same(a, b), key
        elif isinstance(a, list):
            assert len(a) == len(b), key
            assert all(i == j and _same_value(x, y) for (i, x), (j, y) in zip(a, b, strict=True)), key
        else:
            assert _same_value(a, b), key


def _same_value(a, b):
    if isinstance(a, Exception):
        return type(a) is type(b) and str(a) == str(b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return same(a, b)


def log_mixed_run(tmp_path, name="mixed"):
    rng = np.random.default_rng(3)
    # Tensors of 16 KiB and more are files of the artifact store: "layer" is one, "weights" a blob.
    with labstats.Stats(
        tmp_path / name, config={"lr": 0.1}, flush_interval=0.01, tensor_file_bytes=2**14
    ) as stats:
        for step in range(3000):
            values = {"loss": float(rng.normal()), "count": step * 7, "ok": step % 3 == 0}
            if step == 1500:
                values["loss"] = float("nan")
            if step % 100 == 0:
                values["note"] = f"step {step}: λ ok"
                values["weights"] = rng.normal(size=(64, 32)).astype(np.float32)  # a blob (8 KiB)
                values["pair"] = {"a": [1, 2.5, None], "b": "x"}
            if step % 500 == 0:
                values["mixed"] = step if step % 1000 else "text"
                values["layer"] = rng.normal(size=(80, 64)).astype(np.float32)  # a file (20 KiB)
            stats.log(step=step, **values)
        # a resumed run: idx goes back for one series
        for step in range(10, 20):
            stats.log(step=step, loss=float(step))
    return stats.name


def test_an_archived_run_reads_exactly_as_before_and_frees_redis(tmp_path, lab, redis_server):
    name = log_mixed_run(tmp_path)
    run = lab.run(name)
    names = run.series_names(include_internal=True)
    before = everything(run, names)
    overview_before = run.overview("loss")
    keys_before = redis_server.client().dbsize()

    tensor_files = sorted(p for p in (tmp_path / "artifacts").rglob("*") if p.is_file())
    assert len(tensor_files) == 6  # "layer" at steps 0, 500... 2500

    done = archive.archive(lab, run, tmp_path / "archive")

    assert sorted(p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()) == tensor_files  # kept
    assert done.rows == sum(i["count"] for i in run.series_info().values())
    assert done.redis_bytes_freed > 200_000
    assert redis_server.client().dbsize() < keys_before / 3  # chunks, indexes and blobs gone
    archived = lab.run(name)
    assert archived.archived
    assert archived.meta["archive_digest"] == done.digest
    lab.archive_dir = tmp_path / "archive"
    assert archived.series_names(include_internal=True) == names
    assert_same_reads(before, everything(archived, names, before["in_order"]))
    # The overview keeps the series' extremes whichever tier it comes from.
    overview_after = archived.overview("loss")
    assert np.nanmax(overview_after.values) == np.nanmax(overview_before.values)
    assert np.nanmin(overview_after.values) == np.nanmin(overview_before.values)
    # The run list, filters and names work on the stub.
    assert [r.name for r in lab.runs(params={"lr": 0.1})] == [name]


def test_the_file_is_plain_parquet_with_typed_columns(tmp_path, lab):
    name = log_mixed_run(tmp_path)
    done = archive.archive(lab, lab.run(name), tmp_path / "archive")
    table = pq.read_table(done.path)
    assert str(table.schema.field("f").type) == "double"
    assert str(table.schema.field("i").type) == "int64"
    assert pq.ParquetFile(done.path).metadata.row_group(0).column(1).compression == "ZSTD"
    frame = table.to_pandas()
    count = frame[frame.series == "count"]
    assert count.idx.tolist() == list(range(3000))
    assert count.i.tolist() == [s * 7 for s in range(3000)]


def test_unarchive_brings_the_points_back_into_redis(tmp_path, lab):
    name = log_mixed_run(tmp_path)
    run = lab.run(name)
    names = run.series_names(include_internal=True)
    before = everything(run, names)
    archive.archive(lab, run, tmp_path / "archive")
    restored = archive.unarchive(lab, lab.run(name), tmp_path / "archive")
    run = lab.run(name)
    assert not run.archived
    assert restored == sum(i["count"] for i in run.series_info().values())
    assert_same_reads(before, everything(run, names, before["in_order"]))
    # ...and it can be archived again, to the same result.
    again = archive.archive(lab, run, tmp_path / "archive")
    lab.archive_dir = tmp_path / "archive"
    assert_same_reads(before, everything(lab.run(name), names, before["in_order"]))
    assert again.rows == restored


def test_a_window_of_a_long_archived_series_reads_few_row_groups(tmp_path, lab):
    with labstats.Stats(tmp_path / "long", flush_interval=0.05) as stats:
        for step in range(200_000):
            stats.log(step=step, v=float(step))
    done = archive.archive(lab, lab.run("long"), tmp_path / "archive")
    reader = archive_file.ArchiveFile(done.path)
    assert len(reader.meta["index"]["v"]["groups"]) >= 6
    s = reader.window("v", {"kind": "f"}, 150_000, 150_999)
    assert s.idx.tolist() == list(range(150_000, 151_000))
    assert s.values.tolist() == [float(i) for i in range(150_000, 151_000)]


def test_running_runs_are_refused_and_writes_during_archiving_abort_it(tmp_path, lab, monkeypatch):
    stats = labstats.Stats(tmp_path / "live", flush_interval=0.01)
    stats.log(step=0, v=1.0)
    assert stats.flush()
    with pytest.raises(labstats.LabstatsError, match="never said it ended"):
        archive.archive(lab, lab.run("live"), tmp_path / "archive")
    stats.close()

    # A write lands while the file is being written: nothing in Redis is deleted.
    real = archive.redis_batches

    def write_meanwhile(lab_, run_id, info, blobs):
        lab.redis.hset(lab.keys.series(run_id), "late", b'{"sid":9,"kind":"f","count":0,"last_chunk":-1}')
        yield from real(lab_, run_id, info, blobs)

    monkeypatch.setattr(archive, "redis_batches", write_meanwhile)
    with pytest.raises(labstats.LabstatsError, match="written to while it was archived"):
        archive.archive(lab, lab.run("live"), tmp_path / "archive")
    run = lab.run("live")
    assert not run.archived
    assert run.series("v").values.tolist() == [1.0]


def test_a_missing_archive_file_is_said_clearly(tmp_path, lab):
    with labstats.Stats(tmp_path / "gone") as stats:
        stats.log(step=0, v=1.0)
    done = archive.archive(lab, lab.run("gone"), tmp_path / "archive")
    done.path.unlink()
    lab.archive_dir = tmp_path / "archive"
    with pytest.raises(labstats.LabstatsError, match=r"is archived, but its file .* is not here"):
        lab.run("gone").series("v")
    assert archive_file.path_for(tmp_path, "20261125-163012-5f3a9c").name == "20261125-163012-5f3a9c.parquet"
    with pytest.raises(labstats.LabstatsError, match="cannot name an archive file"):
        archive_file.path_for(tmp_path, "../../etc/passwd")


def test_due_picks_old_ended_runs_and_the_cli_archives_them(tmp_path, lab, capsys, monkeypatch):
    for name in ("old", "new"):
        with labstats.Stats(tmp_path / name) as stats:
            stats.log(step=0, v=1.0)
    # Both ended long ago: their last heartbeat too (a run just closed still reads as running).
    lab.redis.hset(lab.keys.run(lab.run("old").id), mapping={"ended": "1000", "heartbeat": "1000"})
    lab.redis.hset(lab.keys.run(lab.run("new").id), "heartbeat", "2000")
    assert [r.name for r in archive.due(lab, 30, None)] == ["old"]
    assert [r.name for r in archive.due(lab, None, 1)] == ["old", "new"]  # oldest first
    assert archive.due(lab, None, 10**15) == []
    monkeypatch.setenv("LABSTATS_ARCHIVE_DIR", str(tmp_path / "archive"))
    assert cli.main(["archive", "--due", "--older-than", "30"]) == 0
    assert "archived  old" in capsys.readouterr().out
    assert (tmp_path / "archive" / f"{lab.run('old').id}.parquet").exists()
    assert cli.main(["unarchive", "old"]) == 0
    assert "restored  old  2 points" in capsys.readouterr().out  # the value and its call's time
    assert cli.main(["archive", "--due"]) == 1
    assert "--due needs" in capsys.readouterr().err
    assert cli.parse_bytes("8G") == 8 * 2**30
    assert cli.parse_bytes("512MiB") == 512 * 2**20


def test_the_archiver_redis_user_may_archive_an_owned_run_and_its_owner_may_not(tmp_path, acl_server):
    ops = acl_server.client()
    ops.flushall()
    url = acl_server.url_for("alice", password("alice"))
    with labstats.Stats(tmp_path / "acl", url=url, tags=["kept"]) as stats:
        stats.log(step=0, v=1.0)
    assert stats.run_id.startswith("alice.")
    alice = Lab(acl_server.client("alice", password("alice")))
    with pytest.raises(
        labstats.LabstatsError, match=r"Redis refused .*no permissions to run the .del. command"
    ):
        archive.archive(alice, alice.run("acl"), tmp_path / "archive")
    assert not alice.run("acl").archived
    archiver = Lab(acl_server.client("archiver", password("archiver")), archive_dir=tmp_path / "archive")
    viewer = Lab(acl_server.client("viewer", password("viewer")), archive_dir=tmp_path / "archive")
    done = archive.archive(archiver, archiver.run("acl"), tmp_path / "archive")
    assert done.path.name == f"{stats.run_id}.parquet"
    assert done.redis_bytes_freed
    for listed in (
        viewer.runs(),
        viewer.runs(tag="kept"),
        viewer.runs(status="finished"),
        viewer.runs(name="acl"),
    ):
        assert [(r.id, r.archived, r.owner) for r in listed] == [(stats.run_id, True, "alice")]
    assert viewer.run("acl").series("v").values.tolist() == [1.0]
    assert archive.unarchive(archiver, archiver.run("acl"), tmp_path / "archive") == 2  # value + time
    assert [(r.id, r.archived) for r in viewer.runs(tag="kept", status="finished")] == [(stats.run_id, False)]
    assert viewer.run("acl").series("v").values.tolist() == [1.0]
    # ...and its owner logs to it no more, but could: its keys are still hers alone.
    assert acl_server.client("alice", password("alice")).hset(f"ls:run:{stats.run_id}", "note", "x") == 1


def test_archive_files_are_named_by_owned_run_ids_and_nothing_else():
    for run_id in ("alice.20261204-101500-3fa2c1", "_svc.20261204-101500-3fa2c1"):
        assert archive_file.path_for("/a", run_id).name == f"{run_id}.parquet"
    for bad in ("..", "a/../b", ".hidden", "../x", "a/b", "-rf", ""):
        with pytest.raises(labstats.LabstatsError):
            archive_file.path_for("/a", bad)


def test_the_viewer_shows_an_archived_run_and_says_when_its_file_is_missing(tmp_path, url, lab):
    from labstats.viewer import create_app
    from labstats.viewer.sources import Source

    with labstats.Stats(tmp_path / "shown") as stats:
        for step in range(50):
            stats.log(step=step, loss=1.0 / (step + 1), note=f"n{step}")
    run_id = lab.run("shown").id
    done = archive.archive(lab, lab.run("shown"), tmp_path / "archive")
    app = create_app({"local": Source("local", url, archive_dir=str(tmp_path / "archive"))})
    client = app.test_client()
    body = client.get(f"/api/runs/local/{run_id}/series/loss?start=10&stop=12").get_json()
    assert body["idx"] == [10, 11, 12]
    assert body["values"] == [1 / 11, 1 / 12, 1 / 13]
    page = client.get(f"/runs/local/{run_id}")
    assert page.status_code == 200
    assert b"n49" in page.data
    assert b'class="badge archived"' in page.data
    listed = client.get("/api/runs").get_json()["runs"]
    assert [r["archived"] for r in listed] == [True]
    assert b'class="badge archived"' in client.get("/").data
    done.path.unlink()
    missing = client.get(f"/api/runs/local/{run_id}/series/loss")
    assert missing.status_code == 404
    assert "not here" in missing.get_json()["error"]


@pytest.mark.parametrize("ended", ["not-a-number", "nan", "inf", "1000", "", "99999999999"])
def test_a_live_run_forged_as_finished_is_never_due(tmp_path, lab, capsys, monkeypatch, ended):
    """Finding 6: `HSET status finished ended not-a-number` on a live run made the nightly job
    take it. A fresh heartbeat means running, whatever the status says; an end that is not a
    past unix time is no end."""
    stats = labstats.Stats(tmp_path / "live", flush_interval=0.01)
    stats.log(step=0, v=1.0)
    assert stats.flush()
    run_id = stats.run_id
    lab.redis.hset(lab.keys.run(run_id), mapping={"status": "finished", "ended": ended})
    assert archive.due(lab, 30, None) == []
    assert archive.due(lab, 0, None) == []
    assert archive.due(lab, None, 1) == []  # however full Redis is
    monkeypatch.setenv("LABSTATS_ARCHIVE_DIR", str(tmp_path / "archive"))
    assert cli.main(["archive", "--due", "--older-than", "0", "--memory-above", "1"]) == 0
    assert capsys.readouterr().out.strip() == "nothing to archive"
    stats.log(step=1, v=2.0)
    stats.close()
    assert lab.run("live").series("v").values.tolist() == [1.0, 2.0]
    assert not lab.run("live").archived


def test_only_a_past_valid_end_and_a_heartbeat_older_than_the_age_make_a_run_due(tmp_path, lab):
    with labstats.Stats(tmp_path / "done") as stats:
        stats.log(step=0, v=1.0)
    key = lab.keys.run(lab.run("done").id)
    day = 86400
    now = __import__("time").time()

    def due_with(**fields):
        lab.redis.hset(key, mapping={k: str(v) for k, v in fields.items()})
        return [r.name for r in archive.due(lab, 30, None)]

    assert due_with(ended=now - 40 * day, heartbeat=now - 40 * day) == ["done"]
    assert due_with(ended="nan", heartbeat=now - 40 * day) == []  # an unparsable end is not 0
    assert due_with(ended=now + 40 * day, heartbeat=now - 40 * day) == []  # an end in the future
    assert due_with(ended=now - 40 * day, heartbeat=now - 10 * day) == []  # written to 10 days ago
    assert due_with(ended=now - 40 * day, heartbeat="garbage") == []  # cannot tell it is over
    assert due_with(ended=now - 40 * day, heartbeat=now - 40 * day, status="running") == []
    assert due_with(status="crashed") == ["done"]


# ---- an archive file is data from a box: checked before it is read ------------------------


def planted_archive(path, run_id, rows, *, blob=0, meta_changes=None, dictionary=True):
    """A Parquet file shaped like a labstats archive whose one row group holds ``rows``
    points of series v: zeros (or ``blob`` zero bytes each, as objects), a few KB on disk.
    With ``dictionary`` the blob is stored once (its footer says a few KB), else in every row
    (its footer says rows * blob bytes uncompressed)."""
    import json

    import pyarrow as pa

    kind = "o" if blob else "f"
    columns = {
        "series": pa.repeat(pa.scalar("v"), rows),
        "idx": pa.array(np.zeros(rows, dtype=np.int64)),
        "kind": pa.repeat(pa.scalar(kind), rows),
        "f": pa.nulls(rows, pa.float64()) if blob else pa.array(np.zeros(rows)),
        "i": pa.nulls(rows, pa.int64()),
        "b": pa.nulls(rows, pa.bool_()),
        "o": pa.repeat(pa.scalar(b"\0" * blob, pa.large_binary()), rows) if blob
        else pa.nulls(rows, pa.large_binary()),
    }  # fmt: skip
    meta = {
        "format": archive_file.FORMAT, "run_id": run_id, "run": {}, "series": {"v": {"sid": 1, "kind": kind}},
        "index": {"v": {"kinds": [kind], "groups": [[0, 0, 0, rows, kind]]}}, "rows": rows, "digest": "",
        **(meta_changes or {}),
    }  # fmt: skip
    table = pa.table(columns, schema=archive_file.table_schema(pa))
    with pq.ParquetWriter(path, table.schema, compression="zstd", use_dictionary=dictionary) as writer:
        writer.write_table(table, row_group_size=rows)
        writer.add_key_value_metadata({archive_file.META_KEY: json.dumps(meta)})
    return path


def test_a_small_archive_file_that_decompresses_to_a_lot_is_refused_before_it_is_read(tmp_path, lab):
    """Finding 10: a 1 MB Parquet file in the archive folder took 2.9 GB in a viewer worker.
    The footer says how much the file holds: over the limits, it is never decoded."""
    with labstats.Stats(tmp_path / "victim") as stats:
        stats.log(step=0, v=1.0)
    done = archive.archive(lab, lab.run("victim"), tmp_path / "archive")
    planted_archive(done.path, lab.run("victim").id, 4_000_000)  # 4M zeros, 32 MB decoded
    assert done.path.stat().st_size < 100_000
    with pytest.raises(labstats.LabstatsError, match=r"row group 0 holds 4,000,000 rows; at most 32,768"):
        archive_file.ArchiveFile(done.path)
    lab.archive_dir = tmp_path / "archive"
    with pytest.raises(labstats.LabstatsError, match="not read: row group 0 holds 4,000,000 rows"):
        lab.run("victim").series("v")
    with pytest.raises(labstats.LabstatsError, match="4,000,000 rows"):
        archive.unarchive(lab, lab.run("victim"), tmp_path / "archive")


def test_an_archive_row_group_over_the_byte_limit_is_refused(tmp_path, monkeypatch):
    # 1,024 objects of 16 KiB of zeros: 16 MiB decoded from a file of a few KB (the real
    # limit, 256 MiB, works the same; lowered so the test does not build 256 MiB).
    assert archive_file.MAX_GROUP_BYTES == 256 << 20
    plain = planted_archive(tmp_path / "plain.parquet", "r", 1_024, blob=16_384, dictionary=False)
    repeated = planted_archive(tmp_path / "repeated.parquet", "r", 1_024, blob=16_384)
    assert plain.stat().st_size < 100_000
    assert repeated.stat().st_size < 100_000
    for path in (plain, repeated):  # within every limit
        assert len(archive_file.ArchiveFile(path).window("v", {"kind": "o"}, None, None)) == 1_024
    monkeypatch.setattr(archive_file, "MAX_GROUP_BYTES", 8 << 20)
    # Stored in every row: the footer says how much it decodes to; refused before any read.
    with pytest.raises(
        labstats.LabstatsError,
        match=r"row group 0 holds 16,\d{3},\d{3} bytes uncompressed; at most 8,388,608",
    ):
        archive_file.ArchiveFile(plain)
    # Stored once and repeated (a dictionary): the footer says a few KB; the rows' values are
    # added up from the dictionary before any is copied.
    reader = archive_file.ArchiveFile(repeated)
    with pytest.raises(labstats.LabstatsError, match="values decode to over 8,388,608 bytes"):
        reader.window("v", {"kind": "o"}, None, None)


def test_an_archive_over_the_row_limit_is_refused(tmp_path, monkeypatch):
    path = planted_archive(tmp_path / "many.parquet", "r", 1_000)
    archive_file.ArchiveFile(path)  # within every limit
    monkeypatch.setattr(archive_file, "MAX_ROWS", 999)
    with pytest.raises(labstats.LabstatsError, match="holds 1,000 rows; at most 999"):
        archive_file.ArchiveFile(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage" * 1000, b"PAR1" + b"\xff" * 100 + b"PAR1", b"PAR1" + b"\0" * 100 + b"\x10\0\0\0PAR1"],
)
def test_garbage_in_the_archive_folder_reads_as_a_clear_error(tmp_path, content):
    path = tmp_path / "r.parquet"
    path.write_bytes(content)
    with pytest.raises(labstats.LabstatsError, match="not a readable labstats archive"):
        archive_file.ArchiveFile(path)


@pytest.mark.parametrize(
    "changes",
    [
        {"index": {"v": {"kinds": ["f"], "groups": [[5, 0, 0, 10, "f"]]}}},  # no such row group
        {"index": {"v": {"kinds": ["f"], "groups": [[0, 0, 0, 99, "f"]]}}},  # not its row count
        {"index": {"v": {"kinds": ["x"], "groups": [[0, 0, 0, 10, "f"]]}}},  # no such kind
        {"index": {"v": {"kinds": ["f"], "groups": [["0", 0, 0, 10, "f"]]}}},
        {
            "index": {"v": {"kinds": ["f"], "groups": [[0, 0, 0, 10, "f"]] * 1000}}
        },  # one group read 1000 times
        {"index": []},
        {"series": "v"},
        {"run_id": 7},
    ],
)
def test_archive_metadata_that_does_not_match_the_file_is_refused(tmp_path, changes):
    path = planted_archive(tmp_path / "r.parquet", "r", 10, meta_changes=changes)
    with pytest.raises(labstats.LabstatsError, match="malformed archive metadata"):
        archive_file.ArchiveFile(path)
