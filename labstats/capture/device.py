"""Capture GPU values without a device sync on the training thread.

``tensor.item()`` or ``tensor.cpu()`` make the training thread wait until the GPU has run
everything queued so far; the GPU then idles while Python catches up. Instead, the training
thread only *enqueues* a copy into pinned host memory and records a CUDA event after it, on
the tensor's current stream; the writer thread waits for that event and reads the copy.
Because the copy is queued on the stream, an in-place change queued after the call (an
optimizer step) cannot leak into the captured value.

Pinned memory is bounded (``configure(pinned_bytes=...)``, default 256 MiB) and its buffers
are reused; when all of it is in flight, the training thread waits for the writer
(backpressure, as for the writer's queue: nothing is dropped).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import numpy as np

DEFAULT_PINNED_BYTES = 256 * 2**20


class PinnedPool:
    """Reusable pinned host buffers, keyed by (dtype, number of elements), within a budget."""

    def __init__(self, budget: int = DEFAULT_PINNED_BYTES) -> None:
        self.budget = budget
        self.in_use = 0
        self._free: dict[tuple[Any, int], list[Any]] = defaultdict(list)
        self._cond = threading.Condition()
        self.waited = 0.0  # seconds the training thread spent waiting for buffers

    def acquire(self, torch: Any, dtype: Any, numel: int, nbytes: int) -> Any:
        with self._cond:
            started = None
            # A tensor larger than the whole budget still goes through, alone.
            while self.in_use and self.in_use + nbytes > self.budget:
                started = started or time.monotonic()
                self._cond.wait(0.05)
            if started is not None:
                self.waited += time.monotonic() - started
            self.in_use += nbytes
            free = self._free[dtype, numel]
            if free:
                return free.pop()
        return torch.empty(numel, dtype=dtype, pin_memory=True)

    def release(self, buffer: Any, nbytes: int) -> None:
        with self._cond:
            self.in_use -= nbytes
            self._free[buffer.dtype, buffer.numel()].append(buffer)
            self._cond.notify_all()

    def idle_buffers(self) -> list[Any]:
        """The buffers waiting to be reused (none of them holds a value in flight)."""
        with self._cond:
            return [buffer for buffers in self._free.values() for buffer in buffers]


_pool = PinnedPool()


def configure(pinned_bytes: int | None = None) -> None:
    """Set the pinned host memory budget for values in flight from GPUs (bytes)."""
    if pinned_bytes is not None:
        _pool.budget = int(pinned_bytes)


def pool() -> PinnedPool:
    return _pool


class Pending:
    """A device→host copy in flight: read it (on the writer thread) with :meth:`result`."""

    __slots__ = ("_pool", "buffer", "event", "nbytes", "scalar", "shape")

    def __init__(self, buffer: Any, event: Any, shape: tuple, scalar: bool, nbytes: int, pool: PinnedPool):
        self.buffer = buffer
        self.event = event
        self.shape = shape
        self.scalar = scalar
        self.nbytes = nbytes
        self._pool = pool

    def result(self) -> Any:
        """Wait for the copy (this thread only), then a Python scalar or a NumPy array."""
        try:
            self.event.synchronize()
            host = self.buffer.numpy()
            if self.scalar:
                return host[0].item()
            return np.array(host, copy=True).reshape(self.shape)
        finally:
            self._pool.release(self.buffer, self.nbytes)

    def borrow(self) -> tuple[np.ndarray, Any]:
        """Wait for the copy; the pinned memory itself as an array (no copy) and the call
        that gives it back to the pool, once it is no longer read."""
        try:
            self.event.synchronize()
            array = self.buffer.numpy().reshape(self.shape)
        except BaseException:  # a failed copy: the buffer goes back, the value is left out
            self._pool.release(self.buffer, self.nbytes)
            raise
        return array, lambda: self._pool.release(self.buffer, self.nbytes)


def is_cuda(tensor: Any) -> bool:
    return getattr(getattr(tensor, "device", None), "type", None) == "cuda"


def capture_cuda(tensor: Any, torch: Any) -> Pending:
    """Enqueue the copy of a (detached) CUDA tensor to pinned host memory; returns at once."""
    t = numpy_ready(tensor, torch)
    numel = t.numel()
    nbytes = numel * t.element_size()
    buffer = _pool.acquire(torch, t.dtype, numel, nbytes)
    buffer.copy_(t.reshape(-1), non_blocking=True)  # queued on the current stream: ordered
    # blocking: the writer sleeps while it waits instead of spinning a core against the
    # training thread's kernel launches.
    event = torch.cuda.Event(blocking=True)
    if _several_gpus(torch):  # the tensor's device may not be the current one
        event.record(torch.cuda.current_stream(t.device))
    else:
        event.record()
    return Pending(buffer, event, tuple(t.shape), t.dim() == 0, nbytes, _pool)


_gpu_count: int | None = None


def _several_gpus(torch: Any) -> bool:
    global _gpu_count
    if _gpu_count is None:
        _gpu_count = torch.cuda.device_count()
    return _gpu_count > 1


NO_NUMPY_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def numpy_ready(tensor: Any, torch: Any) -> Any:
    """The tensor as NumPy can hold it, on its own device (no copy to the host yet): dense,
    and float32 for the dtypes NumPy lacks (float32 holds each of their values exactly)."""
    t = tensor.to_dense() if getattr(tensor, "is_sparse", False) else tensor
    dtype = getattr(t, "dtype", None)  # (duck-typed stand-ins may have none)
    if dtype is not None and any(dtype == getattr(torch, name, None) for name in NO_NUMPY_DTYPES):
        t = t.float()
    return t


def histogram_cuda(tensor: Any, torch: Any, bins: int) -> Pending:
    """A histogram computed on the device (min, max and ``bins`` equal bins), queued like a
    copy: no sync. Returned (by ``result``) as float64 [min, max, count_0 .. count_bins-1]."""
    return capture_cuda(histogram_packed(tensor, torch, bins), torch)


def histogram_packed(tensor: Any, torch: Any, bins: int) -> Any:
    """The packed histogram as a tensor on the tensor's own device, with torch ops only."""
    t = tensor.detach().reshape(-1).float()
    packed = torch.zeros(bins + 2, dtype=torch.float64, device=tensor.device)
    if t.numel():
        # No boolean indexing (its size would need a sync): non-finite values go to an extra
        # bin that is dropped, and are left out of min and max.
        finite = torch.isfinite(t)
        low = torch.where(finite, t, torch.inf).amin()
        high = torch.where(finite, t, -torch.inf).amax()
        width = (high - low).clamp_min(torch.finfo(torch.float32).tiny)
        index = ((t - low) / width * bins).nan_to_num(0).long().clamp_(0, bins - 1)
        index = torch.where(finite, index, bins)
        # scatter_add_, not bincount: bincount reads the largest index back to the host (a sync).
        counts = torch.zeros(bins + 1, dtype=torch.float64, device=tensor.device)
        counts.scatter_add_(0, index, torch.ones_like(index, dtype=torch.float64))
        packed[2:] = counts[:bins]
        packed[0], packed[1] = low.double(), high.double()
    return packed


def histogram_numpy(values: np.ndarray, bins: int) -> np.ndarray:
    """The same histogram, computed on the CPU (for NumPy arrays and CPU tensors)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    flat = flat[np.isfinite(flat)]
    packed = np.zeros(bins + 2)
    if flat.size:
        low, high = float(flat.min()), float(flat.max())
        width = max(high - low, np.finfo(np.float32).tiny)
        index = np.clip(((flat - low) / width * bins).astype(np.int64), 0, bins - 1)
        packed[2:] = np.bincount(index, minlength=bins)
        packed[0], packed[1] = low, high
    return packed
