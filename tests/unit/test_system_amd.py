"""AMD GPUs in the system metrics (labstats.capture.system's AmdGpuPart) and in the box agent,
through amdsmi. amdsmi is a stand-in offering the calls the part makes (put where ``import
amdsmi`` finds it), as NVML is in test_system_metrics: no AMD GPU here. Processes, psutil and
Redis are real."""

import getpass
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import wait_for
from test_agent import NamedNvml, record_run
from test_system_metrics import FakeNvml, count

import labstats
from labstats.capture import system
from labstats.ops import agent

ME = getpass.getuser()
DRIVER = "6.8.5"


class FakeAmdsmi:
    """amdsmi's calls the part makes, for ``gpus`` GPUs. ``users``: GPU index -> the pids on it;
    ``fail_after``: activity reads that answer before every call raises (a GPU lost);
    ``no_power``: the board says "N/A" for its power; ``no_edge``: no edge temperature sensor
    (as MI300's), the hotspot's is read; ``process_handles``: an old amdsmi listing process
    handles, not their pids."""

    AmdSmiInitFlags = SimpleNamespace(INIT_AMD_GPUS=2)
    AmdSmiMemoryType = SimpleNamespace(VRAM=0, VIS_VRAM=1, GTT=2)
    AmdSmiTemperatureType = SimpleNamespace(EDGE=0, HOTSPOT=1)
    AmdSmiTemperatureMetric = SimpleNamespace(CURRENT=0)

    class AmdSmiLibraryException(Exception):
        def __init__(self, err_code: int, text: str) -> None:
            super().__init__(text)
            self.err_code = err_code

    def __init__(self, gpus=1, users=None, fail_after=None, init_error=None, no_power=False,
                 no_edge=False, process_handles=False):  # fmt: skip
        self.gpus, self.users, self.fail_after, self.init_error = gpus, users or {}, fail_after, init_error
        self.no_power, self.no_edge, self.process_handles = no_power, no_edge, process_handles
        self.activity_reads = 0
        self.shutdowns = 0
        self.init_flags = None

    def amdsmi_init(self, flags):
        if self.init_error:
            raise self.AmdSmiLibraryException(8, self.init_error)
        self.init_flags = flags

    def amdsmi_shut_down(self):
        self.shutdowns += 1

    def amdsmi_get_processor_handles(self):
        return [f"amd-handle-{i}" for i in range(self.gpus)]

    def amdsmi_get_gpu_driver_info(self, handle):
        return {"driver_name": "amdgpu", "driver_version": DRIVER, "driver_date": "2015/01/01 00:00"}

    def amdsmi_get_gpu_asic_info(self, handle):
        return {"market_name": "Stand-in MI300X", "vendor_id": "0x1002"}

    def amdsmi_get_gpu_device_uuid(self, handle):
        return f"amd-uuid-{self._index(handle)}"

    def amdsmi_get_gpu_activity(self, handle):
        self.activity_reads += 1
        if self.fail_after is not None and self.activity_reads > self.fail_after:
            raise self.AmdSmiLibraryException(30, "GPU is lost")
        return {"gfx_activity": 70 + self._index(handle), "umc_activity": 5, "mm_activity": "N/A"}

    def amdsmi_get_gpu_memory_usage(self, handle, kind):
        assert kind == self.AmdSmiMemoryType.VRAM
        return (self._index(handle) + 3) * 2**30  # bytes

    def amdsmi_get_gpu_memory_total(self, handle, kind):
        assert kind == self.AmdSmiMemoryType.VRAM
        return 192 * 2**30

    def amdsmi_get_power_info(self, handle):
        if self.no_power:
            return {"current_socket_power": "N/A", "average_socket_power": "N/A", "power_limit": 750}
        return {"current_socket_power": "N/A", "average_socket_power": 300 + self._index(handle)}  # watts

    def amdsmi_get_temp_metric(self, handle, sensor, metric):
        assert metric == self.AmdSmiTemperatureMetric.CURRENT
        if sensor == self.AmdSmiTemperatureType.EDGE:
            if self.no_edge:
                raise self.AmdSmiLibraryException(system.AMDSMI_STATUS_NOT_SUPPORTED, "not supported")
            return 50 + self._index(handle)
        return 85 + self._index(handle)

    def amdsmi_get_gpu_process_list(self, handle):
        pids = self.users.get(self._index(handle), [])
        if self.process_handles:
            return [object() for _ in pids]
        return [{"name": "python", "pid": pid, "mem": 2**30, "engine_usage": {"gfx": 0}} for pid in pids]

    @staticmethod
    def _index(handle):
        return int(handle.rsplit("-", 1)[1])


@pytest.fixture
def libraries(monkeypatch):
    """Make ``import pynvml`` and ``import amdsmi`` find the given stand-ins (None: not installed)."""

    def install(nvml, amdsmi):
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        monkeypatch.setitem(sys.modules, "amdsmi", amdsmi)
        return nvml, amdsmi

    return install


def sampled_run(tmp_path, lab, series, samples=2, interval=0.05):
    """A run whose sampler took ``samples`` samples of ``series``; its record."""
    with labstats.Stats(tmp_path / "run", system_metrics=interval, flush_interval=0.05) as stats:
        assert wait_for(lambda: stats.flush() and count(lab, stats.run_id, series) >= samples)
    return lab.run(stats.run_id)


def values(run, name):
    return set(run.series(name).values)


def test_amd_gpus_are_sampled_through_amdsmi_with_whether_the_run_uses_them(tmp_path, url, lab, libraries):
    _, amd = libraries(None, FakeAmdsmi(gpus=2, users={0: [os.getpid()], 1: [1]}))
    run = sampled_run(tmp_path, lab, "sys/gpu1/util_percent")
    assert amd.init_flags == FakeAmdsmi.AmdSmiInitFlags.INIT_AMD_GPUS
    assert values(run, "sys/gpu0/used_by_run") == {1.0}
    assert values(run, "sys/gpu1/used_by_run") == {0.0}  # only another process on it
    assert values(run, "sys/gpu1/util_percent") == {71.0}
    assert values(run, "sys/gpu1/memory_used_bytes") == {4.0 * 2**30}
    assert values(run, "sys/gpu0/memory_total_bytes") == {192.0 * 2**30}
    assert values(run, "sys/gpu1/power_watts") == {301.0}  # the average where the current is N/A
    assert values(run, "sys/gpu1/temperature_celsius") == {51.0}  # the edge sensor's
    # Without NVML on an AMD box nothing is said about NVML.
    assert run.series(system.GPU_STATUS).values == [f"2 GPU(s) through amdsmi, driver {DRIVER}"]


def test_fields_a_board_does_not_offer_are_left_out_and_said(tmp_path, url, lab, libraries):
    libraries(None, FakeAmdsmi(gpus=1, users={0: [1]}, no_power=True, no_edge=True, process_handles=True))
    run = sampled_run(tmp_path, lab, "sys/gpu0/util_percent")
    names = run.series_names()
    assert "sys/gpu0/power_watts" not in names  # "N/A"
    assert "sys/gpu0/used_by_run" not in names  # process handles, no pids
    assert values(run, "sys/gpu0/temperature_celsius") == {85.0}  # the hotspot's, without an edge sensor
    assert run.series(system.GPU_STATUS).values == [
        f"1 GPU(s) through amdsmi, driver {DRIVER}; not offered by the driver: power_watts, used_by_run"
    ]


def test_both_vendors_at_once_amd_numbered_after_nvidia(tmp_path, url, lab, libraries):
    libraries(FakeNvml(gpus=2), FakeAmdsmi(gpus=1))
    run = sampled_run(tmp_path, lab, "sys/gpu2/util_percent")
    assert values(run, "sys/gpu0/util_percent") == {40.0}  # NVML's
    assert values(run, "sys/gpu1/util_percent") == {41.0}
    assert values(run, "sys/gpu2/util_percent") == {70.0}  # amdsmi's first GPU
    assert values(run, "sys/gpu2/memory_total_bytes") == {192.0 * 2**30}
    assert not [name for name in run.series_names() if name.startswith("sys/gpu3")]
    assert run.series(system.GPU_STATUS).values == [
        f"2 GPU(s) through NVML, driver 550.54.15; 1 GPU(s) through amdsmi, driver {DRIVER}"
    ]


def test_an_amdsmi_error_mid_run_stops_only_the_amd_gpus_with_one_warning(
    tmp_path, url, lab, libraries, caplog
):
    _, amd = libraries(FakeNvml(gpus=1), FakeAmdsmi(gpus=2, fail_after=2 + 2 * 3))  # probe, 3 samples
    caplog.set_level(logging.INFO, "labstats")
    run = sampled_run(tmp_path, lab, "sys/gpu0/util_percent", samples=10, interval=0.03)
    assert len(run.series("sys/gpu1/util_percent").idx) == 3
    assert len(run.series("sys/gpu2/temperature_celsius").idx) == 3  # a sample holds all its GPUs or none
    assert len(run.series("sys/gpu0/util_percent").idx) >= 10  # NVIDIA's go on
    assert len(run.series("sys/proc_rss_bytes").idx) >= 10  # and the rest
    assert list(run.series(system.GPU_STATUS).values) == [
        f"1 GPU(s) through NVML, driver 550.54.15; 2 GPU(s) through amdsmi, driver {DRIVER}",
        "1 GPU(s) through NVML, driver 550.54.15; GPU metrics stopped: amdsmi failed mid-run (GPU is lost)",
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "GPU" in r.getMessage()]
    assert [r.getMessage() for r in warnings] == [
        "labstats: GPU metrics stopped: amdsmi failed mid-run (GPU is lost); the other system metrics go on"
    ]
    assert amd.activity_reads == 2 + 2 * 3 + 1  # no amdsmi call after the failure
    assert amd.shutdowns == 1


@pytest.mark.parametrize(
    ("nvml", "amd", "why"),
    [
        (None, None, "no GPU metrics: pynvml is not installed (pip install 'labstats[gpu]'); "
                     "amdsmi is not installed (ROCm's Python package, for AMD GPUs)"),
        (FakeNvml(gpus=0), FakeAmdsmi(init_error="AMDSMI_STATUS_INIT_ERROR"),
         "no GPU metrics: NVML found no GPU; amdsmi did not start (AMDSMI_STATUS_INIT_ERROR)"),
        (None, FakeAmdsmi(gpus=0), "no GPU metrics: pynvml is not installed (pip install 'labstats[gpu]'); "
                                   "amdsmi found no GPU"),
    ],
)  # fmt: skip
def test_no_gpu_at_all_says_why_of_both_once(tmp_path, url, lab, libraries, nvml, amd, why):
    libraries(nvml, amd)
    run = sampled_run(tmp_path, lab, "sys/proc_rss_bytes", samples=4, interval=0.03)
    assert run.series(system.GPU_STATUS).values == [why]
    assert not [name for name in run.series_names() if name.startswith("sys/gpu0")]


def test_without_amdsmi_nothing_is_said_about_amd_where_nvidia_gpus_are(tmp_path, url, lab, libraries):
    libraries(FakeNvml(gpus=1), None)
    run = sampled_run(tmp_path, lab, "sys/gpu0/util_percent")
    assert run.series(system.GPU_STATUS).values == ["1 GPU(s) through NVML, driver 550.54.15"]


RUN = "import sys; print('ready', flush=True); sys.stdin.read()"


@pytest.fixture
def run_process():
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "ready\n"
    yield proc
    proc.stdin.close()
    proc.wait(10)


def test_the_agent_lists_amd_gpus_after_nvidia_with_their_processes(url, redis_server, tmp_path, run_process):
    client = redis_server.client()
    record_run(client, "alice.r1", run_process.pid)
    amd = FakeAmdsmi(gpus=1, users={0: [run_process.pid, run_process.pid]})
    box = agent.BoxAgent(client, "gpu-a", agent.BoxSampler([tmp_path], NamedNvml(gpus=1), amd), interval=10.0)
    box.sampler.start()
    state = box.step()

    assert [g["index"] for g in state["gpus"]] == [0, 1]
    assert state["gpus"][0]["name"] == "Stand-in H100"
    assert state["gpus"][1] == {
        "index": 1, "name": "Stand-in MI300X", "uuid": "amd-uuid-0", "util_percent": 70.0,
        "memory_used_bytes": 3 * 2**30, "memory_total_bytes": 192 * 2**30, "power_watts": 300.0,
        "temperature_celsius": 50.0,
        "processes": [{"pid": run_process.pid, "user": ME, "run": "alice.r1"}],  # each pid once
    }  # fmt: skip
    assert (
        state["gpu_status"]
        == f"1 GPU(s) through NVML, driver 550.54.15; 1 GPU(s) through amdsmi, driver {DRIVER}"
    )
    assert state["runs"] == ["alice.r1"]
    history = client.xrange("ls:box:gpu-a:history")
    assert float(history[-1][1][b"gpu1_util_percent"]) == 70.0
    assert float(history[-1][1][b"gpu1_memory_used_bytes"]) == 3 * 2**30

    amd.fail_after = amd.activity_reads  # the AMD GPU is lost: NVIDIA's stays in the state
    state = box.step()
    assert [g["index"] for g in state["gpus"]] == [0]
    assert state["gpu_status"] == (
        "1 GPU(s) through NVML, driver 550.54.15; GPU metrics stopped: amdsmi failed mid-run (GPU is lost)"
    )
    box.sampler.stop()
    assert amd.shutdowns == 1


def test_the_agent_without_amdsmi_on_an_nvidia_box_says_nothing_of_amd(
    url, redis_server, tmp_path, libraries
):
    libraries(None, None)
    sampler = agent.BoxSampler([tmp_path], NamedNvml(gpus=1))
    sampler.start()
    state = sampler.sample({})
    assert [g["name"] for g in state["gpus"]] == ["Stand-in H100"]
    assert state["gpu_status"] == "1 GPU(s) through NVML, driver 550.54.15"


def test_a_library_without_name_uuid_or_driver_calls_still_has_its_gpus_sampled():
    # The benchmark's stand-in (and an old driver) offers no nvmlDeviceGetName/GetUUID: the box
    # agent, which names each GPU, must still start and sample it.
    from labstats.capture.system import GpuPart

    class Bare:
        def nvmlInit(self): ...
        def nvmlShutdown(self): ...
        def nvmlDeviceGetCount(self):
            return 1

        def nvmlDeviceGetHandleByIndex(self, index):
            return index

        def nvmlDeviceGetTemperature(self, handle, sensor):
            return 50

    part = GpuPart(Bare())
    part.start()
    assert part.active
    assert (part.name(0), part.uuid(0)) == ("", "")
    assert "driver ?" in part.status
