"""Take a cheap, safe copy of a value on the training thread.

The calling thread only copies what could change under us (arrays, tensors, containers);
turning copies into bytes happens later on the writer thread. Frameworks are recognised
without importing them: a PyTorch, TensorFlow or JAX object can only exist if its module
was imported by the training script already.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from labstats.capture import device
from labstats.format import codec
from labstats.format.codec import Encoded

# What a snapshot is: a Python bool/int/float (a scalar point), or one of these wrappers.


class Deferred:
    """An array-like copy to be turned into a NumPy array on the writer thread."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    @property
    def nbytes(self) -> int:
        """Memory the copy takes (what the writer's queue bound counts)."""
        obj = self.obj
        nbytes = getattr(obj, "nbytes", None)
        if nbytes is None:  # a TensorFlow tensor: from its shape and its dtype's size
            size = getattr(getattr(obj, "dtype", None), "size", 0)
            nbytes = int(np.prod(tuple(getattr(obj, "shape", ())), dtype=np.int64)) * size
        return int(nbytes or 0)

    def to_numpy(self) -> np.ndarray:
        obj = self.obj
        if hasattr(obj, "numpy") and not isinstance(obj, np.ndarray):
            return np.asarray(obj.numpy())
        return np.asarray(obj)

    def result(self) -> Any:
        """On the writer thread: the array, or a Python scalar for a 0-d value (a TensorFlow
        or JAX loss is then stored as a number, as a float logged directly is)."""
        array = self.to_numpy()
        return _numpy_scalar(array[()]) if array.ndim == 0 else array


_PLAIN_SCALARS = (bool, int, float)


def capture(value: Any) -> Any:
    """Snapshot ``value`` for later storage; raise :class:`codec.EncodeError` if unsupported."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return value
    if isinstance(value, np.generic):
        return _numpy_scalar(value)
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _numpy_scalar(value[()])
        codec.check_array(value)  # refused at the call, not left out later by the writer
        return Deferred(value.copy())
    if _is_torch_like(value):
        return _capture_torch(value)
    module = getattr(kind, "__module__", "") or ""
    if module.startswith("tensorflow") and hasattr(value, "numpy"):
        return _capture_tf(value)
    if module.startswith(("jax", "jaxlib")):
        # JAX arrays are immutable: a reference is a snapshot. The copy to host memory
        # starts now, beside the training, and the writer thread reads it (no wait here).
        start_copy = getattr(value, "copy_to_host_async", None)
        if start_copy is not None:
            start_copy()
        return Deferred(value)
    if isinstance(value, bool):  # subclasses of the plain scalars, such as IntEnum
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "__array__") and not isinstance(value, str | bytes | list | tuple | dict):
        return _from_array(np.array(value, copy=True))
    return Encoded(codec.encode(_plain(value)))


def _numpy_scalar(value: np.generic) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating) and value.dtype.itemsize <= 8:
        return float(value)
    return Encoded(codec.encode(np.asarray(value)))  # complex, long double: keep the dtype


def _from_array(array: np.ndarray) -> Any:
    if array.ndim == 0:
        return _numpy_scalar(array[()])
    codec.check_array(array)
    return Deferred(array)


def _is_torch_like(value: Any) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return True
    # Duck-typed stand-ins (tests without a GPU) and tensor subclasses from other packages.
    return hasattr(value, "detach") and hasattr(value, "device") and hasattr(value, "cpu")


class Histogram:
    """A histogram to store instead of a value: on the GPU it is computed there and copied
    like any value (``Pending``); otherwise the writer computes it from a copy."""

    __slots__ = ("bins", "source")

    def __init__(self, source: Any, bins: int) -> None:
        self.source = source  # device.Pending (GPU: already the histogram) or Deferred
        self.bins = bins

    @property
    def nbytes(self) -> int:
        return self.source.nbytes

    def result(self) -> np.ndarray:
        """float64 [min, max, count_0, ..., count_{bins-1}] (min, max of the finite values)."""
        if isinstance(self.source, device.Pending):
            return np.asarray(self.source.result(), dtype=np.float64)
        return device.histogram_numpy(self.source.to_numpy(), self.bins)


class CountedHistogram(Histogram):
    """A histogram already counted elsewhere (TensorBoard's, on import): stored as given."""

    __slots__ = ("packed",)

    def __init__(self, packed: np.ndarray) -> None:
        super().__init__(None, len(packed) - 2)
        self.packed = np.asarray(packed, dtype=np.float64)

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes

    def result(self) -> np.ndarray:
        return self.packed


def capture_histogram(value: Any, bins: int) -> Histogram:
    if _is_torch_like(value) and device.is_cuda(value):
        return Histogram(device.histogram_cuda(value, _framework(value), bins), bins)
    captured = capture(value)
    if not isinstance(captured, Deferred):
        captured = Deferred(np.atleast_1d(np.asarray(captured, dtype=np.float64)))
    return Histogram(captured, bins)


def _framework(tensor: Any) -> Any:
    """The module a tensor comes from (torch, or a stand-in in tests without a GPU)."""
    return sys.modules[type(tensor).__module__.split(".")[0]]


def _capture_torch(tensor: Any) -> Any:
    t = tensor.detach()
    if device.is_cuda(t):
        # Scalars too: an asynchronous copy, read by the writer (no loss.item() sync here).
        return device.capture_cuda(t, _framework(t))
    if t.dim() == 0:
        return t.item()
    t = device.numpy_ready(t, _framework(t))
    # On the CPU a clone; another device (not CUDA): .cpu() is the copy to host memory.
    return Deferred(t.clone() if t.device.type == "cpu" else t.cpu())


def _capture_tf(value: Any) -> Any:
    """TensorFlow without a wait for the device: a tensor is immutable, so a reference is a
    snapshot; a variable is read into one (an op queued on its device: an update after it
    copies the variable's buffer rather than change what was read). ``.numpy()``, which
    waits for the device, runs on the writer thread. Strings are read now (they are host
    values, and an array of them is refused at the call)."""
    if getattr(getattr(value, "dtype", None), "name", None) == "string":
        return _from_array(np.asarray(value.numpy()))
    if hasattr(value, "read_value"):  # tf.Variable
        value = value.read_value()
    return Deferred(value)


def _plain(value: Any) -> Any:
    """Deep-convert containers so that tensors inside them become NumPy arrays now."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if value is None or isinstance(value, str | bytes | bool | int | float | np.generic | np.ndarray):
        return value
    if not (_is_torch_like(value) or hasattr(value, "__array__") or hasattr(value, "numpy")):
        return value  # the codec names what it cannot store
    captured = capture(value)
    if isinstance(captured, Deferred):
        return captured.result()
    if isinstance(captured, device.Pending):  # a GPU tensor inside a container: read it now
        return captured.result()
    if isinstance(captured, Encoded):
        return codec.decode(captured)
    return captured
