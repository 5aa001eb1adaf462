"""Large values as blobs: parts that fill the allocator's size classes, so a float32 tensor
costs Redis about its raw size (issue 23: at most 1.05x from 4 KiB to 16 MiB)."""

import numpy as np
import pytest

import labstats
from labstats.format import blob, keys
from labstats.format.blob import PART_COST, part_lengths
from labstats.write.chunks import ChunkEncoder


@pytest.mark.parametrize("total", [1, 31, 4116, 65556, 409_620, 2**20 - 16, 2**20 + 20, 16 * 2**20 + 20])
def test_parts_cover_the_value_and_waste_little_of_their_size_classes(total):
    lengths = part_lengths(total)
    assert sum(lengths) == total
    assert all(0 < n <= blob.PART for n in lengths)
    # Every part but the last is a full BLOB_PART or fills its class: the waste is at most a
    # few bytes of class rounding each, and one part's own cost at the end.
    assert len(lengths) <= total // blob.PART + 8
    wasted = sum(_allocated(n) - n for n in lengths)
    assert wasted <= 10 * len(lengths) + PART_COST


def test_a_blob_is_sent_as_its_parts_in_order():
    encoder = ChunkEncoder(keys.Keys("t"), "r")
    values = np.arange(100_000, dtype=np.float32)
    commands = encoder.encode([(0, "w", values)])
    (blob,) = [c for c in commands if c[0] == b"HSET" and c[1] == b"t:run:r:b:0"]
    parts = [bytes(p) for p in blob[3::2]]
    assert [len(p) for p in parts] == part_lengths(sum(len(p) for p in parts))
    assert [int(f) for f in blob[2::2]] == list(range(len(parts)))
    assert b"".join(parts).endswith(values.tobytes())


def test_a_small_blob_is_one_string_filling_its_class_and_a_tail_in_the_record():
    encoder = ChunkEncoder(keys.Keys("t"), "r")
    values = np.arange(1024, dtype=np.float32)  # 4 KiB: just over what sits in a chunk
    commands = encoder.encode([(0, "w", values)])
    (head,) = [c for c in commands if c[1] == b"t:run:r:b:0"]
    assert head[0] == b"SET"
    assert _allocated(len(head[2])) == len(head[2])  # fills its size class exactly
    (chunk_command,) = [c for c in commands if c[0] == b"APPEND"]
    record = chunk_command[2]
    ref = record[record.index(blob.SMALL_TAG) :]
    assert blob.is_ref(ref)
    assert blob.is_small(ref)
    assert blob.join(ref, [head[2]]).endswith(values.tobytes())


@pytest.mark.parametrize("damage", ["lost", "made a hash", "cut short"])
def test_a_damaged_small_blob_reads_as_an_error_in_its_place_and_its_neighbours_read(tmp_path, lab, damage):
    tensors = [np.full(1024, step, np.float32) for step in range(3)]
    with labstats.Stats(tmp_path / "run", capture_git=False, tensor_file_bytes=0) as stats:
        for step, tensor in enumerate(tensors):
            stats.log(step=step, w=tensor)
    run = lab.run("run")
    key = lab.keys.blob(run.id, 1)
    if damage == "lost":
        lab.redis.delete(key)
    elif damage == "made a hash":  # what its owner could do to its own run
        lab.redis.delete(key)
        lab.redis.hset(key, "0", b"x")
    else:
        lab.redis.set(key, lab.redis.get(key)[:-1])
    values = lab.run("run").series("w").values
    assert (values[0] == tensors[0]).all()
    assert (values[2] == tensors[2]).all()
    assert isinstance(values[1], ValueError)
    assert "blob 1" in str(values[1])


@pytest.mark.parametrize(
    "nbytes", [4 * 2**10, 6000, 12 * 2**10, 64 * 2**10, 400 * 2**10, 2**20, 4 * 2**20, 16 * 2**20]
)
def test_float32_tensors_cost_redis_at_most_105_percent_of_their_size(tmp_path, lab, nbytes):
    tensor = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)
    reps = max(4, min(64, 2**20 // nbytes))  # the series' own keys spread over 1 MiB or more
    with labstats.Stats(tmp_path / "run", capture_git=False, tensor_file_bytes=0) as stats:
        for step in range(reps):
            stats.log(step=step, w=tensor)
    run = lab.run("run")
    assert (run.series("w").values[-1] == tensor).all()
    keys = lab.redis.scan_iter(f"ls:run:{run.id}:[sb]:*", count=1000)
    used = sum(lab.redis.memory_usage(k, samples=0) for k in keys)
    assert used / reps / tensor.nbytes <= 1.05


def _allocated(length: int) -> int:
    """What Redis allocates for a string of ``length`` bytes, by the allocator's own rule
    (checked here against the numbers jemalloc documents, not the encoder's helper)."""
    header = 2 if length < 32 else 4 if length < 256 else 6 if length < 65536 else 10
    size = length + header
    classes = [8, *range(16, 129, 16)]
    base = 128
    while classes[-1] < size:
        classes += [base + base // 4 * j for j in range(1, 5)]
        base *= 2
    return next(c for c in classes if c >= size) - header
