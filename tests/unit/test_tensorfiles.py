"""Large tensors go to files of the artifact store, with a reference in Redis: read back
exactly, stored once when unchanged, into Redis instead when the disk refuses (nothing lost),
and a file that is not there (yet) is said clearly."""

import hashlib
import logging

import numpy as np
import pytest
from conftest import same

import labstats
from labstats.format import tensor_file
from labstats.read.points import resolve_file
from labstats.store import ArtifactStore

BIG = 300_000  # floats: 1.2 MB, above the default 1 MiB


def files_in(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def blob_keys(lab, run_id):
    return list(lab.redis.scan_iter(f"{lab.keys.run(run_id)}:b:*"))


def test_a_large_tensor_is_a_file_and_reads_back_as_it_was_logged(tmp_path, lab):
    w = np.arange(BIG, dtype=np.float32)
    logged = []
    with labstats.Stats(tmp_path / "r") as stats:
        for step in range(3):
            stats.log(step=step, w=w)
            logged.append(w.copy())
            w *= 2  # changed in place right after the call: the stored value is the logged one
    store = tmp_path / "artifacts"
    stored = files_in(store)
    assert len(stored) == 3
    assert all(p.name == hashlib.sha256(p.read_bytes()).hexdigest() for p in stored)
    assert not blob_keys(lab, stats.run_id)
    values = lab.run(stats.run_id).series("w").values
    assert all(same(a, b) for a, b in zip(values, logged, strict=True))
    # What Redis holds for the series is the references: bytes, not megabytes.
    chunks = lab.redis.keys(f"{lab.keys.run(stats.run_id)}:s:*")
    assert sum(lab.redis.memory_usage(k) for k in chunks) < 10_000


def test_an_unchanged_tensor_is_stored_once(tmp_path, lab):
    frozen = np.ones(BIG, dtype=np.float32)
    with labstats.Stats(tmp_path / "r") as stats:
        for step in range(5):
            stats.log(step=step, frozen=frozen)
    assert len(files_in(tmp_path / "artifacts")) == 1
    assert all(same(v, frozen) for v in lab.run(stats.run_id).series("frozen").values)


@pytest.mark.parametrize(("threshold", "in_files"), [(0, False), (2**21, False), (2**20, True)])
def test_tensor_file_bytes_sets_what_goes_to_files(tmp_path, lab, threshold, in_files):
    w = np.arange(BIG, dtype=np.float32)
    with labstats.Stats(tmp_path / "r", tensor_file_bytes=threshold) as stats:
        stats.log(step=0, w=w, small=np.arange(3000, dtype=np.float32))
    assert bool(files_in(tmp_path / "artifacts")) is in_files
    assert len(blob_keys(lab, stats.run_id)) == (1 if in_files else 2)  # "small" is always a blob
    assert same(lab.run(stats.run_id).series("w").values[0], w)


def test_a_full_disk_sends_tensors_to_redis_and_loses_nothing(tmp_path, lab, monkeypatch, caplog):
    def no_space(self, *parts):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ArtifactStore, "put", no_space)
    logged = [np.full(BIG, step, dtype=np.float32) for step in range(4)]
    with caplog.at_level(logging.WARNING, "labstats"), labstats.Stats(tmp_path / "r") as stats:
        for step, w in enumerate(logged):
            stats.log(step=step, w=w)
    assert sum("cannot write tensor files" in r.getMessage() for r in caplog.records) == 1
    assert len(blob_keys(lab, stats.run_id)) == 4
    values = lab.run(stats.run_id).series("w").values
    assert all(same(a, b) for a, b in zip(values, logged, strict=True))


def test_a_missing_tensor_file_is_said_clearly(tmp_path, lab):
    with labstats.Stats(tmp_path / "r") as stats:
        stats.log(step=0, w=np.zeros(BIG, dtype=np.float32))
        stats.log(step=1, loss=0.5)
    for path in files_in(tmp_path / "artifacts"):
        path.unlink()
    run = lab.run(stats.run_id)
    (value,) = run.series("w").values
    assert isinstance(value, ValueError)
    assert "not in the artifact store" in str(value)
    assert run.series("loss").values.tolist() == [0.5]  # the rest of the run reads as ever


def test_a_reference_is_only_what_the_writer_made():
    ref = tensor_file.make_ref("ab" * 32, 123)
    assert tensor_file.is_ref(ref)
    assert not tensor_file.is_ref(ref[:-1])
    assert not tensor_file.is_ref(b"F")  # the codec's False
    with pytest.raises(ValueError, match="none was given"):
        resolve_file(ref, None)


def test_a_damaged_tensor_file_is_never_decoded(tmp_path, lab):
    with labstats.Stats(tmp_path / "r") as stats:
        stats.log(step=0, w=np.zeros(BIG, dtype=np.float32))
    (path,) = files_in(tmp_path / "artifacts")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last value: same length, other content
    path.chmod(0o644)  # stored read-only
    path.write_bytes(bytes(data))
    (value,) = lab.run(stats.run_id).series("w").values
    assert isinstance(value, ValueError)
    assert "damaged" in str(value)
