"""A training user's run record as hostile input to the pages of this stop: a config nested
5,000 deep (50 KB, which only its owner may write) made json.loads raise RecursionError, which
labstats.format.run_record.decode did not catch, so every list, the Boxes page and /metrics
answered 500 for everyone. Real redis-server, real app.
Every parse of what a run's owner wrote reads nesting too deep for Python's parser as
unreadable (labstats.format.run_record, series_info, media_record, curation)."""

from __future__ import annotations

import logging
import time

from labstats.format import curation, media_record, run_record, series_info
from labstats.format.keys import Keys
from labstats.viewer import create_app
from labstats.viewer.sources import Source

K = Keys()
RUN = "mallory.20261205-000000-deep00"


def test_a_config_nested_thousands_deep_breaks_no_page(url, redis_server, caplog):
    now = time.time()
    client = redis_server.client()
    client.hset(K.run(RUN), mapping={"name": "deep", "status": "running", "started": now, "heartbeat": now,
                                     "config": '{"a":' * 5000 + "1" + "}" * 5000})  # fmt: skip
    client.sadd(K.owners, "mallory")
    client.zadd(K.owner_runs("mallory"), {RUN: now})
    client.sadd(K.owner_status("mallory", "running"), RUN)
    app = create_app({"local": Source("local", url)})
    caplog.set_level(logging.CRITICAL)
    answers = {path: app.test_client().get(path).status_code
               for path in ("/", "/api/runs", f"/runs/local/{RUN}", "/boxes", "/metrics")}  # fmt: skip
    assert answers == {"/": 200, "/api/runs": 200, f"/runs/local/{RUN}": 200, "/boxes": 200, "/metrics": 200}


def test_every_decoder_of_owner_written_json_reads_deep_nesting_as_unreadable():
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    assert run_record.decode({b"config": deep})["config"] == deep.decode()
    assert series_info.decode(deep)["kind"] == series_info.UNREADABLE_KIND
    assert media_record.decode(deep) is None
    assert media_record.decode_kind(deep) is None
    assert curation.decode_tags(deep) is None
    assert curation.decode_audit("mallory", b"1-0", {b"changes": deep})["changes"] == {}
