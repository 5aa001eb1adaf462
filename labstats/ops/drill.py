"""Restore drill: compare a store restored from a backup with the live one.

    python -m labstats.ops.drill --restored redis://...:6390/0 --live redis://...:6379/0 [--prefix ls]

The restored copy is older than the live store, so runs may have been added or grown since.
What must hold: every run of the copy is live; every series of a run that had finished
when the backup was taken (the canaries) is identical, byte for byte, in both; running runs
have at least as many points live as in the copy; a run archived since the backup holds in
the copy exactly the points its archive holds (the digest the archive stored). Prints what
it checked, or what differs; exits 1 when something differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field

import redis

from labstats.format import run_record
from labstats.format.keys import DEFAULT_PREFIX, Keys
from labstats.ops import archive
from labstats.reader import Lab


@dataclass
class Report:
    runs: int = 0
    canaries: int = 0
    series: int = 0
    points: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.differences


def run_digest(client: redis.Redis, keys: Keys, run_id: str) -> tuple[str, int, int]:
    """SHA-256 over a run's series info and every chunk and blob it holds, with its series
    and point counts. Read with plain reads, so the read-only viewer user is enough."""
    digest = hashlib.sha256()
    infos = client.hgetall(keys.series(run_id))
    points = 0
    for name in sorted(infos):
        raw = infos[name]
        digest.update(name + b"\0" + raw + b"\0")
        info = json.loads(raw)
        points += int(info.get("count", 0))
        chunks = [keys.chunk(run_id, info["sid"], n) for n in range(info["last_chunk"] + 1)]
        for data in client.mget(chunks) if chunks else []:
            digest.update(data or b"<missing>")
    blob = 0
    while True:  # blobs are numbered from 0 without gaps; a small one is a string (format.blob)
        key = keys.blob(run_id, blob)
        kind = client.type(key)
        if kind == b"string":
            digest.update(client.get(key) or b"")
        elif kind == b"hash":
            parts = client.hgetall(key)
            for part in sorted(parts, key=int):
                digest.update(parts[part])
        else:
            break
        blob += 1
    return digest.hexdigest(), len(infos), points


def compare(restored: redis.Redis, live: redis.Redis, prefix: str = DEFAULT_PREFIX) -> Report:
    keys = Keys(prefix)
    report = Report()
    # Every run of both layouts: the shared indexes and each owner's (schema version 2).
    ids = Lab(restored, prefix).run_ids()[::-1]  # oldest first, as the report reads best
    report.runs = len(ids)
    live_ids = set(Lab(live, prefix).run_ids())
    for run_id in ids:
        if run_id not in live_ids:
            report.differences.append(f"run {run_id}: in the backup, not in the live store")
            continue
        status = restored.hget(keys.run(run_id), "status")
        copy_digest, n_series, n_points = run_digest(restored, keys, run_id)
        report.series += n_series
        report.points += n_points
        live_archived = live.hget(keys.run(run_id), "archive_digest")
        if live_archived and not restored.hget(keys.run(run_id), "archive_digest"):
            # Archived since the backup: the copy's points must be those the archive holds.
            report.canaries += 1
            if archive.points_digest(Lab(restored, prefix), run_id) != live_archived.decode():
                report.differences.append(f"run {run_id}: archived since the backup, and the archive differs")
        elif status == run_record.FINISHED.encode() or status == run_record.CRASHED.encode():
            report.canaries += 1
            live_digest, _, _ = run_digest(live, keys, run_id)
            if live_digest != copy_digest:
                report.differences.append(f"run {run_id}: finished before the backup, yet its data differ")
        else:
            _, _, live_points = run_digest(live, keys, run_id)
            if live_points < n_points:
                report.differences.append(
                    f"run {run_id}: {n_points} points in the backup, {live_points} live"
                )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labstats.ops.drill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--restored", required=True, help="URL of the Redis started on the restored file")
    parser.add_argument("--live", required=True, help="URL of the live store (a replica)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = compare(redis.Redis.from_url(args.restored), redis.Redis.from_url(args.live), args.prefix)
    took = time.monotonic() - started
    print(f"checked {report.runs} runs ({report.canaries} finished ones compared byte for byte), "
          f"{report.series} series, {report.points} points in {took:.2f} s")  # fmt: skip
    for line in report.differences:
        print(f"DIFFERS: {line}")
    print("restore drill: EQUAL" if report.equal else f"restore drill: {len(report.differences)} DIFFERENCES")
    return 0 if report.equal else 1


if __name__ == "__main__":
    sys.exit(main())
