"""The storage format: how runs are laid out in Redis and in files, encoded and decoded side
by side, every constant named once. The writer, the reader, the archiver and the importer
use only this package to know the layout (docs/schema.md describes it for people).

    keys          key names under a prefix, run ids and owners, name rules
    run_record    a run's metadata hash, its statuses
    series_info   a series' info (sid, kind, count, last chunk...)
    chunk         chunks of points and their summaries
    blob          values too large for a chunk, as hashes of parts
    tensor_file   references to tensors kept as files
    media_record  media names, records and thumbnails
    codec         the tagged binary encoding of any value that is not a scalar
"""
