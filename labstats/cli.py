"""The ``labstats`` command: list, show, export and follow runs; replay spooled records.

Connection: ``--url`` or ``$LABSTATS_URL`` or the config file (see labstats.config).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import redis

from labstats import reader, replay
from labstats.config import LabstatsError

EX_TEMPFAIL = 75  # replay: Redis cannot be reached now; try again later (the timer does)


def _when(ts: str | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")


def cmd_ls(lab: reader.Lab, args: argparse.Namespace) -> int:
    params = {}
    for item in args.param or []:
        key, _, value = item.partition("=")
        params[key] = json.loads(value) if value else None
    runs = lab.runs(name=args.name, tag=args.tag, status=args.status, params=params or None, limit=args.limit)
    pending = replay.pending_runs()
    if args.json:
        rows = [
            {
                **r.meta,
                "id": r.id,
                "name": r.name,
                "status": r.status,
                "spooled": str(pending.get(r.id) or ""),
            }
            for r in runs
        ]
        print(json.dumps(rows, default=str))
        return 0
    print(f"{'NAME':30} {'STATUS':9} {'STARTED':19} {'HOST':15} ID")
    for r in runs:
        host = r.meta.get("host", "-")[:15]
        mark = "  (records waiting in a spool)" if r.id in pending else ""
        print(f"{r.name[:30]:30} {r.status:9} {_when(r.meta.get('started')):19} {host:15} {r.id}{mark}")
    listed = {r.id for r in runs}
    for run_id, path in pending.items():
        if run_id not in listed:
            print(f"{'?':30} {'spooled':9} {'-':19} {'-':15} {run_id}  (only in {path})")
    if pending:
        print(f"{len(pending)} run(s) have records waiting in a spool: `labstats replay` sends them.")
    return 0


def cmd_replay(lab: reader.Lab, args: argparse.Namespace) -> int:
    outcomes = replay.replay(args.paths, lab.redis, lab.keys)
    for o in outcomes:
        extra = f" ({o.detail})" if o.detail else ""
        print(f"{o.state:9} {o.batches:>6} batches  {o.path}{extra}")
    if not outcomes:
        print("no spooled records")
    return EX_TEMPFAIL if any(o.state == "kept" for o in outcomes) else 0


def cmd_show(lab: reader.Lab, args: argparse.Namespace) -> int:
    run = lab.run(args.run)
    if args.diff:
        sys.stdout.write(run.diff())
        return 0
    info = run.series_info()
    print(f"run       {run.name}  ({run.id})")
    print(f"status    {run.status}{'  (' + run.meta['reason'] + ')' if run.meta.get('reason') else ''}")
    print(f"started   {_when(run.meta.get('started'))}   ended {_when(run.meta.get('ended'))}")
    print(f"host      {run.meta.get('host', '-')}   python {run.meta.get('python', '-')}")
    if run.meta.get("git_commit"):
        print(f"git       {run.meta['git_commit']}{' (dirty)' if run.meta.get('git_dirty') else ''}")
    if run.tags:
        print(f"tags      {', '.join(run.tags)}")
    print(f"config    {json.dumps(run.config, sort_keys=True)}")
    print("regenerate:")
    for line in run.regenerate_command().splitlines():
        print(f"  {line}")
    print(f"series ({len(info)}):")
    for name in sorted(info):
        i = info[name]
        latest = run.latest(name)
        shown = "-" if latest is None else f"{latest[1]!r}"[:40]
        print(f"  {name:30} {i['count']:>10} points  last idx {i['last_idx']}  last {shown}")
    return 0


def cmd_export(lab: reader.Lab, args: argparse.Namespace) -> int:
    run = lab.run(args.run)
    out = Path(args.output or f"{run.name.replace('/', '_')}.{args.format}")
    run.export(out, args.format)
    print(out)
    return 0


def cmd_tail(lab: reader.Lab, args: argparse.Namespace) -> int:
    run = lab.run(args.run)
    series = run.series(args.series)
    shown = series.idx[-args.lines :] if args.lines else series.idx[:0]
    values = series.values[-args.lines :] if args.lines else []
    for i, v in zip(shown, values, strict=True):
        print(f"{i}\t{v}")
    last = int(series.idx[-1]) if len(series) else None
    while args.follow:
        time.sleep(args.interval)
        new = run.series(args.series, start=None if last is None else last + 1)
        for i, v in zip(new.idx, new.values, strict=True):
            print(f"{i}\t{v}", flush=True)
        if len(new):
            last = int(new.idx[-1])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labstats", description=__doc__)
    parser.add_argument("--url", help="redis://user:password@host:port/db (default: $LABSTATS_URL or config)")
    parser.add_argument("--prefix", help="key prefix (default: ls)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ls", help="list runs, newest first")
    p.add_argument("--name", help="name contains this")
    p.add_argument("--tag")
    p.add_argument("--status", choices=["running", "finished", "crashed"])
    p.add_argument("--param", action="append", metavar="KEY=JSON", help="config equality, e.g. lr=0.001")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="a run's metadata, recipe and series")
    p.add_argument("run", help="run name or id")
    p.add_argument("--diff", action="store_true", help="print only the git diff the run started with")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("export", help="write a run's scalar series to CSV or Parquet")
    p.add_argument("run", help="run name or id")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("-o", "--output", help="file to write (default: NAME.FORMAT)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("tail", help="print a series' last points, and follow new ones")
    p.add_argument("run", help="run name or id")
    p.add_argument("series")
    p.add_argument("-n", "--lines", type=int, default=10)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser(
        "replay",
        help="send records spooled while Redis was away, by runs whose process has ended",
        description=replay.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", help="spool files or folders to search (default: this user's index)")
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        lab = reader.connect(args.url, args.prefix)
        return args.func(lab, args)
    except LabstatsError as exc:
        print(f"labstats: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "replay" and "cannot reach" in str(exc) else 1
    except BrokenPipeError:  # `labstats ls | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        print(f"labstats: lost the connection to Redis: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
