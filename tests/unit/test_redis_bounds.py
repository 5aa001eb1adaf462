"""Redis with the redis role's memory settings: a full master refuses writes (noeviction)
and the logger keeps them in its spool until memory is freed; nothing logged is evicted."""

import os

import numpy as np
import pytest
import redis
from conftest import RedisServer

import labstats


def test_a_full_master_refuses_writes_and_the_logger_spools_them_until_memory_is_freed(tmp_path):
    server = RedisServer(tmp_path / "redis", extra_args=("--maxmemory-policy", "noeviction"))
    server.start()
    try:
        client = server.client()
        client.set("filler", b"x" * (4 << 20))  # what other runs hold
        client.config_set("maxmemory", client.info("memory")["used_memory"] + (200 << 10))
        stats = labstats.Stats(tmp_path / "run", name="big", url=server.url)
        for step in range(4000):  # about 800 kB that does not compress (a repeated note once fit)
            stats.log(step=step, loss=float(step), note=os.urandom(100).hex())
            if step % 500 == 499:
                # In batches of about 100 kB: Redis refuses a write once memory is over the
                # limit, so one transaction of everything could be taken whole, over it.
                stats.flush()
        stats.flush()
        assert stats.pending_spool is not None  # refused (OOM), kept on disk
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.get("filler") is not None  # nothing was evicted to make room
        client.delete("filler")  # memory freed (as an archive of ended runs frees it)
        stats.close()
        assert stats.pending_spool is None
        run = labstats.connect(server.url).run(stats.run_id)
        assert run.series("loss").values.tolist() == [float(s) for s in range(4000)]
        assert run.status == "finished"
    finally:
        server.stop()


def test_a_tensor_larger_than_the_roles_bulk_limit_is_still_logged_in_parts(tmp_path):
    """The role caps one value at 32 MB (proto-max-bulk-len) instead of Redis's 512 MB: the
    logger's largest values (1 MiB blob parts, the 1 MiB diff) stay far below it, so a 40 MB
    tensor kept in Redis still gets through."""
    server = RedisServer(tmp_path / "redis", extra_args=("--proto-max-bulk-len", "32mb"))
    server.start()
    try:
        weight = np.arange(10 << 20, dtype=np.float32)  # 40 MB
        with labstats.Stats(tmp_path / "run", name="w", url=server.url, tensor_file_bytes=0) as stats:
            stats.log(step=0, w=weight)
        assert stats.pending_spool is None
        with pytest.raises((redis.ConnectionError, redis.ResponseError)):
            server.client().set("one-value", weight.tobytes())
        stored = labstats.connect(server.url).run(stats.run_id).series("w").values[0]
        assert np.array_equal(stored, weight)
    finally:
        server.stop()
