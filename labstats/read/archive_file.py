"""An archive file: one run's points as Parquet, its layout, its digest, and reading it.

A run's points go to one Parquet file, <archive dir>/<run id>.parquet (zstd), one row per
point: series, idx, kind (f, i, b or o) and the value in the column of its kind: f (float64),
i (int64), b (bool) or o (binary: the labstats codec's bytes of a text, list, dict, array or
tensor). Rows of a series are in idx order (the order the reader gives). Any Parquet engine
reads them (pandas, DuckDB, Spark); the file's metadata ("labstats.archive", JSON) also holds
the run's record, its series info, its git diff and package list, an index of row groups per
series, and a digest of every point. :mod:`labstats.ops.archive` writes these files;
:class:`ArchiveFile` reads one as the reader reads Redis (it offers
:class:`labstats.read.points.Points`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from labstats.config import LabstatsError
from labstats.format import chunk
from labstats.format.codec import Encoded
from labstats.read.points import Series, decoded, plain
from labstats.store import ArtifactStore

FORMAT = 1
META_KEY = b"labstats.archive"
SUFFIX = ".parquet"
ROW_GROUP_ROWS = 32_768  # a window read decodes at most a group or two of this many points
ROW_GROUP_BYTES = 32 << 20  # ...and never more than this (series of tensors)
READ_CHUNKS = 256  # chunks fetched per MGET while archiving
# An archive file is read only when its footer says it is within these (a file in the archive
# folder may come from anywhere: a 1 MB file decoded to 2.9 GB in a viewer worker). The
# archiver writes groups of at most ROW_GROUP_ROWS rows and ROW_GROUP_BYTES (one larger
# value gets a group of its own), so a group over MAX_GROUP_BYTES is one value over 256 MiB.
MAX_GROUP_BYTES = 256 << 20  # uncompressed, per row group: what one read decodes at most
MAX_ROWS = 1_000_000_000  # points per file
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # an owner may start with "_": _svc.<id>
_VALUE_COLUMN = {"f": "f", "i": "i", "b": "b", "o": "o"}
_NUMPY = {"f": np.float64, "i": np.int64, "b": np.bool_}


def pyarrow_modules():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LabstatsError("archived runs need pyarrow: pip install 'labstats[pandas]'") from None
    return pa, pq


def path_for(directory: str | Path, run_id: str) -> Path:
    """The archive file of a run. Run ids come from Redis, so they are checked before they
    become part of a path."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise LabstatsError(f"run id {run_id!r} cannot name an archive file")
    return Path(directory) / f"{run_id}{SUFFIX}"


class Digest:
    """sha256 over every point of every series, column by column (so the same points give
    the same digest however they were batched)."""

    def __init__(self) -> None:
        self.series: dict[str, list[Any]] = {}

    def start(self, name: str) -> None:
        """Count a series (also one without points)."""
        self.series.setdefault(name, [0, hashlib.sha256(), hashlib.sha256(), hashlib.sha256()])

    def add(self, name: str, idx: np.ndarray, kinds: np.ndarray, values: dict[str, Any]) -> None:
        self.start(name)
        state = self.series[name]
        state[0] += len(idx)
        state[1].update(np.ascontiguousarray(idx, dtype="<i8").tobytes())
        state[2].update(np.ascontiguousarray(kinds, dtype="S1").tobytes())
        for kind in "fibo":
            picked = values.get(kind)
            if picked is None:
                continue
            if kind == "o":
                for payload in picked:
                    state[3].update(len(payload).to_bytes(8, "little"))
                    state[3].update(payload)
            else:
                dtype = "<f8" if kind == "f" else "<i8" if kind == "i" else "u1"
                state[3].update(np.ascontiguousarray(picked, dtype=dtype).tobytes())

    def counts(self) -> dict[str, int]:
        return {name: state[0] for name, state in self.series.items()}

    def hexdigest(self) -> str:
        total = hashlib.sha256()
        for name in sorted(self.series):
            count, *parts = self.series[name]
            total.update(name.encode("utf-8", "surrogatepass") + b"\0" + count.to_bytes(8, "little"))
            for part in parts:
                total.update(part.digest())
        return total.hexdigest()


def table_schema(pa):
    return pa.schema(
        [
            ("series", pa.string()),
            ("idx", pa.int64()),
            ("kind", pa.string()),
            ("f", pa.float64()),
            ("i", pa.int64()),
            ("b", pa.bool_()),
            ("o", pa.large_binary()),
        ]
    )


def as_list(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else [bytes(v) for v in values]


class ArchiveFile:
    """One archive file, read the way the reader reads Redis: windows by idx (only the row
    groups that hold them), the latest points, an overview of a long series."""

    def __init__(self, path: str | Path, artifacts: ArtifactStore | None = None) -> None:
        pa, pq = pyarrow_modules()
        self.path = Path(path)
        self.artifacts = artifacts  # where the run's large tensors are (their files)
        self._lock = threading.Lock()  # one reader of the file at a time (viewer threads)
        try:
            # kind and o as dictionaries: a value repeated in a row group is decoded once
            # (see _expand), however many rows repeat it.
            self.file = pq.ParquetFile(self.path, read_dictionary=["kind", "o"])
            raw = (self.file.metadata.metadata or {}).get(META_KEY)
            self.meta = json.loads(raw) if raw else None
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise LabstatsError(f"{self.path}: not a readable labstats archive ({exc})") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT:
            raise LabstatsError(f"{self.path}: not a labstats archive of format {FORMAT}")
        self._check(pa)

    def _check(self, pa) -> None:
        """Refuse a file whose footer says it holds more than one read may decode, or whose
        labstats metadata does not describe it, before any of its data is read."""
        footer = self.file.metadata
        stored = [(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                  for f in self.file.schema_arrow]  # fmt: skip
        wanted = [(f.name, f.type) for f in table_schema(pa)]
        binary = (pa.binary(), pa.large_binary())  # o, as a dictionary, reads as binary
        if len(stored) != len(wanted) or any(
            s != w and not (s[0] == w[0] == "o" and s[1] in binary)
            for s, w in zip(stored, wanted, strict=True)
        ):
            raise LabstatsError(f"{self.path}: malformed archive metadata (not the columns of an archive)")
        if footer.num_rows > MAX_ROWS:
            raise LabstatsError(
                f"{self.path}: not read: it holds {footer.num_rows:,} rows; at most {MAX_ROWS:,}"
            )
        rows = []
        for n in range(footer.num_row_groups):
            group = footer.row_group(n)
            # The group's total and its columns' own sizes: a file may say one and hold the other.
            columns = sum(max(0, group.column(c).total_uncompressed_size) for c in range(group.num_columns))
            size = max(group.total_byte_size, columns)
            if group.num_rows > ROW_GROUP_ROWS:
                raise LabstatsError(
                    f"{self.path}: not read: row group {n} holds {group.num_rows:,} rows; "
                    f"at most {ROW_GROUP_ROWS:,}"
                )
            if size > MAX_GROUP_BYTES:
                raise LabstatsError(
                    f"{self.path}: not read: row group {n} holds {size:,} bytes uncompressed; "
                    f"at most {MAX_GROUP_BYTES:,}"
                )
            rows.append(group.num_rows)
        problem = _meta_problem(self.meta, rows)
        if problem:
            raise LabstatsError(f"{self.path}: malformed archive metadata ({problem})")

    def _text(self, key: str) -> str:
        raw = self.meta.get(key)
        return base64.b64decode(raw).decode("utf-8", "replace") if raw else ""

    def diff(self) -> str:
        return self._text("diff")

    def freeze(self) -> str:
        return self._text("freeze")

    def counts(self) -> dict[str, int]:
        return {name: sum(g[3] for g in entry["groups"]) for name, entry in self.meta["index"].items()}

    def digest(self) -> str:
        """The digest of what the file holds (read in full), to compare with the stored one."""
        digest = Digest()
        for name in self.meta["index"]:
            digest.start(name)
            for idx, kinds, values in self.groups(name, raw=True):
                digest.add(name, idx, kinds, values)
        return digest.hexdigest()

    def _entry(self, name: str) -> dict[str, Any]:
        entry = self.meta["index"].get(name)
        if entry is None:
            raise LabstatsError(f"archived run {self.meta['run_id']}: no series {name!r}")
        return entry

    def _read(self, name: str, groups: list[int]):
        """Rows of the given row groups: idx, kinds (S1) and the value columns the series uses."""
        entry = self._entry(name)
        columns = ["idx", "kind", *(_VALUE_COLUMN[k] for k in entry["kinds"])]
        if not groups:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype="S1"), {}
        with self._lock:
            table = self.file.read_row_groups(groups, columns=columns, use_threads=False)
        idx = table.column("idx").to_numpy()
        if len(entry["kinds"]) > 1:
            kinds = np.array(_expand(table.column("kind"), self.path), dtype="S1")
        else:
            kinds = np.full(len(idx), entry["kinds"][0].encode() if entry["kinds"] else b"f", dtype="S1")
        values = {}
        for kind in entry["kinds"]:
            column = table.column(_VALUE_COLUMN[kind])
            if kind == "o":
                values[kind] = [v for v in _expand(column, self.path) if v is not None]
            elif len(entry["kinds"]) == 1:
                values[kind] = column.to_numpy()
            else:
                values[kind] = column.drop_null().to_numpy()
        return idx, kinds, values

    def groups(self, name: str, raw: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
        """Row group by row group: (idx, kinds, values by kind). ``raw`` keeps the columns;
        otherwise values come as one iterator per kind (codec bytes wrapped as Encoded)."""
        for group in self._entry(name)["groups"]:
            idx, kinds, values = self._read(name, [group[0]])
            if raw:
                yield idx, kinds, values
            else:
                iters = {
                    k.encode(): iter(as_list(v) if k != "o" else map(Encoded, v)) for k, v in values.items()
                }
                yield idx, kinds, iters

    @staticmethod
    def _empty(entry: dict[str, Any], info: dict[str, Any], start: int) -> Any:
        """No points in a window, typed as the reader types it from Redis: after the start of
        an in-order series, as the values of the chunk that holds ``start`` (the kind of the
        last point before it); else untyped."""
        before = [g for g in entry["groups"] if g[1] < start]
        if not info.get("monotonic", True) or not before:
            return np.empty(0)
        kind = before[-1][4]
        return [] if kind == "o" else np.empty(0, dtype=_NUMPY[kind])

    # ---- the Points interface (labstats.read.points) ---------------------------------------------

    def window(self, name: str, info: dict[str, Any], start: int | None, stop: int | None) -> Series:
        lo = -(2**63) if start is None else start
        hi = 2**63 - 1 if stop is None else stop
        entry = self._entry(name)
        groups = [g[0] for g in entry["groups"] if g[2] >= lo and g[1] <= hi]
        idx, kinds, values = self._read(name, groups)
        if not groups:
            return Series(name, idx, self._empty(entry, info, lo), info.get("kind", "f"))
        mask = (idx >= lo) & (idx <= hi)
        return Series(name, idx[mask], _values(kinds, values, mask, self.artifacts), info.get("kind", "f"))

    def overview(self, name: str, info: dict[str, Any]) -> Series:
        """No chunk summaries here: the same four points per chunk's worth, from every point."""
        whole = self.window(name, info, None, None)
        if not isinstance(whole.values, np.ndarray):
            return whole
        return Series(name, *chunk.block_points(whole.idx, whole.values), info["kind"])

    def steps(self, name: str, info: dict[str, Any], last: int) -> np.ndarray:
        """The last in idx order (the same as in logging order unless idx went back, as in a
        resumed run)."""
        return self.tail(name, last)[0]

    def latest(self, name: str, info: dict[str, Any]) -> tuple[int, Any] | None:
        """The last point written is the last one stored at its idx."""
        last = info.get("last_idx")
        found = self.window(name, info, last, last)
        return (int(found.idx[-1]), plain(found.values[-1])) if len(found) else None

    def tail(self, name: str, last: int) -> tuple[np.ndarray, Any]:
        """The last ``last`` points (idx order), reading only the row groups that hold them."""
        groups, total = [], 0
        for group in reversed(self._entry(name)["groups"]):
            groups.insert(0, group[0])
            total += group[3]
            if total >= last:
                break
        idx, kinds, values = self._read(name, groups)
        mask = np.zeros(len(idx), dtype=bool)
        mask[max(0, len(idx) - last) :] = True
        return idx[mask], _values(kinds, values, mask, self.artifacts)


def _expand(column: Any, path: Path) -> list[Any]:
    """A column read as a dictionary, one value per row (None for nulls), each distinct value
    one Python object shared by its rows. Refused when the rows' values add up to more than
    MAX_GROUP_BYTES: a few KB of dictionary can repeat one large value in every row."""
    pa, _ = pyarrow_modules()
    import pyarrow.compute as pc

    out: list[Any] = []
    for part in column.chunks:  # one per row group read: the bound is per group
        if not isinstance(part, pa.DictionaryArray):
            part = part.dictionary_encode()  # (not read as a dictionary: already decoded)
        total = pc.sum(pc.take(pc.binary_length(part.dictionary), part.indices)).as_py() or 0
        if total > MAX_GROUP_BYTES:
            raise LabstatsError(
                f"{path}: not read: a row group's values decode to over {MAX_GROUP_BYTES:,} bytes"
            )
        values = part.dictionary.to_pylist()
        out += [None if i is None else values[i] for i in part.indices.to_pylist()]
    return out


def _meta_problem(meta: dict[str, Any], rows: list[int]) -> str | None:
    """What is wrong with an archive's labstats metadata given the rows of its row groups
    (as the footer says), or None: every field the reader uses, of the type it uses."""
    if not isinstance(meta.get("run_id"), str):
        return "run_id"
    if not isinstance(meta.get("series"), dict) or not all(
        isinstance(v, dict) for v in meta["series"].values()
    ):
        return "series"
    if not isinstance(meta.get("rows"), int):
        return "rows"
    index = meta.get("index")
    if not isinstance(index, dict):
        return "index"
    for name, entry in index.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("groups"), list):
            return f"index of {name!r}"
        kinds = entry.get("kinds")
        if not isinstance(kinds, list) or not set(kinds) <= set(_VALUE_COLUMN):
            return f"kinds of {name!r}"
        for group in entry["groups"]:
            ok = (
                isinstance(group, list) and len(group) == 5
                and all(isinstance(x, int) and not isinstance(x, bool) for x in group[:4])
                and group[4] in _VALUE_COLUMN and 0 <= group[0] < len(rows) and group[3] == rows[group[0]]
            )  # fmt: skip
            if not ok:
                return f"row group {group!r} of {name!r} is not one of the file's"
        numbers = [group[0] for group in entry["groups"]]
        if numbers != sorted(set(numbers)):  # each group once, in order: a read decodes each once
            return f"row groups of {name!r} repeat or are out of order"
    return None


def _values(
    kinds: np.ndarray, values: dict[str, Any], mask: np.ndarray, artifacts: ArtifactStore | None
) -> Any:
    """The values of the masked points as the reader gives them: one NumPy array when every
    point is a number (of the common type), else a list (decoded objects; large tensors read
    from their files in ``artifacts``)."""
    present = [k for k in values if np.any(kinds[mask] == k.encode())] if mask.any() else list(values)
    if not present:
        return np.empty(0)
    if all(k != "o" for k in present) and len(values) == 1:
        (column,) = values.values()
        return column[mask]
    if all(k != "o" for k in values):
        out = np.empty(int(mask.sum()), dtype=np.result_type(*(_NUMPY[k] for k in present)))
        picked = kinds[mask]
        for kind in present:
            column = values[kind][np.flatnonzero(mask[kinds == kind.encode()])]
            out[picked == kind.encode()] = column
        return out
    result: list[Any] = [None] * int(mask.sum())
    picked = kinds[mask]
    for kind, column in values.items():
        chosen = np.flatnonzero(mask[kinds == kind.encode()])
        where = np.flatnonzero(picked == kind.encode())
        for pos, i in zip(where.tolist(), chosen.tolist(), strict=True):
            if kind == "o":
                result[pos] = decoded(column[i], artifacts)
            else:
                result[pos] = column[i].item()
    return result
