"""The Redis users the redis role writes, loaded into a real redis-server: the logger works
as a training user (alice: each training user has a Redis user of its own), and every
command outside what the logger needs is refused. What one training user may do to
another's runs: test_owners.py."""

import numpy as np
import pytest
import redis
from conftest import password

import labstats

# Commands a training user must never run: scripting (a script can stall the server and it
# cannot kill it), server administration, whole-keyspace and pub/sub commands.
TRAINING_USER_DENIED = [
    ("EVAL", "while true do end", "0"),
    ("EVAL", "return 1", "0"),
    ("EVAL_RO", "return 1", "0"),
    ("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"),
    ("SCRIPT", "LOAD", "return 1"),
    ("SCRIPT", "KILL"),
    ("FUNCTION", "LOAD", "#!lua name=evil\nredis.register_function('f', function() return 1 end)"),
    ("FUNCTION", "DELETE", "evil"),
    ("FUNCTION", "FLUSH"),
    ("FCALL", "f", "0"),
    ("CONFIG", "SET", "appendonly", "no"),
    ("CONFIG", "GET", "*"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"),
    ("SAVE",),
    ("BGSAVE",),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("ACL", "LIST"),
    ("CLIENT", "KILL", "ID", "1"),
    ("CLIENT", "PAUSE", "1000"),
    ("MONITOR",),
    ("SWAPDB", "0", "1"),
    ("MIGRATE", "127.0.0.1", "1", "ls:x", "0", "10"),
    ("RESTORE", "ls:x", "0", "junk"),
    ("DEL", "ls:runs"),
    ("DEL", "ls:run:alice.x"),
    ("RENAME", "ls:runs", "ls:other"),
    ("RENAME", "ls:run:alice.x", "ls:run:alice.y"),
    ("ZADD", "ls:runs", "1", "x"),  # the shared (legacy) indexes: nobody's to write now
    ("SADD", "ls:status:running", "x"),
    ("HSET", "ls:names", "x", "alice.x"),
    ("BLPOP", "ls:list", "1"),
    ("PUBLISH", "channel", "x"),
    ("SET", "other:key", "outside the labstats prefix"),
    ("GET", "other:key"),
]

VIEWER_DENIED = [
    ("SET", "ls:x", "1"),
    ("HSET", "ls:run:x", "name", "y"),
    ("EVAL_RO", "return 1", "0"),
    ("FCALL_RO", "f", "0"),
    ("KEYS", "*"),
    ("XREAD", "BLOCK", "0", "STREAMS", "ls:s", "$"),
    ("CONFIG", "GET", "*"),
]


def as_user(server, user):
    return server.client(user, password(user))


@pytest.mark.parametrize("command", TRAINING_USER_DENIED, ids=lambda c: " ".join(c)[:40])
def test_a_training_user_is_refused_everything_the_logger_does_not_need(acl_server, command):
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(acl_server, "alice").execute_command(*command)


@pytest.mark.parametrize("command", VIEWER_DENIED, ids=lambda c: " ".join(c)[:40])
def test_viewer_only_reads(acl_server, command):
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(acl_server, "viewer").execute_command(*command)


def test_default_user_is_off(acl_server):
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=acl_server.port, socket_timeout=5).ping()


def test_the_logger_works_as_a_training_user(acl_server, tmp_path):
    url = acl_server.url_for("alice", password("alice"))
    runs = []
    for _ in range(2):  # the second run's name clashes: reserved without any script
        with labstats.Stats(tmp_path / "acl", name="acl-run", url=url, config={"lr": 0.1}) as stats:
            stats.watch(np.arange(3000, dtype=np.float32), "big")  # a blob, not inline
            for step in range(50):
                stats.update(0, 1000, 1, step)
                stats.log(step=step, loss=1.0 / (step + 1), note=f"s{step}")
        assert stats.pending_spool is None  # nothing was refused and left in the spool
        runs.append(stats)
    assert [s.name for s in runs] == ["acl-run", "acl-run.2"]
    assert all(s.run_id.startswith("alice.") for s in runs)  # alice's own runs
    lab = labstats.connect(acl_server.url_for("viewer", password("viewer")))
    assert lab.link_state() is None  # ROLE is allowed (a master: no link to report)
    for stats in runs:
        run = lab.run(stats.run_id)
        assert run.name == stats.name
        assert run.status == "finished"
        assert len(run.series("loss")) == 50
        assert len(run.series("big")) == 50
        assert run.series("note").values[-1] == "s49"


def test_default_user_is_off_but_the_append_only_file_replays_after_a_restart(own_acl_server, tmp_path):
    """Redis replays its AOF as the default user and drops each MULTI/EXEC that user may not
    run: with a default user without rights, every batch logged since the last rewrite was
    lost at the next restart (seen on Redis 7.0)."""
    url = own_acl_server.url_for("alice", password("alice"))
    with labstats.Stats(tmp_path / "r", name="survivor", url=url) as stats:
        for step in range(300):
            stats.log(step=step, loss=float(step))
    own_acl_server.stop()
    own_acl_server.start()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=own_acl_server.port, socket_timeout=5).get("ls:schema")
    run = labstats.connect(own_acl_server.url_for("viewer", password("viewer"))).run(stats.run_id)
    assert run.name == "survivor"
    assert run.status == "finished"
    assert run.series("loss").values.tolist() == [float(s) for s in range(300)]
    log = (own_acl_server.workdir / "redis.log").read_text()
    assert "ACLs rules changed" not in log


# With a negative count these answer more than the key holds: one SRANDMEMBER key -600 by
# the viewer user grew a replica from 100 MB to 660 MB out of 1 MB of data.
AMPLIFYING_READS = [
    ("SRANDMEMBER", "ls:status:finished", "-600"),
    ("HRANDFIELD", "ls:names", "-600", "WITHVALUES"),
    ("ZRANDMEMBER", "ls:runs", "-600", "WITHSCORES"),
]


@pytest.mark.parametrize("user", ["alice", "viewer", "archiver", "ops", "annotator"])
@pytest.mark.parametrize("command", AMPLIFYING_READS, ids=lambda c: c[0])
def test_no_user_may_ask_for_more_than_a_key_holds(acl_server, user, command):
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(acl_server, user).execute_command(*command)


def test_every_documented_media_call_works_as_a_training_user(acl_server, tmp_path):
    """retain() drops old steps with HDEL: refused before, it left every later batch of the
    run in a spool that could never be replayed."""
    url = acl_server.url_for("alice", password("alice"))
    with labstats.Stats(tmp_path / "media", name="acl-media", url=url) as stats:
        stats.retain("sample", every=5, last=2)
        for step in range(20):
            stats.image("sample", np.full((4, 4), step, np.uint8), step=step)
            stats.points("cloud", np.random.default_rng(step).random((10, 3)), step=step)
            stats.log(step=step, loss=float(step))
        (tmp_path / "ckpt.bin").write_bytes(b"weights")
        stats.file("checkpoint", tmp_path / "ckpt.bin")
    assert stats.pending_spool is None
    run = labstats.connect(acl_server.url_for("viewer", password("viewer"))).run(stats.run_id)
    assert run.media_steps("sample") == [0, 5, 10, 15, 18, 19]
    assert len(run.media_steps("cloud")) == 20
    assert run.series("loss").values.tolist() == [float(s) for s in range(20)]
