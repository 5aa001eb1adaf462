#!/usr/bin/env python3
"""Replication lag in the lab: write as a training account to the training box's master over
the tunnel, time until the web box's replica returns the value (run on the web box).

    make bench-replication       # after `make lab`; copies this file into the web box,
                                 # runs it there and publishes its table (QUICK=1: a smoke run)

Reads LABSTATS_TRAINER_USER (default researcher), LABSTATS_TRAINER_PASSWORD (that account's
Redis password), LABSTATS_VIEWER_PASSWORD and LABSTATS_OPS_PASSWORD from the environment. The
keys are the training account's own (ls:owner:<account>:bench:...), the only ones it may
write; the ops user removes them afterwards (a training account may not delete).
"""

import os
import statistics
import sys
import time

import redis


def main() -> None:
    writes = 20 if "--quick" in sys.argv[1:] else 200
    account = os.environ.get("LABSTATS_TRAINER_USER", "researcher")
    master = redis.Redis(
        host="10.77.0.10", username=account, password=os.environ["LABSTATS_TRAINER_PASSWORD"]
    )
    ops = redis.Redis(host="10.77.0.10", username="ops", password=os.environ["LABSTATS_OPS_PASSWORD"])
    keys = [f"ls:owner:{account}:bench:replication:{i}" for i in range(writes)]
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
    p95 = lags[int(writes * 0.95) - 1]
    print(f"| replication lag over WireGuard, {writes} writes (master's reply → visible on replica) | ms |")
    print("|---|---|")
    print(f"| median | {statistics.median(lags):.2f} |")
    print(f"| p95 | {p95:.2f} |")
    print(f"| max | {lags[-1]:.2f} |")


if __name__ == "__main__":
    main()
