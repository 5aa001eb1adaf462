"""The batch builder and the writer built from its parts: what the builder makes is what
the transport sends, in order, with the heartbeat last."""

import logging
import threading

import redis
from conftest import wait_for

from labstats.format import chunk, keys, series_info
from labstats.write.batches import COMMANDS, MARKER, MAX_POINTS, POINTS, Batch, BatchBuilder
from labstats.write.chunks import ChunkEncoder, cmd
from labstats.write.spool import Spool
from labstats.write.transport import Transport
from labstats.write.writequeue import WriteQueue
from labstats.write.writer import Writer

KEYS = keys.Keys("ls")
RUN = "20261205-000000-abcdef"


def items() -> list[tuple]:
    return [
        (POINTS, 0, {"loss": 0.5, "acc": 1}, 0, 1000.0),
        (COMMANDS, [cmd("HSET", KEYS.run(RUN), "note", "between the points")]),
        (POINTS, 1, {"loss": 0.25}, 0, 1000.001),  # within 10 ms: no second time point
        (POINTS, 2, {"loss": 0.125}, 0, 1000.5),
    ]


def built(queued: list[tuple]) -> tuple[BatchBuilder, Batch]:
    builder = BatchBuilder(ChunkEncoder(KEYS, RUN))
    queue = WriteQueue()
    for item in queued:
        queue.put_now(item)
    return builder, builder.build(queue)


def test_points_become_chunk_records_and_commands_keep_their_place():
    _, batch = built(items())
    names = [c[0] for c in batch.commands]
    note = names.index(b"HSET", [c[1] for c in batch.commands].index(KEYS.run(RUN).encode()))
    before = {c[1] for c in batch.commands[:note] if c[0] == b"APPEND"}
    assert KEYS.chunk(RUN, 0, 0).encode() in before  # step 0's loss went out before the note
    series = {c[2]: c for c in batch.commands if c[0] == b"HSET" and c[1] == KEYS.series(RUN).encode()}
    assert set(series) == {b"loss", b"acc", keys.TIME_SERIES.encode()}
    assert batch.markers == []
    assert batch.freed == 0


def test_the_call_times_make_the_pulse():
    builder, _ = built(items())
    pulse = builder.pulse(1001.0)
    fields = dict(zip(pulse[2::2], pulse[3::2], strict=True))
    assert fields[b"heartbeat"] == b"1001.000"
    assert fields[b"last_call"] == b"1000.500"


def test_a_batch_stops_at_max_points_and_the_rest_waits():
    queue = WriteQueue(max_items=10**6)
    for step in range(MAX_POINTS + 10):
        queue.put_now((POINTS, step, {"x": 1.0}, 0, 0.0))
    BatchBuilder(ChunkEncoder(KEYS, RUN)).build(queue)
    assert len(queue) == 10  # one point a call (a call time of 0.0 adds no time point)


def test_what_the_writer_sends_is_what_the_builder_makes(tmp_path, url):
    _, expected = built(items())
    queue = WriteQueue()
    transport = Transport(lambda: redis.Redis.from_url(url), KEYS, RUN, Spool(tmp_path / "r.spool"),
                          resend_window=60)  # fmt: skip
    writer = Writer(queue, BatchBuilder(ChunkEncoder(KEYS, RUN)), transport, flush_interval=60)
    for item in items():
        queue.put_now(item)
    done = threading.Event()
    queue.put_now((MARKER, done))
    writer.start()
    writer.wake()
    assert done.wait(10)
    assert writer.stop(10)
    ((seq, sent),) = transport.acknowledged()
    assert seq == 1
    assert sent[:-1] == expected.commands
    assert sent[-1][:3] == (b"HSET", KEYS.run(RUN).encode(), b"heartbeat")
    client = redis.Redis.from_url(url)
    assert client.get(KEYS.seq(RUN)) == b"1"
    assert client.hget(KEYS.run(RUN), "note") == b"between the points"


def test_commands_among_the_points_do_not_reset_the_batch_bound():
    queue = WriteQueue(max_items=10**6)
    for step in range(MAX_POINTS + 10):
        queue.put_now((POINTS, step, {"x": 1.0}, 0, 0.0))
        if step % 1000 == 0:
            queue.put_now((COMMANDS, []))
    BatchBuilder(ChunkEncoder(KEYS, RUN)).build(queue)
    assert len(queue) >= 10  # the rest waits for the next transaction


def test_the_builder_takes_the_run_from_its_encoder_alone():
    """The run's keys and id have one source, the encoder: a copy kept by the builder would
    send the heartbeat to another run's hash once they differ."""
    encoder = ChunkEncoder(KEYS, RUN)
    builder = BatchBuilder(encoder)
    encoder.keys, encoder.run_id = keys.Keys("other"), "20261205-000000-fedcba"
    assert builder.pulse(1.0)[1] == keys.Keys("other").run("20261205-000000-fedcba").encode()


def stored_idx(client: redis.Redis, name: str) -> list[int]:
    """The idx of every point of series ``name`` in Redis (its chunks in order)."""
    info = series_info.decode(client.hget(KEYS.series(RUN), name))
    found: list[int] = []
    for n in range(info["last_chunk"] + 1):
        found += chunk.idx_of(client.get(KEYS.chunk(RUN, info["sid"], n))).tolist()
    return found


def test_a_value_the_encoder_fails_on_is_left_out_alone_and_the_writer_goes_on(tmp_path, url, caplog):
    """A series name with a lone surrogate (os.fsdecode of a file name that is not UTF-8)
    passes the logger's check and makes the encoder raise half way through a batch, after
    it changed other series: the batch's other values are stored exactly once, the odd value
    alone is left out with one warning, and later batches go out as before."""
    queue = WriteQueue()
    transport = Transport(lambda: redis.Redis.from_url(url), KEYS, RUN, Spool(tmp_path / "r.spool"))
    writer = Writer(queue, BatchBuilder(ChunkEncoder(KEYS, RUN)), transport, flush_interval=60)
    for step in range(10):
        values = {"loss": float(step), "acc": step}
        if step == 5:
            values["odd\udcff"] = 1.0
        queue.put_now((POINTS, step, values, 0, 1000.0 + step))
    queue.put_now((COMMANDS, [cmd("HSET", KEYS.run(RUN), "note", "after the points")]))
    writer.start()
    try:
        with caplog.at_level(logging.WARNING, "labstats"):
            assert writer.flush(10)
        queue.put_now((POINTS, 10, {"loss": 10.0, "acc": 10}, 0, 1010.0))
        assert writer.flush(10)
        assert writer.is_alive()
    finally:
        assert writer.stop(10)
    client = redis.Redis.from_url(url)
    assert stored_idx(client, "loss") == list(range(11))
    assert stored_idx(client, "acc") == list(range(11))
    assert stored_idx(client, keys.TIME_SERIES) == list(range(11))
    assert client.hlen(KEYS.series(RUN)) == 3  # no trace of the odd series
    assert client.hget(KEYS.run(RUN), "quarantined") == b"1"
    assert client.hget(KEYS.run(RUN), "note") == b"after the points"
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "odd" in warning.getMessage()
    assert "left out" in warning.getMessage()


def started_writer(tmp_path, url) -> Writer:
    transport = Transport(lambda: redis.Redis.from_url(url), KEYS, RUN, Spool(tmp_path / "r.spool"))
    writer = Writer(WriteQueue(), BatchBuilder(ChunkEncoder(KEYS, RUN)), transport, flush_interval=0.01)
    writer.start()
    return writer


def in_thread(call, *args):
    """``call(*args)`` from another thread (a data loader, a callback); returns its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call(*args)), daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    return result[0]


def test_a_put_after_the_writer_stopped_is_refused_with_one_warning(tmp_path, url, caplog):
    writer = started_writer(tmp_path, url)
    assert writer.put_points(0, {"loss": 0.0})
    assert writer.stop(10)
    with caplog.at_level(logging.WARNING, "labstats"):
        assert in_thread(writer.put_points, 1, {"loss": 1.0}) is False
        assert in_thread(writer.put_commands, [cmd("HSET", KEYS.run(RUN), "late", "1")]) is False
        assert writer.flush(1)  # nothing it could wait for: the writer's end was the flush
    assert writer.refused == 2
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "not written" in warning.getMessage()
    assert len(writer.queue) == 0  # not kept in a queue nobody reads
    assert stored_idx(redis.Redis.from_url(url), "loss") == [0]


def test_every_put_that_was_accepted_while_the_writer_stopped_is_written(tmp_path, url):
    """A thread logging while the run closes: each put is written or refused, never kept
    in a queue that nobody drains any more."""
    writer = started_writer(tmp_path, url)
    accepted = []

    def produce() -> None:
        step = 0
        while writer.put_points(step, {"loss": float(step)}):
            accepted.append(step)
            step += 1

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    assert wait_for(lambda: len(accepted) > 1000, 10)
    assert writer.stop(10)
    producer.join(5)
    assert not producer.is_alive()
    assert writer.refused == 1
    assert stored_idx(redis.Redis.from_url(url), "loss") == accepted
