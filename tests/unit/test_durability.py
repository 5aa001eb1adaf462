"""Nothing logged is ever lost: a bad value takes nothing else with it, a crashed Redis that
forgot acknowledged batches gets them again, and whatever mix of values and outages a
property test throws at the logger, every accepted value is stored exactly once."""

import threading
import time

import numpy as np
import pytest
from conftest import RedisServer, same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import labstats


def test_an_unstorable_array_is_refused_at_the_call_and_loses_nothing_else(tmp_path, lab, url):
    with labstats.Stats(tmp_path / "r") as stats:
        for step in range(10):
            stats.log(step=step, loss=float(step))
            if step == 4:
                with pytest.raises(TypeError, match="dtype object"):
                    stats.log(step=step, bad=np.array([object()], dtype=object))
        started = time.monotonic()
        assert stats.flush(5)
        assert time.monotonic() - started < 2
    run = lab.run(stats.run_id)
    assert run.series("loss").idx.tolist() == list(range(10))
    assert run.status == "finished"


class Exploding:
    """A tensor stand-in that copies fine on the training thread and fails on the writer's."""

    device = type("Device", (), {"type": "cpu"})()

    def detach(self):
        return self

    def dim(self):
        return 1

    def clone(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        raise RuntimeError("cannot be read")


def test_a_value_that_fails_in_the_writer_is_quarantined_alone(tmp_path, lab, caplog):
    with labstats.Stats(tmp_path / "r") as stats:
        for step in range(10):
            values = {"loss": float(step), "w": np.full(3, step)}
            if step == 5:
                values["odd"] = Exploding()
            stats.log(step=step, **values)
        assert stats.flush(5)
    run = lab.run(stats.run_id)
    assert run.series("loss").idx.tolist() == list(range(10))
    assert [int(v[0]) for v in run.series("w").values] == list(range(10))
    assert "odd" not in run.series_names()
    assert run.meta["quarantined"] == "1"
    assert run.status == "finished"
    assert "value left out" in caplog.text


def no_aof_server(tmp_path) -> RedisServer:
    # No persistence at all: a SIGKILL makes it forget everything it acknowledged.
    return RedisServer(tmp_path / "volatile", extra_args=("--appendonly", "no")).start()


def test_batches_a_crashed_server_forgot_are_resent_exactly_once(tmp_path):
    server = no_aof_server(tmp_path)
    try:
        stats = labstats.Stats(tmp_path / "r", name="crash", url=server.url, flush_interval=0.02,
                               config={"lr": 0.1}, resend_window=60)  # fmt: skip
        for step in range(1000):
            stats.log(step=step, loss=float(step), w=np.full(2, step))
        assert stats.flush(5)
        server.proc.kill()  # SIGKILL: the server forgets every acknowledged batch
        server.proc.wait(5)
        server.start()
        for step in range(1000, 2000):
            stats.log(step=step, loss=float(step), w=np.full(2, step))
        stats.close(timeout=30)
        assert stats.writer.resent_batches > 0
        run = labstats.connect(server.url).run("crash")
        assert run.config == {"lr": 0.1}
        assert run.status == "finished"
        assert run.series("loss").idx.tolist() == list(range(2000))
        assert [int(v[0]) for v in run.series("w").values] == list(range(2000))
    finally:
        server.stop()


def test_sigkill_of_redis_with_everysec_fsync_while_logging_loses_nothing(tmp_path):
    """The lab's setting (appendfsync everysec) and 1,000 points/s: killed and restarted."""
    server = RedisServer(tmp_path / "aof", extra_args=("--appendfsync", "everysec")).start()
    try:
        stats = labstats.Stats(tmp_path / "r", name="everysec", url=server.url, flush_interval=0.05)
        stop = threading.Event()

        def crash_and_restart():
            time.sleep(1.0)
            server.proc.kill()
            server.proc.wait(5)
            time.sleep(0.5)
            server.start()

        crasher = threading.Thread(target=crash_and_restart)
        crasher.start()
        step = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not stop.is_set():
            stats.log(step=step, v=float(step))
            step += 1
            time.sleep(0.001)
        crasher.join()
        stats.close(timeout=30)
        v = labstats.connect(server.url).run("everysec").series("v")
        print(f"logged {step} points; resent batches: {stats.writer.resent_batches}")
        assert v.idx.tolist() == list(range(step))  # 0 lost, 0 duplicated
    finally:
        server.stop()


# ---- property test: any values, any outage ---------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
    ),
    max_leaves=8,
)
arrays = st.sampled_from(["f4", "f8", "i1", "i8", "u2", "bool", "c8", "U3", "O"]).flatmap(
    lambda dtype: st.integers(0, 5).map(lambda n: np.arange(n).astype(dtype))
)
series_names = st.sampled_from(["a", "b", "train/c", "λ"])
events = st.lists(
    st.one_of(
        st.tuples(st.just("log"), series_names, st.one_of(values, arrays)),
        st.tuples(st.just("outage"), st.just(""), st.none()),
    ),
    min_size=1,
    max_size=40,
)


@pytest.fixture(scope="module")
def flaky_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("flaky")).start()
    yield server
    server.stop()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(script=events)
def test_whatever_is_logged_through_whatever_outage_is_stored_exactly(flaky_server, tmp_path_factory, script):
    savedir = tmp_path_factory.mktemp("prop")
    stats = labstats.Stats(savedir, url=flaky_server.url, flush_interval=0.01)
    expected: dict[str, list] = {}
    try:
        for step, (event, name, value) in enumerate(script):
            if event == "outage":
                flaky_server.stop() if flaky_server.proc else flaky_server.start()
                continue
            try:
                stats.log(step=step, **{name: value})
            except TypeError:
                continue  # refused at the call, with a clear error: not stored, nothing else lost
            expected.setdefault(name, []).append((step, value))
    finally:
        if flaky_server.proc is None:
            flaky_server.start()
        stats.close(timeout=30)
    assert stats.pending_spool is None
    run = labstats.connect(flaky_server.url).run(stats.run_id)
    assert run.status == "finished"
    assert run.meta.get("quarantined") is None
    for name, points in expected.items():
        stored = run.series(name)
        assert stored.idx.tolist() == [s for s, _ in points]
        got = stored.values.tolist() if isinstance(stored.values, np.ndarray) else list(stored.values)
        for (step, want), have in zip(points, got, strict=True):
            want = want.item() if isinstance(want, np.generic) else want
            assert same(want, have) or (isinstance(want, bool | int | float) and want == have), (
                step,
                want,
                have,
            )


@pytest.mark.parametrize("fails_at", ["write", "flush"])
def test_a_full_spool_disk_loses_nothing_once_redis_returns(
    tmp_path, own_redis, monkeypatch, caplog, fails_at
):
    """Redis away and the spool's disk full for a while (the write fails part-way, or, as
    on a real full filesystem, the buffered frame fails at flush and again at close): the
    training goes on, the spool stays readable (cut back to its last whole frame), the
    records wait in memory, and everything arrives when Redis is back."""
    from labstats.write import spool as spool_module

    writes = {"n": 0}

    class FullDisk:
        """The spool's file, on a disk that is full for the 3rd to 8th write: half of the
        frame gets written, then ENOSPC."""

        def __init__(self, f):
            self.f = f
            self.buffered = b""

        def write(self, data):
            writes["n"] += 1
            if 3 <= writes["n"] <= 8:
                if fails_at == "flush":
                    self.buffered = data  # kept in the buffer: the error comes with flush
                    return len(data)
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                raise OSError(28, "No space left on device")
            return self.f.write(data)

        def flush(self):
            if self.buffered:
                self.f.write(self.buffered[: len(self.buffered) // 2])
                self.f.flush()
                raise OSError(28, "No space left on device")
            return self.f.flush()

        def close(self):
            self.f.close()
            if self.buffered:  # close flushes the buffer, which fails again
                raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    def spool_open(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115
        return FullDisk(f) if str(path).endswith(".spool") and "a" in mode else f

    monkeypatch.setattr(spool_module, "open", spool_open, raising=False)
    own_redis.stop()
    stats = labstats.Stats(tmp_path / "r", url=own_redis.url, flush_interval=0.02)
    for step in range(600):
        stats.log(step=step, v=float(step))
        if step % 50 == 0:
            time.sleep(0.05)  # several batches, some refused by the "disk"
    assert stats.flush(10)
    assert writes["n"] > 8
    assert "cannot write the spool" in caplog.text
    kept = [seq for seq, _ in spool_module.read_spool(stats.pending_spool)]
    assert kept == sorted(kept)  # readable to its end, in order
    own_redis.start()
    stats.close(timeout=30)
    run = labstats.connect(own_redis.url).run(stats.run_id)
    assert run.series("v").idx.tolist() == list(range(600))
    assert run.status == "finished"
