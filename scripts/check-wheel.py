#!/usr/bin/env python3
"""Check a built labstats wheel: its version is labstats.__version__, and it holds every
module, template and static file of the source tree (what the viewer serves)."""

import sys
import zipfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root))
from labstats import __version__  # noqa: E402

wheel = Path(sys.argv[1])
names = set(zipfile.ZipFile(wheel).namelist())
wanted = {
    p.relative_to(root).as_posix()
    for pattern in ("labstats/**/*.py", "labstats/viewer/templates/*.html", "labstats/viewer/static/*")
    for p in root.glob(pattern)
    if "__pycache__" not in p.parts
}
missing = sorted(wanted - names)
problems = []
if f"-{__version__}-" not in wheel.name:
    problems.append(f"{wheel.name} is not version {__version__}")
if missing:
    problems.append(f"missing from the wheel: {', '.join(missing)}")
for problem in problems:
    print(problem, file=sys.stderr)
print(f"{wheel.name}: {len(wanted)} files checked, {'problems' if problems else 'complete'}")
sys.exit(1 if problems else 0)
