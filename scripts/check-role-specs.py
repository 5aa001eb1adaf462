#!/usr/bin/env python3
"""Every role documents the same variables in defaults/main.yml and meta/argument_specs.yml.

A variable in one file and not the other is either undocumented or unvalidated: both fail.
"""

import sys
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parent.parent / "roles"


def main() -> int:
    problems = []
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        defaults_file = role / "defaults" / "main.yml"
        spec_file = role / "meta" / "argument_specs.yml"
        if not spec_file.exists():
            problems.append(f"{role.name}: no meta/argument_specs.yml")
            continue
        defaults = set((yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {})
        spec = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"].get("options", {})
        for name in sorted(defaults - set(spec)):
            problems.append(f"{role.name}: {name} is in defaults but not in argument_specs")
        for name in sorted(set(spec) - defaults):
            if not spec[name].get("required"):
                problems.append(f"{role.name}: {name} is in argument_specs but has no default")
        for name in sorted(set(defaults) | set(spec)):
            if not name.startswith(role.name + "_"):
                problems.append(f"{role.name}: {name} does not start with the role name")
    for line in problems:
        print(line)
    print(f"checked {len(list(ROLES.iterdir()))} roles: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
