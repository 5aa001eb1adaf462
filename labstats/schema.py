"""Transitional: the names of labstats.format under their old module (removed once every
module imports labstats.format)."""

# ruff: noqa: F401

from labstats.format.blob import PART as BLOB_PART
from labstats.format.blob import REF as BLOB_REF
from labstats.format.blob import TAG as BLOB_TAG
from labstats.format.chunk import (
    CHUNK_BYTES,
    INLINE_MAX,
    KIND_BOOL,
    KIND_FLOAT,
    KIND_INT,
    KIND_OBJECT,
    OBJECT_HEADER,
    RECORD_DTYPES,
    RECORD_STRUCTS,
    SUMMARY,
)
from labstats.format.keys import (
    DEFAULT_PREFIX,
    EPOCH_SERIES,
    MAX_NAME_CHARS,
    NOT_OWNERS,
    OWNER_PATTERN,
    SCHEMA_VERSION,
    TIME_SERIES,
    Keys,
    run_owner,
    series_name_problem,
    valid_owner,
)
from labstats.format.run_record import CRASHED, FINISHED, RUNNING, SHOWN_STATUSES, STALLED, STATUSES
