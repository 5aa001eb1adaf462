"""Spools left by runs whose process ended while Redis was away: found, listed, replayed."""

import subprocess
import sys

import labstats
from labstats import cli
from labstats.write import spool

SCRIPT = """
import sys, labstats
with labstats.Stats(sys.argv[1], name="offline", flush_interval=0.02, url=sys.argv[2]) as stats:
    for i in range(2000):
        stats.log(step=i, loss=float(i))
print(stats.run_id)
"""


def log_while_redis_is_away(tmp_path, server) -> str:
    server.stop()
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "runs" / "offline"), server.url],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def test_an_orphaned_spool_is_listed_then_replayed_once(tmp_path, own_redis, capsys):
    run_id = log_while_redis_is_away(tmp_path, own_redis)
    [path] = spool.indexed()
    assert path.name == f"{run_id}.spool"
    own_redis.start()
    assert cli.main(["--url", own_redis.url, "ls"]) == 0
    listed = capsys.readouterr().out
    assert f"{run_id}  (only in {path})" in listed
    assert "`labstats replay` sends them" in listed

    assert cli.main(["--url", own_redis.url, "replay"]) == 0
    assert "replayed" in capsys.readouterr().out
    assert not path.exists()
    assert spool.indexed() == []
    run = labstats.connect(own_redis.url).run("offline")
    assert run.status == "finished"
    assert run.series("loss").idx.tolist() == list(range(2000))

    assert cli.main(["--url", own_redis.url, "replay", str(tmp_path)]) == 0
    assert "no spooled records" in capsys.readouterr().out


def test_replay_finds_spools_in_folders_and_keeps_them_while_redis_is_away(tmp_path, own_redis, capsys):
    log_while_redis_is_away(tmp_path, own_redis)
    spool.index_path().unlink()  # found by searching the folder, not from the index
    assert cli.main(["--url", own_redis.url, "replay", str(tmp_path)]) == 75  # try again later
    assert "cannot reach" in capsys.readouterr().err
    own_redis.start()
    assert cli.main(["--url", own_redis.url, "replay", str(tmp_path)]) == 0
    assert labstats.connect(own_redis.url).run("offline").series("loss").idx[-1] == 1999


def test_a_spool_its_process_still_holds_is_left_alone(tmp_path, url, capsys):
    held = spool.Spool(tmp_path / ".labstats-spool" / "20260101-000000-abcdef.spool")
    held.append(1, [(b"SET", b"ls:x", b"1")])  # open and locked, as by a live writer
    assert cli.main(["--url", url, "replay", str(tmp_path)]) == 0
    assert "busy" in capsys.readouterr().out
    assert held.path.exists()
    held.close()
    assert cli.main(["--url", url, "replay", str(tmp_path)]) == 0
    assert labstats.connect(url).redis.get("ls:x") == b"1"
