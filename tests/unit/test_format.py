"""Each record of the storage format decodes to what was encoded (labstats.format), and a
reader of a record written by someone else gets a value or a clear refusal, never a crash."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from labstats.format import blob, chunk, keys, media_record, run_record, series_info, tensor_file

int64 = st.integers(-(2**63), 2**63 - 1)
owners = st.from_regex(keys.OWNER_PATTERN, fullmatch=True).filter(lambda n: n not in keys.NOT_OWNERS)


@given(owners, st.text(alphabet="0123456789abcdef-", min_size=1, max_size=30))
def test_a_run_id_names_its_owner(owner, rest):
    assert keys.run_owner(f"{owner}.{rest}") == owner
    assert keys.run_owner(rest) is None  # no dot: an unowned (version 1) run


@given(st.text(min_size=1, max_size=8).filter(lambda p: ":" not in p), owners)
def test_every_key_of_a_run_is_under_its_prefix_and_its_id(prefix, owner):
    k, run_id = keys.Keys(prefix), f"{owner}.20261205-101500-3fa2c1"
    for key in (
        k.run(run_id),
        k.series(run_id),
        k.chunk(run_id, 3, 7),
        k.blob(run_id, 1),
        k.media_records(run_id, "m"),
        k.diff(run_id),
        k.chunk_summary(run_id, 3),
    ):
        assert key.startswith(f"{prefix}:run:{run_id}")
    assert k.runs_index(owner) == f"{prefix}:owner:{owner}:runs"
    assert k.runs_index(None) == f"{prefix}:runs"


def test_series_names_that_cannot_travel_in_a_url_are_refused():
    assert keys.series_name_problem("train/loss") is None
    assert keys.series_name_problem("λ <b>") is None
    for bad in ("", "a//b", "/a", "a/..", "x\n", 3, "x" * (keys.MAX_NAME_CHARS + 1)):
        assert keys.series_name_problem(bad) is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


texts = st.text(max_size=20).filter(
    lambda t: "\ufffd" not in t and not any(0xD800 <= ord(c) < 0xE000 for c in t)
)
other_fields = st.text(min_size=1, max_size=8).filter(
    lambda k: (
        k not in run_record.JSON_FIELDS + run_record.FLAG_FIELDS
        and "\ufffd" not in k
        and not any(0xD800 <= ord(c) < 0xE000 for c in k)
    )
)


@given(
    st.dictionaries(st.sampled_from(run_record.JSON_FIELDS), json_values),
    st.dictionaries(other_fields, texts),
    st.booleans(),
)
def test_a_run_record_reads_back_as_written(json_fields, text_fields, dirty):
    written = {**text_fields, **json_fields, "git_dirty": dirty}
    stored = {k.encode(): str(run_record.encode_field(k, v)).encode() for k, v in written.items()}
    stored[b"git_dirty"] = b"1" if dirty else b"0"
    assert run_record.decode(stored) == written


def test_a_record_field_that_is_not_utf8_is_named_malformed_and_the_rest_reads():
    meta = run_record.decode({b"name": b"ok", b"note": b"\xff\xfe", b"config": b"{not json"})
    assert meta == {"name": "ok", "note": "\ufffd\ufffd", "config": "{not json", "_malformed": ["note"]}


@given(
    st.integers(0, 2**20),
    st.sampled_from("fibo"),
    st.integers(0, 2**40),
    st.integers(-1, 2**20),
    st.one_of(st.none(), int64),
    st.booleans(),
    st.one_of(st.none(), st.just("histogram")),
)
def test_series_info_round_trips(sid, kind, count, last_chunk, last_idx, monotonic, hint):
    info = series_info.decode(series_info.encode(sid, kind, count, last_chunk, last_idx, monotonic, hint))
    assert info == {
        "sid": sid,
        "kind": kind,
        "count": count,
        "last_chunk": last_chunk,
        "last_idx": last_idx,
        "monotonic": monotonic,
        **({"hint": hint} if hint else {}),
    }


def test_a_last_idx_that_is_not_an_integer_reads_as_unknown():
    """The reader looks the latest point up by it: a text or a bool there (written by the run's
    owner) must not reach a comparison with idx."""
    for bad in ('"x"', "true", "1.5", "null", "[1]"):
        raw = f'{{"sid": 0, "kind": "f", "count": 3, "last_chunk": 0, "last_idx": {bad}}}'.encode()
        assert series_info.decode(raw)["last_idx"] is None
    assert series_info.decode(b'{"sid": 0, "kind": "f", "count": 3, "last_chunk": 0}')["last_idx"] is None


@given(st.binary(max_size=40) | st.just(b'{"sid": "0"}') | st.just(b"[]"))
def test_series_info_written_by_someone_else_reads_as_unreadable_not_a_crash(raw):
    info = series_info.decode(raw)
    assert "error" in info or all(isinstance(info.get(k), t) for k, t in series_info.REQUIRED)


numeric = st.sampled_from([chunk.KIND_FLOAT, chunk.KIND_INT, chunk.KIND_BOOL]).flatmap(
    lambda kind: st.tuples(
        st.just(kind),
        st.lists(
            st.tuples(
                int64,
                st.floats(allow_nan=True)
                if kind == chunk.KIND_FLOAT
                else int64
                if kind == chunk.KIND_INT
                else st.booleans(),
            ),
            min_size=1,
            max_size=50,
        ),
    )
)


@given(numeric, st.integers(0, 15))
def test_a_numeric_chunk_reads_its_records_and_leaves_out_a_half_appended_one(kind_points, torn):
    kind, points = kind_points
    data = kind + b"".join(chunk.numeric_record(kind, i, v) for i, v in points)
    found = chunk.records(
        data + chunk.numeric_record(kind, 0, points[0][1])[: torn % chunk.RECORD_STRUCTS[kind].size]
    )
    assert found["idx"].tolist() == [i for i, _ in points]
    assert [
        v if not (isinstance(v, float) and math.isnan(v)) else "nan" for v in found["value"].tolist()
    ] == [v if not (isinstance(v, float) and math.isnan(v)) else "nan" for (v,) in [(v,) for _, v in points]]
    assert chunk.idx_of(data).tolist() == [i for i, _ in points]
    assert chunk.kind_of(points[0][1]) == kind


@given(st.lists(st.tuples(int64, st.binary(max_size=64)), max_size=30), st.integers(1, 20))
def test_an_object_chunk_reads_its_records_and_leaves_out_a_half_appended_one(records, torn):
    data = chunk.KIND_OBJECT + b"".join(chunk.object_record(i, p) for i, p in records)
    partial = chunk.object_record(7, b"x" * 30)[:torn]
    found = [(i, bytes(p)) for i, p in chunk.object_payloads(data + partial)]
    assert found == records
    assert chunk.idx_of(data).tolist() == [i for i, _ in records]


@given(
    st.lists(
        st.tuples(st.integers(-(2**40), 2**40), st.floats(allow_infinity=False)), min_size=1, max_size=60
    )
)
def test_a_chunk_summary_keeps_the_first_lowest_highest_and_last_points(points):
    data = chunk.KIND_FLOAT + b"".join(chunk.numeric_record(chunk.KIND_FLOAT, i, v) for i, v in points)
    packed = chunk.summarize(chunk.KIND_FLOAT, data)
    finite = [(i, v) for i, v in points if not math.isnan(v)]
    if not finite:
        assert packed is None
        return
    (s,) = chunk.summaries([packed])
    values = [v for _, v in finite]
    assert (s["i0"], s["v0"]) == finite[0]
    assert (s["i3"], s["v3"]) == finite[-1]
    assert s["v1"] == min(values)
    assert s["v2"] == max(values)
    _, kept = chunk.summary_points(chunk.summaries([packed]))
    assert set(kept.tolist()) <= set(values)
    assert {min(values), max(values)} <= set(kept.tolist())


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=3000))
def test_block_points_keep_what_summaries_of_each_block_keep(values):
    idx = np.arange(len(values), dtype=np.int64)
    kept_idx, kept = chunk.block_points(idx, np.array(values))
    for start in range(0, len(values), chunk.SUMMARY_BLOCK):
        block = values[start : start + chunk.SUMMARY_BLOCK]
        assert {start, start + len(block) - 1} <= set(kept_idx.tolist())
        assert min(block) in kept
        assert max(block) in kept


@given(
    st.integers(0, 2**32 - 1),
    st.binary(min_size=1, max_size=200),
    st.integers(1, 50),
)
def test_a_blob_reference_names_its_parts_and_joins_them_only_whole(number, data, size):
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    ref = blob.ref(number, len(parts), len(data))
    assert blob.is_ref(ref)
    assert blob.parse_ref(ref) == (number, len(parts), len(data))
    assert blob.join(ref, parts) == data
    for broken in ([*parts[:-1], None], parts[:-1] if len(parts) > 1 else [data[:-1]]):
        with pytest.raises(ValueError, match=f"blob {number} "):
            blob.join(ref, broken)


@given(st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=blob.SMALL_MAX))
def test_a_small_blob_reference_carries_its_tail_and_joins_only_with_its_whole_head(number, data):
    cut = blob.head_length(len(data))
    assert len(data) - cut < max(len(data) // 4, blob.PART_COST + 16)
    ref = blob.small_ref(number, len(data), data[cut:])
    assert blob.is_ref(ref)
    assert blob.is_small(ref)
    assert not tensor_file.is_ref(ref)
    assert blob.parse_ref(ref) == (number, 1, len(data))
    assert blob.join(ref, [data[:cut]]) == data
    for broken in ([None], [data[: cut - 1]], [data[:cut] + b"x"]):
        with pytest.raises(ValueError, match=f"blob {number} "):
            blob.join(ref, broken)


@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**63))
def test_a_tensor_file_reference_names_its_file(raw_digest, length):
    ref = tensor_file.make_ref(raw_digest.hex(), length)
    assert tensor_file.is_ref(ref)
    assert not blob.is_ref(ref)
    assert tensor_file.digest_of(ref) == raw_digest.hex()


records = st.fixed_dictionaries(
    {
        "step": int64,
        "item": st.integers(0, 1000),
        "kind": st.sampled_from(["image", "fits", "points", "file"]),
        "digest": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        "caption": st.text(max_size=20),
        "shape": st.lists(st.integers(0, 4096), max_size=3),
    }
)


@given(records, st.text(min_size=1, max_size=20))
def test_a_media_record_round_trips_and_its_field_names_its_step(record, name):
    assert media_record.decode(media_record.encode(record)) == record
    assert (
        media_record.step_of(media_record.field_name(record["step"], record["item"]).encode())
        == record["step"]
    )
    mid = media_record.media_id(name)
    assert mid == media_record.media_id(name)
    assert len(mid) == 16
    assert media_record.decode_kind(media_record.encode_name(mid, record["kind"])) == record["kind"]


def test_media_records_written_by_someone_else_are_left_out():
    for raw in (
        b"not json",
        b"[]",
        b'{"step": "1", "digest": "x", "kind": "image"}',
        b'{"step": true, "digest": "x", "kind": "image"}',
        b'{"step": 1, "kind": "image"}',
    ):
        assert media_record.decode(raw) is None
    assert media_record.decode_kind(b'{"kind": 3}') is None
    assert media_record.step_of(b"x:0") is None
