import math

import numpy as np
import pytest
from conftest import same
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from labstats.format import codec

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=5)
    ),
    max_leaves=25,
)
dtypes = st.sampled_from(["<f4", "<f8", "<f2", "<i1", "<i4", "<i8", "<u1", "<u8", "?", "<c8", ">f4", ">i4"])
arrays = dtypes.flatmap(
    lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=4, max_side=5))
)


@given(values)
def test_plain_values_round_trip_exactly(value):
    assert same(codec.decode(codec.encode(value)), value)


@given(arrays)
def test_arrays_round_trip_with_dtype_shape_and_bytes(array):
    assert same(codec.decode(codec.encode(array)), array)


def test_array_costs_its_raw_size_plus_a_small_header():
    array = np.zeros(100_000, dtype=np.float32)
    assert len(codec.encode(array)) - array.nbytes < 32


def test_nan_and_infinities_survive():
    out = codec.decode(codec.encode([math.nan, math.inf, -math.inf, -0.0]))
    assert math.isnan(out[0])
    assert out[1:3] == [math.inf, -math.inf]
    assert math.copysign(1, out[3]) == -1


def test_unsupported_type_names_the_type_and_the_place():
    with pytest.raises(codec.EncodeError, match=r"object at value\[1\]\['x'\]"):
        codec.encode([1, {"x": object()}])


@pytest.mark.parametrize(
    "data", [b"", b"Z", b"s\xff\xff\x00\x00", codec.encode("abc")[:-1], codec.encode(1) + b"x"]
)
def test_corrupt_bytes_raise_value_error(data):
    with pytest.raises(ValueError, match=r"corrupt|truncated|trailing|unknown"):
        codec.decode(data)
