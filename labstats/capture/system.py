"""System metrics sampled beside a run: its GPUs, its process tree, the box.

    sampler = SystemSampler(sink, interval=10.0, paths={"spool": spool_dir, "artifacts": store_dir})
    sampler.start()          # a daemon thread of its own; the first sample one interval later
    sampler.stop(timeout)    # no sample reaches the sink once it returns

Every ``interval`` seconds the thread calls ``sink(idx, values)``: ``idx`` is the sample's
wall time in unix milliseconds and ``values`` maps series names under ``sys/`` to numbers
(see :data:`SERIES` and the per-GPU names of :func:`gpu_series`). The logger's sink queues
them on the run's writer like any other point.

What is sampled, each part on its own (one failing stops only itself, with one warning):

- every GPU through NVML (``pynvml``, the ``nvidia-ml-py`` package, imported here lazily),
  and AMD's through ``amdsmi`` where it is installed (numbered after NVIDIA's; tested with a
  stand-in only, as no AMD GPU was at hand): utilisation, memory used and total, power,
  temperature, and whether a process of this run uses it. The text series ``sys/gpu_status``
  says what was found, once; without any GPU it says why neither library found one. An
  error of either library mid-run stops only its GPUs, with one warning, and the status says so.
- the run's process tree (this process and its children, DataLoader workers included): CPU %,
  resident memory and threads, summed (``psutil``);
- the box: CPU %, memory, disk and network rates, and the free space where ``paths`` live.

Without psutil the process and box parts sample nothing and ``sys/host_status`` says why,
once. Nothing here raises out of the thread: a sampler must never end a training run.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("labstats")

PREFIX = "sys/"
DEFAULT_INTERVAL = 10.0

# The process tree's and the box's series (the GPUs' are named by gpu_series).
SERIES = {
    "proc_cpu_percent": "the run's processes' CPU, summed (100 = one core)",
    "proc_rss_bytes": "their resident memory, summed (shared pages count once per process)",
    "proc_threads": "their threads",
    "proc_count": "the processes: this one and its children",
    "cpu_percent": "the box's CPU use (100 = all its cores)",
    "memory_used_bytes": "the box's memory in use",
    "memory_available_bytes": "the box's memory available",
    "disk_read_bytes_per_s": "the box's disk reads, since the last sample",
    "disk_write_bytes_per_s": "the box's disk writes, since the last sample",
    "net_recv_bytes_per_s": "bytes received by the box's network interfaces",
    "net_sent_bytes_per_s": "bytes sent by them",
}
GPU_FIELDS = ("util_percent", "memory_used_bytes", "memory_total_bytes", "power_watts",
              "temperature_celsius", "used_by_run")  # fmt: skip
GPU_STATUS = PREFIX + "gpu_status"
HOST_STATUS = PREFIX + "host_status"
AMDSMI_STATUS_NOT_SUPPORTED = 2  # amdsmi's err_code for a call a board does not offer

Sink = Callable[[int, dict[str, Any]], Any]


def gpu_series(index: int, field: str) -> str:
    """The series of one GPU's field: ``sys/gpu0/util_percent``."""
    return f"{PREFIX}gpu{index}/{field}"


def free_series(place: str) -> str:
    """The series of the free space where ``place`` lives: ``sys/spool_free_bytes``."""
    return f"{PREFIX}{place}_free_bytes"


class VendorGpus:
    """What the GPU parts of every vendor share: finding the GPUs, which fields each offers,
    sampling them under ``sys/gpu<i>/``, stopping on an error. A vendor's part says how its
    library is opened and closed and how each field is read (None: no value this time)."""

    library = ""  # the library's name, in the status: "NVML"
    module = ""  # the Python module imported when no stand-in is given
    missing = ""  # why there is nothing when the module is not installed

    def __init__(self, api: Any = None) -> None:
        self.api = api
        self.handles: list[Any] = []
        self.fields: list[tuple[str, ...]] = []  # each GPU's fields that its driver offers
        self.status = ""  # what the part found, in words (see gpu_status)
        self.active = False
        self.found = 0  # GPUs found at the start (kept when an error stops the part)
        self.first_index = 0  # this part's first GPU is sys/gpu<first_index> (after other vendors')

    def start(self) -> None:
        """Find the GPUs; ``status`` says what was found or why there are none."""
        try:
            if self.api is None:
                self.api = importlib.import_module(self.module)
            self.handles = list(self._open())
        except ImportError:
            self.status = self.missing
            return
        except Exception as exc:  # no driver, no device, a library that will not load
            self.status = f"{self.library} did not start ({_why(exc)})"
            return
        if not self.handles:
            self.status = f"{self.library} found no GPU"
            return
        self.fields = [self._offered(handle) for handle in self.handles]
        self.active = True
        self.found = len(self.handles)
        self.status = f"{self.found} GPU(s) through {self.library}, driver {self._driver()}"
        left_out = sorted({f for fields in self.fields for f in GPU_FIELDS if f not in fields})
        if left_out:
            self.status += f"; not offered by the driver: {', '.join(left_out)}"

    def sample(self, pids: set[int], values: dict[str, Any]) -> None:
        """Each GPU's fields into ``values``: all of them, or none when a read fails."""
        sampled = {}
        for offset, (handle, fields) in enumerate(zip(self.handles, self.fields, strict=True)):
            for field in fields:
                value = self._read(field, handle, pids)
                if value is not None:
                    sampled[gpu_series(self.first_index + offset, field)] = value
        values.update(sampled)

    def stop_on_error(self, exc: BaseException) -> str:
        """Stop the part after an error mid-run; the status it leaves."""
        self.active = False
        self.status = f"GPU metrics stopped: {self.library} failed mid-run ({_why(exc)})"
        self.shutdown()
        return self.status

    def shutdown(self) -> None:
        if self.handles:
            self.handles = []
            try:
                self._close()
            except Exception:  # the driver is gone already: nothing to release
                log.debug("labstats: closing %s failed", self.library, exc_info=True)

    def process_pids(self, handle: Any) -> list[int] | None:
        """The ids of the processes on the GPU as its driver sees them (inside a container
        with its own pid namespace they are the host's); None when the library lists none."""
        raise NotImplementedError

    def _offered(self, handle: Any) -> tuple[str, ...]:
        """The fields this GPU answers (power is not offered by every board). An error other
        than "not supported" is left to the first sample, which stops the part."""
        offered = []
        for field in GPU_FIELDS:
            try:
                if self._read(field, handle, set()) is None:
                    continue
            except Exception as exc:
                if self._not_supported(exc):
                    continue
            offered.append(field)
        return tuple(offered)

    def _used_by_run(self, handle: Any, pids: set[int]) -> float | None:
        on_gpu = self.process_pids(handle)
        return None if on_gpu is None else float(not pids.isdisjoint(on_gpu))

    def _open(self) -> list[Any]:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _read(self, field: str, handle: Any, pids: set[int]) -> float | None:
        raise NotImplementedError

    def _not_supported(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _driver(self) -> str:
        raise NotImplementedError

    def name(self, handle: Any) -> str:
        """The GPU's model ("" when the library will not say)."""
        raise NotImplementedError

    def uuid(self, handle: Any) -> str:
        raise NotImplementedError


class GpuPart(VendorGpus):
    """NVIDIA's GPUs through NVML. ``api``: the pynvml module or an object offering its calls
    (a stand-in in tests and benchmarks); None imports pynvml on the sampler thread."""

    library, module = "NVML", "pynvml"
    missing = "pynvml is not installed (pip install 'labstats[gpu]')"

    def process_pids(self, handle: Any) -> list[int]:
        return [p.pid for p in self.api.nvmlDeviceGetComputeRunningProcesses(handle)]

    def name(self, handle: Any) -> str:
        return self._text(lambda: self.api.nvmlDeviceGetName(handle))

    def uuid(self, handle: Any) -> str:
        return self._text(lambda: self.api.nvmlDeviceGetUUID(handle))

    def _open(self) -> list[Any]:
        self.api.nvmlInit()
        return [self.api.nvmlDeviceGetHandleByIndex(i) for i in range(self.api.nvmlDeviceGetCount())]

    def _close(self) -> None:
        self.api.nvmlShutdown()

    def _read(self, field: str, handle: Any, pids: set[int]) -> float | None:
        nvml = self.api
        if field == "util_percent":
            return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        if field == "memory_used_bytes":
            return float(nvml.nvmlDeviceGetMemoryInfo(handle).used)
        if field == "memory_total_bytes":
            return float(nvml.nvmlDeviceGetMemoryInfo(handle).total)
        if field == "power_watts":
            return nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # milliwatts
        if field == "temperature_celsius":
            return float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        return self._used_by_run(handle, pids)

    def _not_supported(self, exc: BaseException) -> bool:
        return getattr(exc, "value", None) == getattr(self.api, "NVML_ERROR_NOT_SUPPORTED", 3)

    def _driver(self) -> str:
        return self._text(lambda: self.api.nvmlSystemGetDriverVersion()) or "?"

    @staticmethod
    def _text(call: Callable[[], Any]) -> str:
        try:
            value = call()
        except Exception:  # an old driver or a stand-in without the call: the GPU is still sampled
            return ""
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class AmdGpuPart(VendorGpus):
    """AMD's GPUs through amdsmi (ROCm's SMI library's Python binding), imported lazily like
    pynvml; ``api``: the module or a stand-in offering its calls. Tested with a stand-in
    only (no AMD GPU here); the calls and their units are those of amdsmi 6 and 7."""

    library, module = "amdsmi", "amdsmi"
    missing = "amdsmi is not installed (ROCm's Python package, for AMD GPUs)"

    def process_pids(self, handle: Any) -> list[int] | None:
        # amdsmi 6 and later list each process as a dict with its pid; older ones list handles.
        listed = self.api.amdsmi_get_gpu_process_list(handle)
        if not all(isinstance(p, Mapping) and isinstance(p.get("pid"), int) for p in listed):
            return None
        return [p["pid"] for p in listed]

    def name(self, handle: Any) -> str:
        try:
            return str(self.api.amdsmi_get_gpu_asic_info(handle)["market_name"])
        except Exception:  # not offered by this board or library: the GPU is still sampled
            return ""

    def uuid(self, handle: Any) -> str:
        try:
            return str(self.api.amdsmi_get_gpu_device_uuid(handle))
        except Exception:
            return ""

    def _open(self) -> list[Any]:
        self.api.amdsmi_init(self.api.AmdSmiInitFlags.INIT_AMD_GPUS)
        return self.api.amdsmi_get_processor_handles()

    def _close(self) -> None:
        self.api.amdsmi_shut_down()

    def _read(self, field: str, handle: Any, pids: set[int]) -> float | None:
        # A value the board does not report reads "N/A": no value (left out at the start).
        amd = self.api
        if field == "util_percent":
            return _number(amd.amdsmi_get_gpu_activity(handle).get("gfx_activity"))
        if field == "memory_used_bytes":
            return _number(amd.amdsmi_get_gpu_memory_usage(handle, amd.AmdSmiMemoryType.VRAM))
        if field == "memory_total_bytes":
            return _number(amd.amdsmi_get_gpu_memory_total(handle, amd.AmdSmiMemoryType.VRAM))
        if field == "power_watts":  # watts; newer boards say the current power, older the average
            power = amd.amdsmi_get_power_info(handle)
            current = _number(power.get("current_socket_power"))
            return _number(power.get("average_socket_power")) if current is None else current
        if field == "temperature_celsius":
            try:
                return _number(self._temperature(handle, amd.AmdSmiTemperatureType.EDGE))
            except Exception as exc:  # boards without an edge sensor (MI300) have the hotspot
                if not self._not_supported(exc):
                    raise
                return _number(self._temperature(handle, amd.AmdSmiTemperatureType.HOTSPOT))
        return self._used_by_run(handle, pids)

    def _temperature(self, handle: Any, sensor: Any) -> Any:
        return self.api.amdsmi_get_temp_metric(handle, sensor, self.api.AmdSmiTemperatureMetric.CURRENT)

    def _not_supported(self, exc: BaseException) -> bool:
        return getattr(exc, "err_code", None) == AMDSMI_STATUS_NOT_SUPPORTED

    def _driver(self) -> str:
        try:
            return str(self.api.amdsmi_get_gpu_driver_info(self.handles[0])["driver_version"])
        except Exception:
            return "?"


def gpu_parts(nvml: Any = None, amdsmi: Any = None) -> tuple[GpuPart, AmdGpuPart]:
    """The GPU parts, NVIDIA's first: AMD's GPUs are numbered after NVIDIA's."""
    return GpuPart(nvml), AmdGpuPart(amdsmi)


def start_gpus(parts: Iterable[VendorGpus]) -> None:
    """Start each part, each numbering its GPUs after the previous parts'."""
    first = 0
    for part in parts:
        part.start()
        part.first_index = first
        first += part.found


def gpu_status(parts: Iterable[VendorGpus]) -> str:
    """``sys/gpu_status``: what the parts that found GPUs say, or why none found one (a library
    that is not installed is named only then)."""
    parts = list(parts)
    found = [part.status for part in parts if part.found]
    return "; ".join(found) if found else "no GPU metrics: " + "; ".join(p.status for p in parts)


def _number(value: Any) -> float | None:
    """A reading as a number; None for amdsmi's "N/A" (or anything else not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class HostPart:
    """The run's process tree and the box, through psutil (imported lazily, like pynvml)."""

    def __init__(self, pid: int, paths: Mapping[str, Path]) -> None:
        self.pid = pid
        self.paths = dict(paths)
        self.psutil: Any = None
        self.root: Any = None
        self.processes: dict[int, Any] = {}  # psutil.Process objects kept: cpu_percent is a delta
        self.status = ""
        self.active = False
        self._counters: tuple[float, Any, Any] = (0.0, None, None)  # (time, disk, net) at the last sample

    def start(self) -> None:
        try:
            self.psutil = importlib.import_module("psutil")
            self.root = self.psutil.Process(self.pid)
        except Exception as exc:  # ImportError, or a psutil that cannot read this system
            self.status = f"no process or box metrics: psutil is not available ({_why(exc)})"
            return
        self.psutil.cpu_percent(None)  # the first call sets the baseline of the next
        self._counters = self._io_counters()
        self.active = True

    def tree_pids(self) -> set[int]:
        """This process and its children's ids (for the GPUs' used_by_run)."""
        return set(self.processes) if self.processes else {self.pid}

    def sample(self, values: dict[str, Any]) -> None:
        self._sample_tree(values)
        self._sample_box(values)

    def _sample_tree(self, values: dict[str, Any]) -> None:
        psutil = self.psutil
        current = {self.pid: self.root}
        for child in self.root.children(recursive=True):
            current[child.pid] = self.processes.get(child.pid, child)  # keeps its CPU baseline
        cpu = rss = threads = 0.0
        gone = []
        for pid, proc in current.items():
            try:
                with proc.oneshot():
                    # A new child's first cpu_percent is 0.0: its baseline is set now.
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                gone.append(pid)  # ended since it was listed
        for pid in gone:
            del current[pid]
        self.processes = current
        values[PREFIX + "proc_cpu_percent"] = cpu
        values[PREFIX + "proc_rss_bytes"] = rss
        values[PREFIX + "proc_threads"] = threads
        values[PREFIX + "proc_count"] = float(len(current))

    def _sample_box(self, values: dict[str, Any]) -> None:
        psutil = self.psutil
        values[PREFIX + "cpu_percent"] = float(psutil.cpu_percent(None))
        memory = psutil.virtual_memory()
        values[PREFIX + "memory_used_bytes"] = float(memory.used)
        values[PREFIX + "memory_available_bytes"] = float(memory.available)
        then, now = self._counters, self._io_counters()
        self._counters = now
        elapsed = now[0] - then[0]
        for name, (old, new) in {
            "disk_read_bytes_per_s": _pair(then[1], now[1], "read_bytes"),
            "disk_write_bytes_per_s": _pair(then[1], now[1], "write_bytes"),
            "net_recv_bytes_per_s": _pair(then[2], now[2], "bytes_recv"),
            "net_sent_bytes_per_s": _pair(then[2], now[2], "bytes_sent"),
        }.items():
            if elapsed > 0 and old is not None and new is not None:  # a container may have no disks
                values[PREFIX + name] = max(0.0, (new - old) / elapsed)  # counters can reset
        for place, path in self.paths.items():
            with contextlib.suppress(OSError):  # the place is gone (an unmounted disk): its series pauses
                values[free_series(place)] = float(psutil.disk_usage(str(_existing(path))).free)

    def _io_counters(self) -> tuple[float, Any, Any]:
        psutil = self.psutil
        return time.monotonic(), psutil.disk_io_counters(), psutil.net_io_counters()


class SystemSampler(threading.Thread):
    """Samples the GPUs, the run's process tree and the box every ``interval`` seconds on a
    daemon thread of its own and hands each sample to ``sink`` (see the module docstring)."""

    def __init__(
        self,
        sink: Sink,
        interval: float = DEFAULT_INTERVAL,
        *,
        paths: Mapping[str, str | os.PathLike] | None = None,
        pid: int | None = None,
        nvml: Any = None,
        amdsmi: Any = None,
    ) -> None:
        super().__init__(name="labstats-system", daemon=True)
        if not interval > 0:
            raise ValueError(f"labstats: the system metrics interval must be positive, not {interval!r}")
        self.sink = sink
        self.interval = float(interval)
        self.gpu_parts = gpu_parts(nvml, amdsmi)
        self.gpus, self.amd_gpus = self.gpu_parts
        self.host = HostPart(os.getpid() if pid is None else pid,
                             {place: Path(path) for place, path in (paths or {}).items()})  # fmt: skip
        self.samples = 0  # samples handed to the sink
        self._stopping = threading.Event()
        # Held while a sample goes to the sink: stop() takes it, so none goes after stop().
        self._sending = threading.Lock()
        self._notes: dict[str, str] = {}  # status texts still to be sent (once each)

    def stop(self, timeout: float | None = 5.0) -> None:
        """No sample reaches the sink once this returns (waits up to ``timeout`` for one being
        sent); the thread ends after its current call."""
        self._stopping.set()
        if self._sending.acquire(timeout=-1 if timeout is None else timeout):
            self._sending.release()

    def run(self) -> None:
        try:
            self.prepare()
            while not self._stopping.wait(self.interval):
                self.sample_once()
        except Exception:  # a bug here must never reach training: the sampler ends instead
            log.exception("labstats: system metrics stopped")
        finally:
            for part in self.gpu_parts:
                part.shutdown()

    def prepare(self) -> None:
        """Start the parts: find the GPUs, set the CPU baselines (the thread does it first)."""
        self.host.start()
        start_gpus(self.gpu_parts)
        status = gpu_status(self.gpu_parts)
        if not any(part.active for part in self.gpu_parts):
            log.info("labstats: %s", status)
        if not self.host.active:
            log.warning("labstats: %s", self.host.status)
            self._notes[HOST_STATUS] = self.host.status
        self._notes[GPU_STATUS] = status

    def sample_once(self) -> dict[str, Any]:
        """Take one sample and send it (from the sampler thread; the benchmark calls it too)."""
        values: dict[str, Any] = {}
        if self.host.active:
            try:
                self.host.sample(values)
            except Exception as exc:
                self.host.active = False
                self._notes[HOST_STATUS] = status = f"process and box metrics stopped ({_why(exc)})"
                log.warning("labstats: %s", status, exc_info=exc)
        for part in self.gpu_parts:
            if not part.active:
                continue
            try:
                part.sample(self.host.tree_pids(), values)
            except Exception as exc:  # a library's error (a GPU fell off the bus, the driver reloaded)
                log.warning("labstats: %s; the other system metrics go on", part.stop_on_error(exc))
                self._notes[GPU_STATUS] = gpu_status(self.gpu_parts)
        values.update(self._notes)
        with self._sending:
            if self._stopping.is_set():
                return values
            if values:
                self.sink(int(time.time() * 1000), values)
                self.samples += 1
            self._notes.clear()
        return values


def _pair(then: Any, now: Any, field: str) -> tuple[Any, Any]:
    return getattr(then, field, None), getattr(now, field, None)


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the spool folder is made on its first use)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."
