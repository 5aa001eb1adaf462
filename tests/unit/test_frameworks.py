"""TensorFlow and JAX values are captured without waiting for their device: the training
thread keeps a snapshot (a TensorFlow tensor or JAX array is immutable; a variable is read
into one) and the writer thread copies it to host memory. Proven with stand-ins that note
which thread reads what (the frameworks are not installed here); scalars are stored as
numbers, and a variable changed after the call is stored as it was at the call."""

import threading

import numpy as np
import pytest

import labstats

calls: list[tuple[str, str]] = []  # (operation, thread name)


def note(op: str) -> None:
    calls.append((op, threading.current_thread().name))


@pytest.fixture(autouse=True)
def fresh_calls():
    calls.clear()


def ops_by(thread_prefix: str) -> set[str]:
    return {op for op, thread in calls if thread.startswith(thread_prefix)}


class DType:
    def __init__(self, array: np.ndarray) -> None:
        self.name = "string" if array.dtype.kind in "OS" else array.dtype.name
        self.size = array.dtype.itemsize


class EagerTensor:
    """tf.Tensor as labstats sees it: immutable, .numpy() waits for the device."""

    __module__ = "tensorflow.python.framework.ops"

    def __init__(self, data) -> None:
        self._data = np.array(data)
        self.dtype = DType(self._data)
        self.shape = self._data.shape

    def numpy(self) -> np.ndarray:
        note("numpy")
        return self._data.copy()


class ResourceVariable(EagerTensor):
    """tf.Variable: changed in place by assign_add; read_value() gives a tensor that later
    updates do not change (TensorFlow copies a variable's buffer that a read still uses)."""

    __module__ = "tensorflow.python.ops.resource_variable_ops"

    def read_value(self) -> EagerTensor:
        note("read_value")
        return EagerTensor(self._data.copy())

    def assign_add(self, delta) -> None:
        self._data += delta


class JaxArray:
    __module__ = "jaxlib.xla_extension"

    def __init__(self, data) -> None:
        self._data = np.array(data)
        self.ndim = self._data.ndim
        self.nbytes = self._data.nbytes

    def copy_to_host_async(self) -> None:
        note("copy_to_host_async")

    def __array__(self, dtype=None, copy=None):
        note("to host")
        return self._data


def test_tensorflow_values_are_read_on_the_writer_thread(tmp_path, lab):
    weights = ResourceVariable(np.arange(3, dtype=np.float32))
    with labstats.Stats(tmp_path / "r") as stats:
        for step in range(3):
            stats.log(step=step, loss=EagerTensor(np.float32(step / 2)), w=weights)
            weights.assign_add(10)  # the optimizer's update, after the call
    main = threading.main_thread().name
    assert ops_by(main) == {"read_value"}  # never .numpy() on the training thread
    assert "numpy" in ops_by("labstats-writer")
    run = lab.run(stats.run_id)
    assert run.series("loss").kind == "f"  # a scalar tensor is stored as a number
    assert run.series("loss").values.tolist() == [0.0, 0.5, 1.0]
    assert [v.tolist() for v in run.series("w").values] == [[0, 1, 2], [10, 11, 12], [20, 21, 22]]


def test_a_tensorflow_string_tensor_is_refused_at_the_call(tmp_path):
    with labstats.Stats(tmp_path / "r") as stats, pytest.raises(TypeError, match="dtype object"):
        stats.log(step=0, words=EagerTensor(np.array([b"a", None], dtype=object)))


def test_jax_arrays_start_their_copy_at_the_call_and_are_read_by_the_writer(tmp_path, lab):
    with labstats.Stats(tmp_path / "r") as stats:
        for step in range(3):
            stats.log(step=step, loss=JaxArray(np.float32(step)), w=JaxArray(np.full(4, step)))
    assert ops_by(threading.main_thread().name) == {"copy_to_host_async"}
    assert "to host" in ops_by("labstats-writer")
    run = lab.run(stats.run_id)
    assert run.series("loss").kind == "f"
    assert run.series("loss").values.tolist() == [0.0, 1.0, 2.0]
    assert [v.tolist() for v in run.series("w").values] == [[0] * 4, [1] * 4, [2] * 4]
