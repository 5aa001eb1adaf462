#!/usr/bin/env python3
"""Replication lag in the lab: write as a training account to the training box's master over
the tunnel, time until the web box's replica returns the value (run on the web box).

    make bench-replication       # after `make lab`; copies this file into the web box

Reads LABSTATS_TRAINER_USER (default researcher), LABSTATS_TRAINER_PASSWORD (that account's
Redis password), LABSTATS_VIEWER_PASSWORD and LABSTATS_OPS_PASSWORD from the environment. The
keys are the training account's own (ls:owner:<account>:bench:...), the only ones it may
write; the ops user removes them afterwards (a training account may not delete).
"""

import os
import statistics
import time

import redis

WRITES = 200


def main() -> None:
    account = os.environ.get("LABSTATS_TRAINER_USER", "researcher")
    master = redis.Redis(
        host="10.77.0.10", username=account, password=os.environ["LABSTATS_TRAINER_PASSWORD"]
    )
    ops = redis.Redis(host="10.77.0.10", username="ops", password=os.environ["LABSTATS_OPS_PASSWORD"])
    keys = [f"ls:owner:{account}:bench:replication:{i}" for i in range(WRITES)]
    replica = redis.Redis(
        host="127.0.0.1", username="viewer", password=os.environ["LABSTATS_VIEWER_PASSWORD"]
    )
    lags = []
    for i, key in enumerate(keys):
        master.set(key, i)
        start = time.perf_counter()
        while replica.get(key) is None:
            pass
        lags.append((time.perf_counter() - start) * 1e3)
        time.sleep(0.01)
    ops.delete(*keys)
    lags.sort()
    p95 = lags[int(WRITES * 0.95) - 1]
    print(f"replication lag over WireGuard, {WRITES} writes (master's reply → visible on the replica):")
    print(f"median {statistics.median(lags):.2f} ms, p95 {p95:.2f} ms, max {lags[-1]:.2f} ms")


if __name__ == "__main__":
    main()
