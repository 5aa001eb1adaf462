import os
import subprocess
import sys
import time
from pathlib import Path

import labstats
from labstats import cli


def test_ls_show_export_tail(tmp_path, url, capsys):
    with labstats.Stats(tmp_path / "exp<1>", config={"lr": 0.1}, tags=["t"]) as stats:
        for i in range(5):
            stats.log(step=i, loss=1.0 / (i + 1))
    assert cli.main(["ls"]) == 0
    assert "exp<1>" in capsys.readouterr().out
    assert cli.main(["ls", "--param", "lr=0.1", "--status", "finished"]) == 0
    assert "exp<1>" in capsys.readouterr().out
    assert cli.main(["show", "exp<1>"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out
    assert '"lr": 0.1' in out
    assert "loss" in out
    assert cli.main(["export", "exp<1>", "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x.csv")
    assert (tmp_path / "x.csv").read_text().splitlines()[0] == "idx,loss"
    assert cli.main(["tail", "exp<1>", "loss", "-n", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["3\t0.25", "4\t0.2"]


def test_errors_are_one_clear_line(url, capsys):
    assert cli.main(["show", "missing"]) == 1
    assert capsys.readouterr().err.strip() == "labstats: no run named 'missing' (try `labstats ls`)"
    assert cli.main(["--url", "redis://127.0.0.1:1/0", "ls"]) == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in capsys.readouterr().err


def test_every_command_has_plain_help():
    for command in ("ls", "show", "export", "tail", "regenerate", "replay"):
        out = subprocess.run(
            [sys.executable, "-m", "labstats.cli", command, "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0
        assert "usage: labstats " + command in out.stdout
        assert "``" not in out.stdout  # no reStructuredText markup


def test_params_take_plain_values_and_ranges(tmp_path, url, capsys):
    for name, config in (("a", {"lr": 0.01, "opt": "sweep-0.01"}), ("b", {"lr": 0.5, "opt": "adam"})):
        with labstats.Stats(tmp_path / name, config=config):
            pass

    def listed(*params):
        assert cli.main(["ls", *[x for p in params for x in ("--param", p)]]) == 0
        lines = capsys.readouterr().out.splitlines()[1:]
        return sorted(line.split()[0] for line in lines)

    assert listed("opt=sweep-0.01") == ["a"]
    assert listed("lr=1e-3..0.1") == ["a"]
    assert listed("lr=0.1..") == ["b"]
    assert listed("lr=..1") == ["a", "b"]
    assert listed('opt="adam"') == ["b"]


def test_ls_json_says_the_status_the_table_says(tmp_path, url, capsys):
    import json

    stats = labstats.Stats(tmp_path / "stale")
    stats.flush()
    lab = labstats.connect(url)
    lab.redis.hset(f"ls:run:{stats.run_id}", "heartbeat", "1")  # its process went silent long ago
    assert cli.main(["ls", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["status"] == "crashed"
    stats.close()


def test_tail_follow_ends_when_the_run_ends(tmp_path, url):
    script = (
        "import time, labstats\n"
        "with labstats.Stats(__import__('sys').argv[1], name='live', flush_interval=0.05) as s:\n"
        "    for i in range(20):\n"
        "        s.log(step=i, v=float(i)); time.sleep(0.05)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "live")])
    labstats_ready = labstats.connect(url)
    for _ in range(100):
        if labstats_ready.runs(name="live"):
            break
        __import__("time").sleep(0.05)
    follow = subprocess.run(
        [sys.executable, "-m", "labstats.cli", "tail", "live", "v", "-f", "-n", "0", "--interval", "0.1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    writer.wait(30)
    assert follow.returncode == 0
    assert follow.stderr.strip() == "run live finished"
    assert follow.stdout.splitlines()[-1] == "19\t19.0"


def test_output_to_a_closed_pipe_ends_quietly(tmp_path, url):
    for n in range(30):
        with labstats.Stats(tmp_path / f"r{n}"):
            pass
    shell = f"{sys.executable} -m labstats.cli ls | head -n 1"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stderr == ""


def test_commands_that_write_refuse_a_config_of_several_stores(tmp_path, url, monkeypatch, capsys):
    from labstats import cli

    with labstats.Stats(tmp_path / "r", url=url) as stats:
        stats.log(step=0, loss=1.0)
    config = tmp_path / "config.toml"
    config.write_text(f'[[sources]]\nname = "a"\nurl = "{url}"\n\n[[sources]]\nname = "b"\nurl = "{url}"\n')
    monkeypatch.delenv("LABSTATS_URL")
    monkeypatch.setenv("LABSTATS_CONFIG", str(config))
    assert cli.main(["ls"]) == 0
    assert "r " in capsys.readouterr().out
    for command in (["archive", "r"], ["unarchive", "r"], ["replay"]):
        assert cli.main(command) == 1
        assert "works on one store" in capsys.readouterr().err


def test_a_run_with_a_hostile_start_or_end_does_not_stop_ls_or_show(tmp_path, url, capsys):
    """Any training user may write any run's record (and import-tb may store a NaN start):
    such a time reads as unknown, in the list and on the run, and every other run still lists."""
    import json

    for name in ("good", "nan", "text", "huge", "inf"):
        with labstats.Stats(tmp_path / name):
            pass
    lab = labstats.connect(url)
    for name, value in (("nan", "nan"), ("text", "not-a-time"), ("huge", "1e300"), ("inf", "-inf")):
        lab.redis.hset(f"ls:run:{lab.run(name).id}", mapping={"started": value, "ended": value})
    assert cli.main(["ls"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert sorted(rows) == ["good", "huge", "inf", "nan", "text"]
    assert rows["nan"].split()[2] == "-"  # STARTED: unknown
    assert rows["good"].split()[2] != "-"
    assert cli.main(["ls", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    for name in ("nan", "text", "huge", "inf"):
        assert cli.main(["show", name]) == 0
        assert "started   -   ended -" in capsys.readouterr().out
    assert cli.main(["ls", "--status", "finished"]) == 0  # the filtered list sorts by start
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_archive_by_a_user_who_cannot_write_the_archive_says_who_can(tmp_path, url, capsys, monkeypatch):
    """`labstats archive RUN` as a training user (the README lists it) was a PermissionError
    traceback: the archive folder and the deletes belong to the archive account. The tests
    run as root, for whom every folder is writable: os.access answers as for that user."""
    with labstats.Stats(tmp_path / "ended", name="ended") as stats:
        stats.log(step=0, loss=1.0)
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != archive_dir and real_access(path, mode)
    )
    assert cli.main(["archive", "ended", "--dir", str(archive_dir)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"labstats: cannot write the archive folder {archive_dir}; on a lab's training box the archive "
        "account does it: sudo labstats-archiver archive RUN..."
    )
    assert list(archive_dir.iterdir()) == []


# ---- annotations, the trash and the audit ---------------------------------------------------


def log_as(server, user, tmp_path, name):
    from conftest import password

    url = server.url_for(user, password(user))
    with labstats.Stats(tmp_path / name, name=name, url=url, capture_git=False, tags=["logged"]) as stats:
        stats.log(step=0, loss=1.0)
    return url, stats.run_id


def test_a_training_user_annotates_trashes_and_restores_its_run_from_the_cli(
    acl_server, tmp_path, capsys, monkeypatch
):
    acl_server.client().flushall()
    alice, run_id = log_as(acl_server, "alice", tmp_path, "alices")

    def cli_as(*argv):
        code = cli.main(["--url", alice, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert cli_as("tag", "alices", "baseline", "good")[0] == 0
    assert cli_as("untag", run_id, "logged")[0] == 0
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("# Why\nit *worked*\n"))
    assert cli_as("note", "alices", "-")[0] == 0
    assert cli_as("rename", "alices", "the baseline")[0] == 0
    assert cli_as("project", "alices", "vision")[0] == 0
    assert cli_as("star", "alices")[0] == 0
    assert cli_as("protect", "alices")[0] == 0
    code, out, err = cli_as("show", "alices")
    assert code == 0
    assert "run       the baseline" in out
    assert "project   vision" in out
    assert "tags      baseline, good" in out
    assert "starred, protected" in out
    assert "  it *worked*" in out
    code, _, err = cli_as("trash", "alices")
    assert code == 2
    assert err == f"labstats: run {run_id} is protected: unprotect it before trashing it\n"
    assert cli_as("unprotect", "alices")[0] == 0
    code, out, _ = cli_as("trash", "alices")
    assert code == 0
    assert "(in the trash)" in out
    assert run_id not in cli_as("ls")[1]
    code, out, _ = cli_as("ls", "--trashed")
    assert run_id in out
    assert "the baseline" in out
    assert "trashed" in out
    assert cli_as("restore", "alices")[0] == 0
    assert "the baseline" in cli_as("ls", "--project", "vision")[1]
    code, out, _ = cli_as("audit", "alices")
    lines = out.splitlines()
    assert code == 0
    assert len(lines) == 10  # one entry per change that was made (the refused trash stored nothing)
    assert lines[0].split()[2:6] == ["alice", "cli", "restore", run_id]
    assert "name:  -> the baseline" in out
    assert cli_as("audit", "--limit", "2")[1].count("\n") == 2


def test_someone_elses_run_is_refused_in_one_line_and_audited(acl_server, tmp_path, capsys):
    acl_server.client().flushall()
    alice, _ = log_as(acl_server, "alice", tmp_path, "alices")
    _, bobs = log_as(acl_server, "bob", tmp_path, "bobs")
    for argv in (["tag", "bobs", "x"], ["trash", "bobs"], ["rename", bobs, "mine"], ["note", "bobs", "hi"]):
        assert cli.main(["--url", alice, *argv]) == 2
        out, err = capsys.readouterr()
        assert err.startswith(f"labstats: Redis user alice may not change {bobs} (bob's run): ")
        assert err.endswith("only its owner or an editor in the viewer can\n")
        assert "Traceback" not in err
        assert err.count("\n") == 1
    assert not acl_server.client().exists(f"ls:ann:{bobs}")
    assert cli.main(["--url", alice, "audit", "bobs"]) == 0
    out = capsys.readouterr().out
    assert out.count("refused") == 4
    assert "trash" in out


def test_bad_input_and_a_replica_and_several_sources_are_refused_clearly(tmp_path, url, capsys, monkeypatch):
    with labstats.Stats(tmp_path / "r", name="r"):
        pass
    assert cli.main(["rename", "r", "two\nlines"]) == 2
    assert "control characters" in capsys.readouterr().err
    assert cli.main(["note", "r", "x" * (1 << 20)]) == 2
    assert "64 KiB" in capsys.readouterr().err
    assert cli.main(["star", "nope"]) == 1
    assert "no run named 'nope'" in capsys.readouterr().err
    from conftest import RedisServer, wait_for

    master_port = url.rsplit(":", 1)[1].split("/")[0]
    replica = RedisServer(
        tmp_path / "replica", extra_args=("--appendonly", "no", "--replicaof", "127.0.0.1", master_port)
    ).start()
    try:
        assert wait_for(lambda: replica.client().exists("ls:run:" + labstats.connect(url).run("r").id))
        assert cli.main(["--url", replica.url, "star", "r"]) == 1
        assert "a read-only copy (a replica)" in capsys.readouterr().err
    finally:
        replica.stop()
    config = tmp_path / "several.toml"
    config.write_text(f'[[sources]]\nname = "a"\nurl = "{url}"\n[[sources]]\nname = "b"\nurl = "{url}"\n')
    monkeypatch.delenv("LABSTATS_URL")
    monkeypatch.setenv("LABSTATS_CONFIG", str(config))
    assert cli.main(["tag", "r", "x"]) == 1
    err = capsys.readouterr().err
    assert "run it on the training box as the run's owner, or change the run in the viewer" in err
    assert cli.main(["audit"]) == 0  # reading the audit works on every box
    assert capsys.readouterr().out == "no changes recorded\n"


def test_on_a_store_without_users_the_audit_names_who_ran_it(tmp_path, url, capsys):
    import getpass

    with labstats.Stats(tmp_path / "r", name="r"):
        pass
    assert cli.main(["tag", "r", "mine"]) == 0
    capsys.readouterr()
    assert cli.main(["audit", "--json"]) == 0
    import json

    [entry] = json.loads(capsys.readouterr().out)
    assert entry["who"] == getpass.getuser()
    assert entry["writer"] == "default"
    assert entry["changes"] == {"tags": [[], ["mine"]]}


def test_the_archiver_purges_a_trashed_run_sharing_files_and_fsck_finds_nothing(
    acl_server, tmp_path, capsys, monkeypatch
):
    """The issue's case, from the CLI and as the role's Redis users: alice's run shares an
    image and a tensor file with bob's; alice trashes hers, root's purge (the archiver's Redis
    user) removes it and its own files only; fsck finds 0 orphans; bob's run reads every
    file; a training user cannot purge."""
    import json

    import numpy as np
    from conftest import password

    from labstats.store import ArtifactStore, default_artifact_dir

    acl_server.client().flushall()
    monkeypatch.setenv("LABSTATS_ARCHIVE_DIR", str(tmp_path / "archive"))
    urls = {user: acl_server.url_for(user, password(user)) for user in ("alice", "bob", "archiver")}
    shared_image, shared_tensor = np.full((16, 16, 3), 7, np.uint8), np.arange(20_000, dtype=np.float32)
    ids = {}
    for user, own in (("alice", 1), ("bob", 2)):
        with labstats.Stats(tmp_path / user, name=f"{user}-run", url=urls[user], capture_git=False,
                            tensor_file_bytes=64 * 1024) as stats:  # fmt: skip
            stats.image("shared", shared_image, step=0)
            stats.image("own", np.full((16, 16, 3), own, np.uint8), step=0)
            stats.log(step=1, weights=shared_tensor, mine=shared_tensor + own)
        ids[user] = stats.run_id
    store = ArtifactStore(default_artifact_dir())
    files = list(store.root.glob("??/*"))
    assert len(files) == 6
    for path in files:  # older than the purge's one-day guard for runs still spooling
        os.utime(path, (1e9, 1e9))

    assert cli.main(["--url", urls["archiver"], "purge", "alice-run"]) == 1
    assert "is not in the trash" in capsys.readouterr().err
    assert cli.main(["--url", urls["alice"], "trash", "alice-run"]) == 0
    assert cli.main(["--url", urls["alice"], "purge", "--due", "--retention-days", "0"]) == 1
    assert "Redis user alice may not purge runs" in capsys.readouterr().err
    assert cli.main(["--url", urls["archiver"], "purge", "--due", "--retention-days", "1"]) == 0
    assert capsys.readouterr().out == "nothing to purge\n"  # trashed a moment ago: not due yet
    assert cli.main(["--url", urls["archiver"], "purge", "--due", "--retention-days", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"purged    {ids['alice']}  ")
    assert "2 files, 2 kept (other runs use them)" in out
    assert len(list(store.root.glob("??/*"))) == 4
    assert not acl_server.client().exists(f"ls:run:{ids['alice']}", f"ls:ann:{ids['alice']}")
    assert cli.main(["--url", urls["archiver"], "fsck", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clean"]
    assert report["orphan_keys"] == report["orphan_files"] == report["orphan_index_entries"] == []
    bobs = labstats.connect(urls["bob"]).run(ids["bob"])
    for name in ("shared", "own"):
        (record,) = bobs.media(name)
        assert bobs.lab.artifacts.read(record["digest"])  # its SHA-256 checked
    assert bobs.series("weights").values[-1].tolist() == shared_tensor.tolist()
    assert cli.main(["--url", urls["bob"], "audit", ids["alice"]]) == 0
    actions = [line.split()[4] for line in capsys.readouterr().out.splitlines()]
    assert actions == ["purge", "trash"]


def test_the_web_box_cannot_make_the_nightly_purge_remove_a_run_before_the_retention(
    acl_server, tmp_path, capsys, monkeypatch
):
    """The annotator may write any run's annotations: a web box taken over backdates bob's
    trash time to 1970 and asks for the purge of alice's. The nightly purge counts the
    retention from when the training box first saw a run in the trash, and only lists asked
    purges: both runs stay, restorable; root purges one by naming it."""
    from conftest import password

    acl_server.client().flushall()
    monkeypatch.setenv("LABSTATS_ARCHIVE_DIR", str(tmp_path / "archive"))
    urls = {user: acl_server.url_for(user, password(user)) for user in ("alice", "bob", "archiver")}
    ids = {user: log_as(acl_server, user, tmp_path, f"{user}-run")[1] for user in ("alice", "bob")}
    annotator = acl_server.client("annotator", password("annotator"))
    annotator.hset(f"ls:ann:{ids['bob']}", mapping={"trashed": "1", "trashed_by": "nobody"})
    annotator.hset(f"ls:ann:{ids['alice']}", mapping={"trashed": str(time.time()), "purge": "requested"})

    def nightly():
        assert cli.main(["--url", urls["archiver"], "purge", "--due", "--retention-days", "30"]) == 0
        return capsys.readouterr().out

    out = nightly()
    assert f"waiting   {ids['bob']}  first seen in the trash here" in out
    assert f"asked     {ids['alice']}  a purge was asked for in the viewer" in out
    assert "nothing to purge" in out
    assert all(acl_server.client().exists(f"ls:run:{i}") for i in ids.values())
    assert "nothing to purge" in nightly()  # the next night too: the first sight is kept
    # 31 days after the training box first saw bob's run in the trash, it goes.
    acl_server.client().hset("ls:purge:seen", ids["bob"], str(time.time() - 31 * 86400))
    assert f"purged    {ids['bob']}" in nightly()
    assert not acl_server.client().exists(f"ls:run:{ids['bob']}")
    assert acl_server.client().hkeys("ls:purge:seen") == [ids["alice"].encode()]
    assert cli.main(["--url", urls["archiver"], "purge", ids["alice"]]) == 0  # root, by name
    assert f"purged    {ids['alice']}" in capsys.readouterr().out
