"""A stand-in for the part of torch's CUDA API that labstats uses, for machines without a GPU.

Work queued on the fake stream (copies, in-place changes) runs only when some thread waits
for an event, and then all of it runs, as a GPU that has raced ahead would: a value read
from the source tensor at that moment (instead of from the queued copy) would already hold
later changes. Every call is noted with the thread that made it."""

from __future__ import annotations

import threading

import numpy as np

calls: list[tuple[str, str]] = []  # (operation, thread name)
_queue: list = []
_lock = threading.Lock()


def _note(op: str) -> None:
    calls.append((op, threading.current_thread().name))


def _enqueue(work) -> None:
    with _lock:
        _queue.append(work)


def _run_all() -> None:
    with _lock:
        work, _queue[:] = list(_queue), []
    for item in work:
        item()


class _Device:
    def __init__(self, kind: str) -> None:
        self.type = kind


class Tensor:
    def __init__(self, data, device: str = "cuda") -> None:
        self.data = np.array(data)
        self.device = _Device(device)
        self.is_sparse = False

    # what capture reads
    @property
    def dtype(self):
        return self.data.dtype

    @property
    def shape(self):
        return self.data.shape

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return self.data.size

    def element_size(self) -> int:
        return self.data.itemsize

    def detach(self) -> Tensor:
        return self

    def reshape(self, *shape) -> Tensor:
        view = Tensor.__new__(Tensor)
        view.data, view.device, view.is_sparse = self.data.reshape(*shape), self.device, False
        return view

    def cpu(self):  # a synchronous copy: labstats must not call it for CUDA tensors
        _note("cpu (sync)")
        _run_all()
        return Tensor(self.data.copy(), device="cpu")

    def item(self):  # a device sync, like loss.item()
        _note("item (sync)")
        _run_all()
        return self.data.item()

    # queued on the stream
    def copy_(self, source: Tensor, non_blocking: bool = False) -> Tensor:
        _note("copy")
        _enqueue(lambda: np.copyto(self.data, source.data.reshape(self.data.shape)))
        if not non_blocking:
            _run_all()
        return self

    def mul_(self, factor) -> Tensor:
        _note("mul_")
        _enqueue(lambda: np.multiply(self.data, factor, out=self.data))
        return self

    # host side of a pinned buffer
    def numpy(self) -> np.ndarray:
        _note("read")
        assert self.device.type == "cpu", "only host memory can be read"
        return self.data


def empty(numel: int, dtype, pin_memory: bool = False) -> Tensor:
    _note("alloc pinned" if pin_memory else "alloc")
    return Tensor(np.empty(numel, dtype=dtype), device="cpu")


class _Stream:
    pass


class cuda:  # named as torch.cuda
    _stream = _Stream()

    @staticmethod
    def current_stream(device=None) -> _Stream:
        return cuda._stream

    @staticmethod
    def device_count() -> int:
        return 1

    class Event:
        def __init__(self, blocking: bool = False) -> None:
            self.blocking = blocking

        def record(self, stream=None) -> None:
            _note("record")

        def synchronize(self) -> None:
            _note("synchronize")
            _run_all()
