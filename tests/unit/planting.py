"""Hostile media planted straight into Redis, as a training user can write them: the viewer
tests that must survive such records share this one way of writing them."""

from __future__ import annotations

import json

import redis

from labstats.format import keys, media_record

K = keys.Keys()


def plant(url: str, run_id: str, name: str, kind: str, records: dict, thumbs: dict | None = None) -> None:
    """Media records and thumbnails of ``name`` in ``run_id``: {(step, item): record or bytes}."""
    r = redis.Redis.from_url(url)
    mid = media_record.media_id(name)
    r.hset(K.media(run_id), name, json.dumps({"mid": mid, "kind": kind}))
    pipe = r.pipeline()
    for (step, item), record in records.items():
        pipe.hset(K.media_records(run_id, mid), f"{step}:{item}",
                  json.dumps({"step": step, "item": item, "kind": kind, **record}))  # fmt: skip
    for (step, item), data in (thumbs or {}).items():
        pipe.hset(K.media_thumbs(run_id, mid), f"{step}:{item}", data)
    pipe.execute()
