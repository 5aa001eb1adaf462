"""labstats: list, show, export and follow runs; tag, note, rename, star, protect, trash and
restore them, and read the audit of those changes; regenerate a run; replay spooled records.

Where Redis is: --url, else $LABSTATS_URL, else ~/.config/labstats/config.toml, else
redis://127.0.0.1:6379/0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import getpass
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import redis

from labstats import reader
from labstats.config import LabstatsError
from labstats.curation import Curation, CurationError, read_audit
from labstats.format import run_record
from labstats.format.curation import ANNOTATOR
from labstats.format.keys import valid_owner
from labstats.ops import archive, purge, replay, tbimport
from labstats.read import regenerate

EX_TEMPFAIL = 75  # replay: Redis cannot be reached now; try again later (the timer does)
EX_REFUSED = 2  # a change to a run's annotations was refused (a rule, or who may)


def _when(ts: Any) -> str:
    """A stored unix time as local time, or "-" when it is none (any training user may write
    any run's record: NaN, text or a year past 9999 must not stop `ls` or `show` for all)."""
    seconds = reader.number(ts)
    if seconds is None:
        return "-"
    try:
        return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return "-"


def parse_param(item: str) -> tuple[str, Any]:
    """KEY=VALUE: a number or a plain string (JSON also works: true, null, "quoted");
    KEY=LOW..HIGH: an inclusive range, either end may be left out (lr=..1e-3)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise LabstatsError(f"--param {item!r}: write KEY=VALUE or KEY=LOW..HIGH")
    if ".." in raw and not raw.startswith('"'):
        low, _, high = raw.partition("..")
        return key, (_value(low) if low else None, _value(high) if high else None)
    return key, _value(raw)


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw  # a plain string: sweep-0.01, adam


def cmd_ls(lab: reader.Lab, args: argparse.Namespace) -> int:
    params = dict(parse_param(item) for item in args.param or [])
    runs = lab.runs(name=args.name, tag=args.tag, status=args.status, params=params or None, limit=args.limit,
                    project=args.project, trashed=args.trashed)  # fmt: skip
    pending = {} if args.trashed else replay.pending_runs()
    if args.json:
        rows = [
            {
                **r.meta,
                "id": r.id,
                "name": r.name,
                "display_name": r.display_name,
                "status": r.status,
                "spooled": str(pending.get(r.id) or ""),
                "annotations": r.annotations.to_dict(),
            }
            for r in runs
        ]
        print(json.dumps(rows, default=str))
        return 0
    # Whole names, however long (cut ones looked alike: exp/loss_train, exp/loss_val...).
    width = max([30, *(len(r.display_name) for r in runs)])
    print(f"{'NAME':{width}} {'STATUS':9} {'STARTED':19} {'HOST':15} ID")
    for r in runs:
        host = r.meta.get("host", "-")[:15]
        mark = "  (records waiting in a spool)" if r.id in pending else ""
        if r.trashed:
            mark += f"  (trashed {_when(r.annotations.trashed)} by {r.annotations.trashed_by or '?'})"
        name = _shown(r.display_name)
        print(f"{name:{width}} {r.status:9} {_when(r.meta.get('started')):19} {host:15} {r.id}{mark}")
    listed = {r.id for r in runs}
    for run_id, path in pending.items():
        if run_id not in listed:
            print(f"{'?':{width}} {'spooled':9} {'-':19} {'-':15} {run_id}  (only in {path})")
    if pending:
        print(f"{len(pending)} run(s) have records waiting in a spool: `labstats replay` sends them.")
    return 0


def one_store(lab: reader.Lab | reader.Labs, command: str) -> reader.Lab:
    """The store a writing command works on; several (the web box's config) is refused."""
    if isinstance(lab, reader.Labs):
        raise LabstatsError(
            f"`labstats {command}` works on one store, a training box's Redis; this config names "
            f"several ({', '.join(lab.labs)}): run it on the training box, or give --url"
        )
    return lab


def cmd_replay(lab: reader.Lab, args: argparse.Namespace) -> int:
    lab = one_store(lab, "replay")
    outcomes = replay.replay(args.paths, lab.redis, lab.keys)
    for o in outcomes:
        extra = f" ({o.detail})" if o.detail else ""
        print(f"{o.state:9} {o.batches:>6} batches  {o.path}{extra}")
    if not outcomes:
        print("no spooled records")
    return EX_TEMPFAIL if any(o.state == "kept" for o in outcomes) else 0


def parse_bytes(text: str) -> int:
    """A size: 8G, 512M, 1.5T or plain bytes (powers of 1024)."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in units else ""
    try:
        return int(float(raw[: len(raw) - len(unit)]) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (like 8G, 512M or 1073741824)") from None


ARCHIVER_HINT = "on a lab's training box the archive account does it: sudo labstats-archiver archive RUN..."


def _can_archive(directory: Path) -> None:
    """Refuse at once, saying who may, when this user cannot write the archive folder (a
    training user on a lab box): before, that was a PermissionError traceback half-way."""
    probe = directory if directory.exists() else directory.parent
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise LabstatsError(f"cannot write the archive folder {directory}; {ARCHIVER_HINT}")


def cmd_archive(lab: reader.Lab, args: argparse.Namespace) -> int:
    lab = one_store(lab, "archive")
    directory = Path(args.dir) if args.dir else lab.archive_dir
    _can_archive(directory)
    if args.due:
        if args.older_than is None and args.memory_above is None:
            raise LabstatsError("--due needs --older-than DAYS and/or --memory-above SIZE")
        runs = archive.due(lab, args.older_than, args.memory_above)
    elif args.runs:
        runs = [lab.run(ref) for ref in args.runs]
    else:
        raise LabstatsError("name the runs to archive, or use --due")
    failed = 0
    for run in runs:
        try:
            done = archive.archive(lab, run, directory, force=args.force)
        except LabstatsError as exc:
            print(f"labstats: {exc}", file=sys.stderr)
            failed += 1
            continue
        freed = (
            ""
            if done.redis_bytes_freed is None
            else f", {done.redis_bytes_freed / 2**20:.1f} MiB freed in Redis"
        )
        print(
            f"archived  {done.run}  {done.rows} points, {done.file_bytes / 2**20:.1f} MiB  {done.path}{freed}"
        )
    if not runs:
        print("nothing to archive")
    return 1 if failed else 0


PURGER_HINT = "on a lab's training box root does it: sudo labstats-purge RUN... (or --due)"


def _purger(lab: reader.Lab) -> str:
    """The Redis user a purge or fsck runs as; a training user is refused before anything
    goes (it may not remove keys, and the store's files are root's)."""
    username = lab.redis.connection_pool.connection_kwargs.get("username")
    if username not in (None, "default", purge.WRITER, "ops"):
        raise LabstatsError(f"Redis user {username} may not purge runs; {PURGER_HINT}")
    return username or getpass.getuser()


def cmd_purge(lab: reader.Lab, args: argparse.Namespace) -> int:
    lab = one_store(lab, "purge")
    who = _purger(lab)
    directory = Path(args.dir) if args.dir else lab.archive_dir
    _can_archive(directory)
    if args.due:
        ids = _past_retention(lab, args.retention_days)
    elif args.runs:
        ids = [lab.run(ref).id for ref in args.runs]
    else:
        raise LabstatsError("name the runs to purge (they must be in the trash), or use --due")
    done = purge.purge(lab.redis, lab.keys, ids, archive_dir=directory, store=lab.artifacts, who=who)
    for result in done:
        shared = f", {result.kept_shared} kept (other runs use them)" if result.kept_shared else ""
        archived = ", its archive" if result.archive else ""
        print(f"purged    {result.run_id}  {result.keys} keys, {result.files} files{shared}{archived}")
    if not done:
        print("nothing to purge")
    return 0


def _past_retention(lab: reader.Lab, retention_days: float) -> list[str]:
    """The runs the nightly purge removes (see labstats.ops.purge.due); the others said."""
    found = purge.due(lab.redis, lab.keys, retention_days)
    for run_id, first_seen in found.waiting:
        print(f"waiting   {run_id}  first seen in the trash here {_when(first_seen)}")
    for run_id in found.asked:
        print(f"asked     {run_id}  a purge was asked for in the viewer: `labstats-purge {run_id}` does it")
    return found.ids


def cmd_fsck(lab: reader.Lab, args: argparse.Namespace) -> int:
    lab = one_store(lab, "fsck")
    directory = Path(args.dir) if args.dir else lab.archive_dir
    report = purge.fsck(lab.redis, lab.keys, directory, lab.artifacts)
    print(purge.as_json(report) if args.json else purge.report_text(report))
    return 0 if report.clean else 1


def cmd_prune_copies(lab: reader.Lab | reader.Labs, args: argparse.Namespace) -> int:
    """The web box's part of a purge: each training box's copies no run holds any more."""
    labs = lab.labs if isinstance(lab, reader.Labs) else {"local": lab}
    refused = 0
    for name, one in labs.items():
        found = purge.prune_copies(one.redis, one.keys, one.archive_dir, one.artifacts,
                                   min_age=args.min_age_hours * 3600, max_share=args.max_share)  # fmt: skip
        if found.refused:
            refused += 1
            print(f"{name}: {found.refused}", file=sys.stderr)
        else:
            print(f"{name}: {len(found.archives)} archive copies and {len(found.files)} files removed")
    return 1 if refused else 0


def cmd_import_tb(lab: reader.Lab, args: argparse.Namespace) -> int:
    one_store(lab, "import-tb")
    results = tbimport.import_tb(args.logdir, url=args.url, prefix=args.prefix, progress=print)
    imported = [r for r in results if r.run]
    print(f"{len(imported)} runs imported, {len(results) - len(imported)} skipped")
    return 0


def cmd_unarchive(lab: reader.Lab, args: argparse.Namespace) -> int:
    lab = one_store(lab, "unarchive")
    directory = Path(args.dir) if args.dir else lab.archive_dir
    for ref in args.runs:
        run = lab.run(ref)
        print(f"restored  {run.name}  {archive.unarchive(lab, run, directory)} points")
    return 0


def cmd_show(lab: reader.Lab, args: argparse.Namespace) -> int:
    run = lab.run(args.run)
    if args.diff:
        sys.stdout.write(run.diff())
        return 0
    if args.freeze:
        freeze = run.freeze()
        if args.checked:  # as `labstats regenerate` writes requirements.txt
            freeze, left_out = regenerate.checked_freeze(freeze)
            for line in left_out:
                print(f"labstats: left out: {line!r} (only name==version lines are kept)", file=sys.stderr)
        sys.stdout.write(freeze)
        return 0
    info = run.series_info()
    ann = run.annotations
    print(f"run       {_shown(run.display_name)}  ({run.id})")
    if ann.name:
        print(f"logged as {run.name}")
    if ann.project:
        print(f"project   {_shown(ann.project)}")
    marks = [word for word, on in (("starred", ann.starred), ("protected", ann.protected)) if on]
    if ann.trashed is not None:
        marks.append(f"in the trash since {_when(ann.trashed)} (by {ann.trashed_by or '?'})")
    if marks:
        print(f"marks     {', '.join(marks)}")
    print(f"status    {run.status}{'  (' + run.reason + ')' if run.reason else ''}")
    print(f"started   {_when(run.meta.get('started'))}   ended {_when(run.meta.get('ended'))}")
    print(f"host      {run.meta.get('host', '-')}   python {run.meta.get('python', '-')}")
    if run.meta.get("git_commit"):
        print(f"git       {run.meta['git_commit']}{' (dirty)' if run.meta.get('git_dirty') else ''}")
    if ann.tags:
        print(f"tags      {', '.join(map(_shown, ann.tags))}")
    if ann.note:
        print("note:")
        for line in ann.note.splitlines():
            print(f"  {line}")
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


def cmd_export_html(lab: reader.Lab, args: argparse.Namespace) -> int:
    try:  # Bokeh is the viewer's (a training box's venv may not have it)
        from labstats import export
    except ImportError as exc:
        missing = f"export-html needs Bokeh ({exc.name} is missing)"
        raise LabstatsError(f"{missing}: pip install 'labstats[viewer]'") from None
    if args.report:  # a report of the viewer's, from its SQLite file (labstats.viewer.reports)
        if args.runs:
            raise LabstatsError("export-html: name runs or --report, not both")
        from labstats.viewer import reports

        html = reports.file_from_store(args.report, args.version, args.db, args.url, args.prefix)
        out = Path(args.output or f"report-{args.report}.html")
        out.write_text(html, encoding="utf-8")
        print(f"{out}  {len(html.encode()) / 2**20:.1f} MiB, opens offline")
        return 0
    if not args.runs:
        raise LabstatsError("export-html: name a run (several: a comparison), or --report ID")
    runs = [lab.run(ref) for ref in args.runs]
    if len(runs) == 1 and not args.series:
        html = export.run_html(runs[0])
    else:
        html = export.compare_html(runs, args.series or None)
    out = Path(args.output or f"{runs[0].name.replace('/', '_')}{'' if len(runs) == 1 else '-compared'}.html")
    out.write_text(html, encoding="utf-8")
    print(f"{out}  {len(html.encode()) / 2**20:.1f} MiB, opens offline")
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
        status = lab.run(run.id).status  # read before the points: none can be missed
        new = run.series(args.series, start=None if last is None else last + 1)
        for i, v in zip(new.idx, new.values, strict=True):
            print(f"{i}\t{v}", flush=True)
        if len(new):
            last = int(new.idx[-1])
        if status != "running":
            print(f"run {run.name} {status}", file=sys.stderr)
            return 0 if status == "finished" else 1
        time.sleep(args.interval)
    return 0


def cmd_regenerate(lab: reader.Lab, args: argparse.Namespace) -> int:
    run = lab.run(args.run)
    p = run.regenerate_plan()
    where = regenerate.checkout(
        p,
        run.diff(),
        run.freeze(),
        Path(args.dir),
        warn=lambda said: print(f"labstats: {said}", file=sys.stderr),
    )
    for note in p.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"checked out {p.commit[:12]}{' with the recorded changes' if p.dirty else ''} in {args.dir}")
    if (Path(args.dir) / "requirements.txt").is_file():
        print(
            f"packages the run had: {Path(args.dir) / 'requirements.txt'} (pip install -r it in a fresh venv)"
        )
    if p.no_command:
        print(f"labstats: run {p.run_id}: {p.no_command}", file=sys.stderr)
        return 1 if args.execute else 0
    command = " ".join(shlex.quote(a) for a in [*(f"{k}={v}" for k, v in p.env.items()), *p.command])
    print(f"run it:\n  cd {shlex.quote(str(where))} && {command}")
    python = args.python
    if args.env:
        python = regenerate.make_env(Path(args.dir), args.python)
        print(f"the run's packages are in {Path(args.dir) / '.venv'}")
    if args.execute:
        return regenerate.run_command(p, where, python)
    return 0


def _shown(text: str) -> str:
    """Text another may have written, safe to print on a terminal (no escape sequences)."""
    return "".join(c if c.isprintable() or c == "\t" else "?" for c in text)


def curation_for(lab: reader.Lab | reader.Labs, ref: str, command: str) -> tuple[Curation, reader.Run]:
    """The run ``ref`` and a Curation on its store, as the Redis user this box's config names
    (a training user: its own runs' annotations; see docs/security.md)."""
    if isinstance(lab, reader.Labs):
        raise LabstatsError(
            f"`labstats {command}` writes to the run's training box, and this config reads copies of "
            f"several ({', '.join(lab.labs)}): run it on the training box as the run's owner, or "
            "change the run in the viewer (editors)"
        )
    run = lab.run(ref)
    username = lab.redis.connection_pool.connection_kwargs.get("username")
    writer = username if valid_owner(username) or username == ANNOTATOR else "default"
    # A training user's own audit stream names it; a store without users (a laptop) whoever runs this.
    actor = writer if writer not in (ANNOTATOR, "default") else getpass.getuser()
    return Curation(lab.redis, lab.keys.prefix, actor=actor, writer=writer, via="cli"), run


def _curate(lab: reader.Lab | reader.Labs, args: argparse.Namespace, what: str, act) -> int:
    """Apply ``act(curation, run_id)`` to the named run and say what it is now. A refusal is
    one clear line and exit status 2 (and, where the ACL refused, a note in the audit)."""
    cur, run = curation_for(lab, args.run, args.command)
    try:
        ann = act(cur, run.id)
    except CurationError as exc:
        if "only its owner" in str(exc):
            with contextlib.suppress(redis.RedisError):
                cur.refused(run.id, what)
        raise
    except redis.ReadOnlyError:
        raise LabstatsError(
            "this store is a read-only copy (a replica): change annotations on the run's training box, "
            "or in the viewer"
        ) from None
    tags = f"  tags: {', '.join(map(_shown, ann.tags))}" if ann.tags else ""
    state = "  (in the trash)" if ann.trashed is not None else ""
    print(f"{_shown(ann.name or run.name)}  ({run.id}){tags}{state}")
    return 0


def _read_note(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


def cmd_tag(lab, args) -> int:
    return _curate(
        lab, args, f"tag {' '.join(args.tags)}"[:200], lambda c, r: c.change(r, tags_add=args.tags)
    )


def cmd_untag(lab, args) -> int:
    what = f"untag {' '.join(args.tags)}"[:200]
    return _curate(lab, args, what, lambda c, r: c.change(r, tags_remove=args.tags))


def cmd_note(lab, args) -> int:
    note = _read_note(args.text)
    return _curate(lab, args, "note", lambda c, r: c.change(r, note=note))


def cmd_rename(lab, args) -> int:
    return _curate(lab, args, "rename", lambda c, r: c.change(r, name=args.name))


def cmd_project(lab, args) -> int:
    return _curate(lab, args, "project", lambda c, r: c.change(r, project=args.name))


def cmd_flag(field: str, value: bool):
    def command(lab, args) -> int:
        word = ("" if value else "un") + ("star" if field == "starred" else "protect")
        return _curate(lab, args, word, lambda c, r: c.change(r, **{field: value}))

    return command


def cmd_trash(lab, args) -> int:
    return _curate(lab, args, "trash", lambda c, r: c.trash(r))


def cmd_restore(lab, args) -> int:
    return _curate(lab, args, "restore", lambda c, r: c.restore(r))


def cmd_audit(lab: reader.Lab | reader.Labs, args: argparse.Namespace) -> int:
    stores = lab.labs if isinstance(lab, reader.Labs) else {"": lab}
    entries = []
    for source, store in stores.items():
        run_id = None
        if args.run:
            try:
                run_id = store.run(args.run).id
            except LabstatsError:
                run_id = args.run  # a purged run is still in the audit, by its id
        for entry in read_audit(store.redis, store.keys.prefix, run_id=run_id, limit=args.limit):
            entries.append({**entry, "source": source} if source else entry)
    entries.sort(key=lambda e: e["when"], reverse=True)
    entries = entries[: args.limit]
    if args.json:
        print(json.dumps(entries, default=str))
        return 0
    for e in entries:
        who = e["who"] if e["who"] == e["writer"] else f"{e['who']} (as {e['writer']})"
        run = f"{e['source']}/{e['run']}" if e.get("source") else e["run"]
        said = e["what"] or "; ".join(
            f"{k}: {_brief(b)} -> {_brief(a)}" for k, (b, a) in e["changes"].items()
        )
        print(_shown(f"{_when(e['when'])}  {who:24} {e['via']:6} {e['action']:8} {run}  {said}"))
    if not entries:
        print("no changes recorded")
    return 0


def _brief(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _documented(sub, name: str, module, help_text: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows its module's docstring as written (plain text)."""
    return sub.add_parser(
        name, help=help_text, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labstats", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="redis://user:password@host:port/db (default: $LABSTATS_URL or config)")
    parser.add_argument("--prefix", help="key prefix (default: ls)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ls", help="list runs, newest first")
    p.add_argument("--name", help="name contains this")
    p.add_argument("--tag")
    p.add_argument("--status", choices=list(run_record.SHOWN_STATUSES))
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="config value (lr=0.001, opt=adam) or range (lr=1e-4..1e-2); repeatable")  # fmt: skip
    p.add_argument("--project", help="in this project")
    p.add_argument("--trashed", action="store_true", help="the runs in the trash (and only them)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ls)

    # Annotations after the fact, written on the run's master as this box's Redis user.
    p = sub.add_parser("tag", help="add tags to a run")
    p.add_argument("run", help="run name or id")
    p.add_argument("tags", nargs="+", metavar="TAG")
    p.set_defaults(func=cmd_tag)
    p = sub.add_parser("untag", help="remove tags from a run (logged ones too)")
    p.add_argument("run", help="run name or id")
    p.add_argument("tags", nargs="+", metavar="TAG")
    p.set_defaults(func=cmd_untag)
    p = sub.add_parser("note", help="set a run's note (markdown; - reads it from stdin; '' clears it)")
    p.add_argument("run", help="run name or id")
    p.add_argument("text", metavar="TEXT|-")
    p.set_defaults(func=cmd_note)
    p = sub.add_parser("rename", help="give a run a display name (its id never changes; '' clears it)")
    p.add_argument("run", help="run name or id")
    p.add_argument("name")
    p.set_defaults(func=cmd_rename)
    p = sub.add_parser("project", help="move a run to a project ('' takes it out)")
    p.add_argument("run", help="run name or id")
    p.add_argument("name")
    p.set_defaults(func=cmd_project)
    for verb, field, value, text in (
        ("star", "starred", True, "star a run"),
        ("unstar", "starred", False, "take a run's star away"),
        ("protect", "protected", True, "protect a run: it cannot be trashed (or purged)"),
        ("unprotect", "protected", False, "let a protected run be trashed again"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("run", help="run name or id")
        p.set_defaults(func=cmd_flag(field, value))
    p = sub.add_parser("trash", help="put a run in the trash: hidden from every list, restorable")
    p.add_argument("run", help="run name or id")
    p.set_defaults(func=cmd_trash)
    p = sub.add_parser("restore", help="take a run out of the trash")
    p.add_argument("run", help="run name or id")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser("audit", help="who changed what of runs' annotations, newest first")
    p.add_argument("run", nargs="?", help="only this run's (name or id)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("show", help="a run's metadata, recipe and series")
    p.add_argument("run", help="run name or id")
    p.add_argument("--diff", action="store_true", help="print only the git diff the run started with")
    p.add_argument("--freeze", action="store_true", help="print only the packages it had (pip freeze)")
    p.add_argument("--checked", action="store_true",
                   help="with --freeze: only name==version lines (no option, URL or path)")  # fmt: skip
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("export", help="write a run's scalar series to CSV or Parquet")
    p.add_argument("run", help="run name or id")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("-o", "--output", help="file to write (default: NAME.FORMAT)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "export-html",
        help="one self-contained HTML file of a run (or a comparison of several, or a report of "
        "the viewer's): charts, config, pictures; it opens offline",
    )
    p.add_argument("runs", nargs="*", help="run names or ids (several: a comparison)")
    p.add_argument("--series", action="append", help="with several runs: the series to chart (default: all)")
    p.add_argument(
        "--report", metavar="ID", help="a report of the viewer's instead (its id, as in its address)"
    )
    p.add_argument("--version", type=int, help="with --report: that version (default: the newest)")
    p.add_argument(
        "--db", help="with --report: the viewer's SQLite file (default: its config's sessions_file)"
    )
    p.add_argument("-o", "--output", help="file to write (default: NAME.html)")
    p.set_defaults(func=cmd_export_html)

    p = sub.add_parser("tail", help="print a series' last points, and follow new ones")
    p.add_argument("run", help="run name or id")
    p.add_argument("series")
    p.add_argument("-n", "--lines", type=int, default=10)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_tail)

    p = _documented(
        sub,
        "regenerate",
        regenerate,
        "check out a run's code with its changes into an empty DIR, and run it again",
    )
    p.add_argument("run", help="run name or id")
    p.add_argument("dir", help="an empty or new directory")
    p.add_argument("--run", dest="execute", action="store_true", help="run the recorded command there")
    p.add_argument("--python", default=sys.executable, help="interpreter for --run (default: this one)")
    p.add_argument(
        "--env",
        action="store_true",
        help="make a venv in DIR/.venv with the run's recorded packages (pip, this box's package index) "
        "and run it with that venv's python",
    )
    p.set_defaults(func=cmd_regenerate)

    p = _documented(
        sub, "replay", replay, "send records spooled while Redis was away, by runs whose process has ended"
    )
    p.add_argument("paths", nargs="*", help="spool files or folders to search (default: this user's index)")
    p.set_defaults(func=cmd_replay)

    p = _documented(sub, "archive", archive, "move ended runs' points from Redis to Parquet files")
    p.add_argument("runs", nargs="*", help="run names or ids")
    p.add_argument("--due", action="store_true", help="every ended run that --older-than/--memory-above pick")
    p.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="with --due: runs that ended and were last written this long ago",
    )
    p.add_argument("--memory-above", type=parse_bytes, metavar="SIZE",
                   help="with --due: oldest ended runs until Redis uses under SIZE (8G, 512M)")  # fmt: skip
    p.add_argument(
        "--force", action="store_true", help="also runs still marked running (their process is gone)"
    )
    p.add_argument("--dir", help="archive folder (default: archive_dir of the config, see labstats.config)")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser(
        "purge",
        help="remove runs in the trash for good: their keys, archive and the store files no other run uses",
        description="Remove runs in the trash for good, on their training box (root, with the archiver's "
        "Redis user): their keys, index entries, name and annotations, their archive file, and the store "
        "files no other run refers to. Protected runs and runs not in the trash are refused.",
    )
    p.add_argument("runs", nargs="*", help="run names or ids (in the trash)")
    p.add_argument(
        "--due", action="store_true", help="every trashed run past --retention-days, or asked for by an admin"
    )
    p.add_argument(
        "--retention-days",
        type=float,
        default=purge.DEFAULT_RETENTION_DAYS,
        metavar="DAYS",
        help="with --due: days a run stays in the trash (default %(default)g)",
    )
    p.add_argument("--dir", help="archive folder (default: as for archive)")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser(
        "fsck", help="list keys, index entries, archives and store files of no run (exit 1 if any)"
    )
    p.add_argument("--dir", help="archive folder (default: as for archive)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_fsck)

    p = sub.add_parser(
        "prune-copies",
        help="on the web box: remove the copies (archives, files) of runs purged on their training box",
    )
    p.add_argument("--min-age-hours", type=float, default=purge.MIN_FILE_AGE / 3600,
                   help="leave younger copies (default: 24)")  # fmt: skip
    p.add_argument("--max-share", type=float, default=0.5,
                   help="remove nothing when more than this share of a box's copies would go")  # fmt: skip
    p.set_defaults(func=cmd_prune_copies)

    p = _documented(sub, "import-tb", tbimport, "import TensorBoard event files, one run per run folder")
    p.add_argument("logdir", help="the folder TensorBoard would be given (--logdir)")
    p.set_defaults(func=cmd_import_tb)

    p = sub.add_parser("unarchive", help="put archived runs' points back into Redis (the files are kept)")
    p.add_argument("runs", nargs="+", help="run names or ids")
    p.add_argument("--dir", help="archive folder (default: as for archive)")
    p.set_defaults(func=cmd_unarchive)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        lab = reader.connect(args.url, args.prefix)
        return args.func(lab, args)
    except CurationError as exc:
        print(f"labstats: {exc}", file=sys.stderr)
        return EX_REFUSED
    except LabstatsError as exc:
        print(f"labstats: {exc}", file=sys.stderr)
        return EX_TEMPFAIL if args.command == "replay" and "cannot reach" in str(exc) else 1
    except BrokenPipeError:  # `labstats ls | head`: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        print(f"labstats: lost the connection to Redis: {exc}", file=sys.stderr)
        return 1
    except redis.exceptions.NoPermissionError as exc:  # the ACL said no: who may is in docs/security.md
        print(f"labstats: Redis refused this user: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
