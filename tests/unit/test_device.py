"""GPU values are captured without a device sync on the training thread: a queued copy to
pinned memory and an event, waited for by the writer. Proven here with a stand-in CUDA API
(fake_cuda: work runs only when someone waits); test_gpu.py checks the real thing on a GPU."""

import threading

import numpy as np
import pytest
from conftest import same
from fake_cuda import Tensor, calls

import labstats
from labstats.capture import device
from labstats.format import codec
from labstats.store import ArtifactStore


@pytest.fixture(autouse=True)
def fresh_calls():
    calls.clear()


def ops_by(thread_prefix: str) -> list[str]:
    return [op for op, thread in calls if thread.startswith(thread_prefix)]


def test_a_cuda_value_is_copied_in_stream_order_and_read_by_the_writer(tmp_path, lab):
    w = Tensor(np.arange(4, dtype=np.float32))
    loss = Tensor(np.float32(0.5))
    with labstats.Stats(tmp_path / "r") as stats:
        for step in range(3):
            stats.log(step=step, w=w, loss=loss)
            w.mul_(2)  # an optimizer's in-place step, queued after the copy
            loss.mul_(2)
    main = threading.main_thread().name
    assert set(ops_by(main)) <= {"alloc pinned", "copy", "record", "mul_"}  # never a wait or read
    assert "synchronize" in ops_by("labstats-writer")
    assert "read" in ops_by("labstats-writer")
    run = lab.run(stats.run_id)
    assert [v.tolist() for v in run.series("w").values] == [[0, 1, 2, 3], [0, 2, 4, 6], [0, 4, 8, 12]]
    assert run.series("loss").kind == "f"  # a CUDA scalar is stored as a number
    assert run.series("loss").values.tolist() == [0.5, 1.0, 2.0]


def test_pinned_buffers_are_reused_and_bounded(tmp_path, lab):
    pool = device.pool()
    budget = pool.budget
    device.configure(pinned_bytes=64)  # room for two 32-byte values in flight
    try:
        w = Tensor(np.zeros(8, dtype=np.float32))
        with labstats.Stats(tmp_path / "r", flush_interval=0.01) as stats:
            for step in range(50):
                stats.log(step=step, w=w)
        assert pool.in_use == 0
        assert sum(1 for op, _ in calls if op == "alloc pinned") <= 2  # reused, not 50 allocations
    finally:
        device.configure(pinned_bytes=budget)
    assert len(lab.run(stats.run_id).series("w")) == 50


def test_histograms_and_sampling(tmp_path, lab):
    cpu = np.array([5.0, 5.0, 7.0])
    with labstats.Stats(tmp_path / "r") as stats:
        stats.watch(cpu, "cpu_hist", kind="histogram", bins=2)
        stats.watch(cpu, "sampled", every=3)
        for step in range(7):
            stats.update(0, 100, 1, step)
    run = lab.run(stats.run_id)
    assert run.series("sampled").idx.tolist() == [0, 3, 6]
    hist = run.series("cpu_hist")
    assert len(hist) == 7
    assert hist.values[0].tolist() == [5.0, 7.0, 2.0, 1.0]  # min, max, then the counts
    assert run.series_meta("cpu_hist")["hint"] == "histogram"
    with pytest.raises(ValueError, match="watch kind"):
        stats.watch(cpu, "x", kind="violin")


def test_numpy_histogram_leaves_out_non_finite_values():
    packed = device.histogram_numpy(np.array([0.0, 1.0, 2.0, 3.0, np.inf, np.nan]), 3)
    assert packed.tolist() == [0.0, 3.0, 1.0, 1.0, 2.0]


def test_the_device_histogram_matches_the_numpy_one():
    import torch  # the CPU build: the same ops the GPU runs

    values = np.concatenate([np.random.default_rng(0).normal(size=10_000), [np.inf, np.nan, -np.inf]])
    packed = device.histogram_packed(torch.from_numpy(values.astype(np.float32)), torch, 16)
    expected = device.histogram_numpy(values.astype(np.float32), 16)
    assert packed[:2].tolist() == pytest.approx(expected[:2].tolist())
    assert np.abs(packed[2:].numpy() - expected[2:]).sum() <= 2  # float32 rounding at bin edges
    assert packed[2:].sum().item() == 10_000


def test_a_large_cuda_tensor_is_written_to_its_file_from_the_pinned_memory(tmp_path, lab, monkeypatch):
    pool = device.pool()
    real_put = ArtifactStore.put
    seen = []  # (bytes of the tensor's body, pinned memory still held, body memory) at each write

    def watching_put(self, *parts):
        seen.append((bytes(parts[-1]), pool.in_use, np.asarray(parts[-1])))
        return real_put(self, *parts)

    monkeypatch.setattr(ArtifactStore, "put", watching_put)
    w = Tensor(np.arange(4, dtype=np.float32))
    with labstats.Stats(tmp_path / "r", tensor_file_bytes=16) as stats:  # 4 floats: a file
        for step in range(3):
            stats.log(step=step, w=w)
            w.mul_(2)
    run = lab.run(stats.run_id)
    assert [v.tolist() for v in run.series("w").values] == [[0, 1, 2, 3], [0, 2, 4, 6], [0, 4, 8, 12]]
    assert len(list((tmp_path / "artifacts").rglob("??/*"))) == 3
    assert len(seen) == 3
    assert all(held >= 16 for _, held, _ in seen)  # the buffer goes back only after its write
    assert pool.in_use == 0
    pinned = [buffer.data for buffer in pool.idle_buffers()]
    assert all(any(np.shares_memory(body, p) for p in pinned) for _, _, body in seen)  # no host copy


def test_a_cuda_tensor_whose_file_fails_goes_to_redis_intact(tmp_path, lab, monkeypatch):
    def no_space(self, *parts):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ArtifactStore, "put", no_space)
    pool = device.pool()
    budget = pool.budget
    n = 300_000  # 1.2 MB: more than one blob part, and the parts after the first are views
    device.configure(pinned_bytes=4 * n)  # one buffer: each step's copy reuses the last one's
    w = Tensor(np.arange(n, dtype=np.float32))
    try:
        with labstats.Stats(tmp_path / "r", tensor_file_bytes=16, resend_window=60) as stats:
            for step in range(3):
                stats.log(step=step, w=w)
                assert stats.flush(10)
                w.mul_(2)
            # What the writer keeps to resend (after a Redis crash) is still each step's value,
            # though the pinned buffer it was read from now holds another step's.
            kept = [b"".join(c[3::2]) for _, commands in stats.writer.transport.acknowledged()
                    for c in commands if c[0] == b"HSET" and b":b:" in c[1]]  # fmt: skip
    finally:
        device.configure(pinned_bytes=budget)
    expected = [np.arange(n, dtype=np.float32) * 2**step for step in range(3)]
    assert kept == [b"".join(codec.array_parts(e)) for e in expected]
    values = lab.run(stats.run_id).series("w").values
    assert all(same(v, e) for v, e in zip(values, expected, strict=True))
    assert pool.in_use == 0


@pytest.mark.parametrize("threshold", [0, 16])  # read into a copy; written to a file from pinned memory
def test_a_failed_gpu_copy_leaves_out_that_value_only_and_frees_its_buffer(
    tmp_path, lab, monkeypatch, threshold
):
    import fake_cuda

    def failing(self):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(fake_cuda.cuda.Event, "synchronize", failing)
    with labstats.Stats(tmp_path / "r", tensor_file_bytes=threshold) as stats:
        stats.log(step=0, w=Tensor(np.arange(4, dtype=np.float32)), loss=0.5)
    run = lab.run(stats.run_id)
    assert run.series("loss").values.tolist() == [0.5]
    assert "w" not in run.series_names()
    assert run.meta["quarantined"] == "1"
    assert device.pool().in_use == 0
