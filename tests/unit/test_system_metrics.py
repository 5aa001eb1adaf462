"""System metrics from the logger (labstats.capture.system): GPUs, the run's process tree and
the box, sampled on a thread of their own into series under sys/, through the run's writer,
against the real redis-server. NVML is a stand-in offering pynvml's calls (put where
``import pynvml`` finds it); processes, psutil and Redis are real."""

import logging
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from conftest import wait_for

import labstats
from labstats.capture import system


class FakeNvml:
    """pynvml's calls the sampler makes, for ``gpus`` GPUs. ``users``: GPU index -> the pids
    the driver says use it; ``fail_after``: utilisation reads that answer before every call
    raises (a GPU falling off the bus); ``slow``: seconds each utilisation read takes."""

    NVML_TEMPERATURE_GPU = 0
    NVML_ERROR_NOT_SUPPORTED = 3

    class NVMLError(Exception):
        def __init__(self, value: int, text: str) -> None:
            super().__init__(text)
            self.value = value

    def __init__(self, gpus=2, users=None, fail_after=None, slow=0.0, init_error=None, no_power=False):
        self.gpus, self.users, self.fail_after, self.slow = gpus, users or {}, fail_after, slow
        self.init_error, self.no_power = init_error, no_power
        self.util_reads = 0
        self.shutdowns = 0

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(9, self.init_error)

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetCount(self):
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUtilizationRates(self, handle):
        self.util_reads += 1
        if self.fail_after is not None and self.util_reads > self.fail_after:
            raise self.NVMLError(15, "GPU is lost")
        if self.slow:
            time.sleep(self.slow)
        return SimpleNamespace(gpu=40 + handle, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=(handle + 1) * 2**30, total=80 * 2**30, free=0)

    def nvmlDeviceGetPowerUsage(self, handle):
        if self.no_power:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        return 250_000 + handle  # milliwatts

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 60 + handle

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=2**30) for pid in self.users.get(handle, [])]


# Without any GPU, why amdsmi found none is said too.
NO_AMD = " amdsmi is not installed (ROCm's Python package, for AMD GPUs)"


@pytest.fixture
def nvml(monkeypatch):
    """Make ``import pynvml`` find the given stand-in (None: not installed)."""

    def install(fake):
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        monkeypatch.setitem(sys.modules, "amdsmi", None)  # no AMD GPU here (test_system_amd has them)
        return fake

    return install


def sys_series(run):
    return sorted(name for name in run.series_names() if name.startswith(system.PREFIX))


def count(lab, run_id, name):
    run = lab.run(run_id)
    return len(run.series(name).idx) if name in run.series_names() else 0


def test_samples_are_series_under_sys_at_their_wall_time(tmp_path, url, lab, nvml):
    nvml(None)
    before = time.time()
    with labstats.Stats(tmp_path / "run", system_metrics=0.05, flush_interval=0.05) as stats:
        for step in range(5):
            stats.log(step=step, loss=1.0)
        assert wait_for(lambda: stats.flush() and count(lab, stats.run_id, "sys/proc_rss_bytes") >= 3)
    after = time.time()
    run = lab.run(stats.run_id)
    names = sys_series(run)
    for name in system.SERIES:
        if not name.startswith(("disk_", "net_")):  # a container may have no disk counters
            assert system.PREFIX + name in names
    assert {"sys/spool_free_bytes", "sys/artifacts_free_bytes", system.GPU_STATUS} <= set(names)
    rss = run.series("sys/proc_rss_bytes")
    assert (rss.idx >= before * 1000).all()  # idx: unix ms
    assert (rss.idx <= after * 1000).all()
    assert (rss.values > 10 * 2**20).all()  # this Python process alone holds more than 10 MB
    assert (run.series("sys/proc_threads").values >= 2).all()  # the training and writer threads
    assert run.series("loss").idx.tolist() == [0, 1, 2, 3, 4]  # the training's own steps untouched


def test_gpus_are_sampled_through_nvml_with_whether_the_run_uses_them(tmp_path, url, lab, nvml):
    nvml(FakeNvml(gpus=2, users={0: [os.getpid()], 1: [1]}))
    with labstats.Stats(tmp_path / "run", system_metrics=0.05, flush_interval=0.05) as stats:
        assert wait_for(lambda: stats.flush() and count(lab, stats.run_id, "sys/gpu1/util_percent") >= 2)
    run = lab.run(stats.run_id)
    assert set(run.series("sys/gpu0/used_by_run").values) == {1.0}
    assert set(run.series("sys/gpu1/used_by_run").values) == {0.0}  # only another process on it
    assert set(run.series("sys/gpu1/util_percent").values) == {41.0}
    assert set(run.series("sys/gpu1/memory_used_bytes").values) == {2.0 * 2**30}
    assert set(run.series("sys/gpu0/memory_total_bytes").values) == {80.0 * 2**30}
    assert set(run.series("sys/gpu1/power_watts").values) == {250.001}
    assert set(run.series("sys/gpu1/temperature_celsius").values) == {61.0}
    assert run.series(system.GPU_STATUS).values == ["2 GPU(s) through NVML, driver 550.54.15"]


def test_a_field_the_driver_does_not_offer_is_left_out_and_said(tmp_path, url, lab, nvml):
    nvml(FakeNvml(gpus=1, no_power=True))
    with labstats.Stats(tmp_path / "run", system_metrics=0.05, flush_interval=0.05) as stats:
        assert wait_for(lambda: stats.flush() and count(lab, stats.run_id, "sys/gpu0/util_percent") >= 2)
    run = lab.run(stats.run_id)
    assert "sys/gpu0/power_watts" not in run.series_names()
    assert "sys/gpu0/temperature_celsius" in run.series_names()
    assert run.series(system.GPU_STATUS).values == [
        "1 GPU(s) through NVML, driver 550.54.15; not offered by the driver: power_watts"
    ]


def test_an_nvml_error_mid_run_stops_only_the_gpus_with_one_warning(tmp_path, url, lab, nvml, caplog):
    fake = nvml(FakeNvml(gpus=2, fail_after=2 + 2 * 3))  # the probe's 2 reads, then 3 samples
    caplog.set_level(logging.INFO, "labstats")
    with labstats.Stats(tmp_path / "run", system_metrics=0.03, flush_interval=0.05) as stats:
        assert wait_for(lambda: stats.flush() and count(lab, stats.run_id, "sys/proc_rss_bytes") >= 10)
        stats.log(step=0, loss=1.0)  # training goes on
    run = lab.run(stats.run_id)
    assert len(run.series("sys/gpu0/util_percent").idx) == 3
    assert len(run.series("sys/gpu1/temperature_celsius").idx) == 3  # a sample holds all GPUs or none
    assert len(run.series("sys/proc_rss_bytes").idx) >= 10  # the rest goes on
    statuses = list(run.series(system.GPU_STATUS).values)
    assert statuses == ["2 GPU(s) through NVML, driver 550.54.15",
                        "GPU metrics stopped: NVML failed mid-run (GPU is lost)"]  # fmt: skip
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "GPU" in r.getMessage()]
    assert len(warnings) == 1
    assert fake.util_reads == 2 + 2 * 3 + 1  # no NVML call after the failure
    assert fake.shutdowns == 1
    assert run.series("loss").values.tolist() == [1.0]


@pytest.mark.parametrize(
    ("fake", "why"),
    [
        (None, "no GPU metrics: pynvml is not installed (pip install 'labstats[gpu]');" + NO_AMD),
        (
            FakeNvml(init_error="Driver Not Loaded"),
            "no GPU metrics: NVML did not start (Driver Not Loaded);" + NO_AMD,
        ),
        (FakeNvml(gpus=0), "no GPU metrics: NVML found no GPU;" + NO_AMD),
    ],
)
def test_no_gpu_is_recorded_once_with_why(tmp_path, url, lab, nvml, fake, why):
    nvml(fake)
    with labstats.Stats(tmp_path / "run", system_metrics=0.03, flush_interval=0.05) as stats:
        assert wait_for(lambda: stats.flush() and count(lab, stats.run_id, "sys/proc_rss_bytes") >= 4)
    run = lab.run(stats.run_id)
    assert run.series(system.GPU_STATUS).values == [why]
    assert not [name for name in run.series_names() if name.startswith("sys/gpu0")]


def test_without_psutil_the_gpus_are_still_sampled_and_why_is_said_once(
    tmp_path, url, lab, nvml, monkeypatch
):
    nvml(FakeNvml(gpus=1))
    monkeypatch.setitem(sys.modules, "psutil", None)
    with labstats.Stats(tmp_path / "run", system_metrics=0.03, flush_interval=0.05) as stats:
        assert wait_for(lambda: stats.flush() and count(lab, stats.run_id, "sys/gpu0/util_percent") >= 4)
    run = lab.run(stats.run_id)
    (why,) = run.series(system.HOST_STATUS).values
    assert why.startswith("no process or box metrics: psutil is not available")
    assert "sys/proc_rss_bytes" not in run.series_names()
    assert set(run.series("sys/gpu0/used_by_run").values) == {0.0}  # no tree known: only this pid


GROWS = "import sys; b = bytearray(300 * 2**20); print('ready', flush=True); sys.stdin.read()"


def test_a_child_process_memory_is_counted(tmp_path, url, lab, nvml):
    nvml(None)

    def samples(name, after):  # the values of samples taken after ``after`` (unix seconds)
        series = lab.run(stats.run_id).series(name)
        return series.values[series.idx > after * 1000]

    with labstats.Stats(tmp_path / "run", system_metrics=0.05, flush_interval=0.05) as stats:
        assert wait_for(lambda: stats.flush() and count(lab, stats.run_id, "sys/proc_rss_bytes") >= 2)
        alone = samples("sys/proc_rss_bytes", 0).max()
        child = subprocess.Popen([sys.executable, "-c", GROWS], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"ready\n"
            ready = time.time() + 0.2  # a sample's idx is taken after its values: a margin
            assert wait_for(lambda: stats.flush() and len(samples("sys/proc_rss_bytes", ready)) >= 2)
            with_child = samples("sys/proc_rss_bytes", ready)  # read while the child lives
            processes = samples("sys/proc_count", ready)
        finally:
            child.communicate(b"")
    assert with_child.min() > alone + 250 * 2**20  # the child's 300 MB
    assert processes.min() >= 2


@pytest.mark.parametrize("off", [False, 0, None])
def test_system_metrics_off_samples_nothing(tmp_path, url, lab, off):
    with labstats.Stats(tmp_path / "run", system_metrics=off, flush_interval=0.05) as stats:
        assert "labstats-system" not in [t.name for t in threading.enumerate()]
        stats.log(step=0, loss=1.0)
        time.sleep(0.2)
    assert lab.run(stats.run_id).series_names() == ["loss"]


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (float("nan"), ValueError), ("often", TypeError)]
)
def test_a_bad_interval_is_refused_at_the_call(tmp_path, value, error):
    with pytest.raises(error, match="system_metrics"):
        labstats.Stats(system_metrics=value)


def test_the_training_thread_never_waits_for_the_sampler(tmp_path, url, lab, nvml, caplog):
    # The sampler is stuck 5 s in each NVML call (a hung driver): log() and close() are not.
    fake = nvml(FakeNvml(gpus=1, slow=5.0))
    started = time.perf_counter()
    stats = labstats.Stats(tmp_path / "run", system_metrics=0.01, flush_interval=0.05)
    assert time.perf_counter() - started < 2.0  # NVML is started on the sampler's thread
    assert wait_for(lambda: fake.util_reads >= 1, timeout=5)  # inside a slow call (the GPU's probe)
    slowest = 0.0
    for step in range(2000):
        started = time.perf_counter()
        stats.log(step=step, loss=float(step))
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.5  # a loaded 2-core machine may pause a call; waiting would be seconds
    started = time.perf_counter()
    stats.close()
    assert time.perf_counter() - started < 2.0
    assert len(lab.run(stats.run_id).series("loss").idx) == 2000
    assert not [r for r in caplog.records if "after run" in r.getMessage()]  # nothing sent after close


def test_no_sample_is_refused_at_close(tmp_path, url, lab, nvml, caplog):
    nvml(None)
    for _ in range(5):
        with labstats.Stats(tmp_path / "run", system_metrics=0.001, flush_interval=0.01) as stats:
            time.sleep(0.05)
        assert stats.writer.refused == 0
    assert not [r for r in caplog.records if "after run" in r.getMessage()]


def test_samples_are_no_calls_of_the_training_loop(tmp_path, url, lab, nvml):
    nvml(None)
    lab.stall_after = 0.5
    with labstats.Stats(tmp_path / "run", system_metrics=0.05, flush_interval=0.05) as stats:
        for step in range(5):
            stats.log(step=step, loss=1.0)
        stats.flush()
        last_call = lab.run(stats.run_id).meta["last_call"]
        assert wait_for(lambda: stats.flush() and count(lab, stats.run_id, "sys/proc_rss_bytes") >= 3)
        time.sleep(0.6)
        stalled = lab.run(stats.run_id)
        assert stalled.meta["last_call"] == last_call
        assert stalled.status == "stalled"
        assert (stalled.series("_time").idx <= 4).all()
