"""`--baseline COMMIT`: a benchmark measured with two versions of labstats side by side in one
run. The baseline commit is checked out in a throwaway git worktree under .cache/ (removed
afterwards); the benchmark's own script (this checkout's) then runs twice, each time in a
fresh process whose PYTHONPATH is one tree, so each imports its own `labstats` and both are
measured the same way on the same machine within minutes of each other.

    python benchmarks/bench_media.py --baseline 47045b9            # this checkout against 47045b9
    python benchmarks/bench_media.py --baseline 47045b9 --commit HEAD  # HEAD, not the work tree

A benchmark takes part by putting its measuring in one function, `measure(args) -> dict`
(JSON-able: its table's rows, its summary's figures, and `compare`: the figures worth a ratio),
and calling `side_by_side(args, measure)`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKTREES = ROOT / ".cache" / "bench-worktrees"
# Where the measured `labstats` is: set for the measuring processes, this checkout otherwise.
PACKAGE_ENV = "LABSTATS_BENCH_PACKAGE"


def package_root() -> str:
    """The tree whose `labstats` a benchmark imports (put first on sys.path)."""
    return os.environ.get(PACKAGE_ENV) or str(ROOT)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        metavar="COMMIT",
        help="also measure this commit's labstats (a worktree under .cache/), side by side",
    )
    parser.add_argument(
        "--commit", metavar="COMMIT", help="with --baseline: measure this commit instead of the work tree"
    )
    # Where a measuring process writes its figures (set by side_by_side, not by hand).
    parser.add_argument("--figures-to", metavar="FILE", help=argparse.SUPPRESS)


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def short(commit: str) -> str:
    """A commit's 10-digit name (SystemExit when git does not know it)."""
    return _git("rev-parse", "--verify", "--short=10", f"{commit}^{{commit}}")


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A detached checkout of ``commit`` under .cache/, removed on the way out."""
    name = short(commit)
    WORKTREES.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=WORKTREES))
    _git("worktree", "add", "--quiet", "--detach", str(path), name)
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True
        )
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def _forwarded_argv() -> list[str]:
    """This command's options for a measuring process: without --baseline, --commit, --publish."""
    out, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--baseline", "--commit"):
            skip = True
        elif not (arg.startswith(("--baseline=", "--commit=")) or arg == "--publish"):
            out.append(arg)
    return out


def measure_in(tree: Path, label: str) -> dict:
    """Run this benchmark's script in a fresh process importing ``tree``'s labstats."""
    with tempfile.NamedTemporaryFile(prefix="bench-figures-", suffix=".json") as out:
        env = dict(os.environ, PYTHONPATH=str(tree), **{PACKAGE_ENV: str(tree)})
        command = [
            sys.executable,
            str(Path(sys.argv[0]).resolve()),
            *_forwarded_argv(),
            "--figures-to",
            out.name,
        ]
        print(f"measuring {label} ...", file=sys.stderr, flush=True)
        subprocess.run(command, env=env, check=True, stdout=sys.stderr)
        return json.loads(Path(out.name).read_text(encoding="utf-8"))


def side_by_side(
    args: argparse.Namespace, measure: Callable[[argparse.Namespace], dict]
) -> tuple[dict, dict | None]:
    """(the figures of this checkout or of --commit, the baseline's or None). Without
    --baseline the measuring runs here, in this process, as it always did. A measuring
    process (--figures-to) writes its figures and exits."""
    if args.figures_to:
        Path(args.figures_to).write_text(json.dumps(measure(args)), encoding="utf-8")
        raise SystemExit(0)
    if not args.baseline:
        if args.commit:
            raise SystemExit("--commit names what is measured against --baseline: give both")
        return measure(args), None
    with worktree(args.baseline) as tree:
        base = measure_in(tree, f"baseline {short(args.baseline)}")
        base["commit"] = short(args.baseline)
    if args.commit:
        with worktree(args.commit) as tree:
            current = measure_in(tree, f"commit {short(args.commit)}")
        current["commit"] = short(args.commit)
    else:
        current = measure_in(ROOT, "this checkout")
    return current, base


def ratio_table(current: dict, base: dict, this: str) -> list[str]:
    """The figures both runs have, with their ratio (this / baseline): a Markdown table."""
    from report import table

    before = {name: (value, unit) for name, value, unit in base.get("compare", [])}
    rows = []
    for name, value, unit in current.get("compare", []):
        if name not in before:
            continue
        old = before[name][0]
        ratio = f"{value / old:.2f}×" if old else "n/a"
        rows.append([name, _with_unit(old, unit), _with_unit(value, unit), ratio])
    return table(["measure", f"baseline {base['commit']}", this, "ratio"], rows)


def _with_unit(value: float, unit: str) -> str:
    return f"{_number(value)}{unit}" if unit in ("×", "/s") else f"{_number(value)} {unit}"


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def summary_ratios(current: dict, base: dict, count: int = 2) -> str:
    """The first ``count`` compared figures as "name old → new unit" for a summary line."""
    before = {name: value for name, value, _ in base.get("compare", [])}
    parts = [
        f"{name.strip()} {_with_unit(before[name], unit)} → {_with_unit(value, unit)}"
        for name, value, unit in current.get("compare", [])
        if name in before
    ]
    return "; ".join(parts[:count])
