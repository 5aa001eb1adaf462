"""Write the viewer's users file: one ``name:bcrypt-hash:role`` line per login user.

    echo '{"alice": {"password": "her password", "role": "editor"}}' \
        | python -m labstats.viewer.users /etc/labstats/viewer-users

The viewer role runs this on the web box with every user's password and role on stdin and
prints ``changed`` or ``unchanged``. A user whose stored hash still matches its password keeps
that hash (bcrypt salts are random: hashing again would rewrite the file on every converge); a
user no longer listed is dropped, so it can no longer log in; a role that is not reader, editor
or admin is refused before anything is written. A bare password (``{"alice": "pw"}``, the form
of before roles) makes a reader. A file of before, without roles, is rewritten with them once.
The file is replaced whole, never half written, and keeps its owner and mode.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import bcrypt

from labstats.viewer.auth import ROLELESS, parse_role, read_entries

COST = 12  # about 0.2 s a check: what a login costs, and a guess


def accounts_of(given: dict) -> dict[str, tuple[str, str]]:
    """name -> (password, role) from the JSON the role sends; ValueError for a bad entry."""
    accounts = {}
    for name, entry in given.items():
        if isinstance(entry, str):
            entry = {"password": entry, "role": ROLELESS}
        if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
            raise ValueError(f"{name!r}: give a password (a string) and a role")
        accounts[name] = (entry["password"], parse_role(entry.get("role")))
    return accounts


def lines(accounts: dict[str, tuple[str, str]], stored: dict[str, bytes]) -> str:
    """The file's text for these users, reusing each stored hash that matches its password."""
    out = []
    for name, (password, role) in sorted(accounts.items()):
        # What the viewer reads back (auth.read_entries): stripped lines, "#" comments.
        if not name or ":" in name or name.startswith("#") or any(c.isspace() or ord(c) < 32 for c in name):
            raise ValueError(f"a user name cannot be {name!r}")
        parse_role(role)
        secret = password.encode()[:72]  # bcrypt reads at most 72 bytes
        old = stored.get(name)
        if old is None or not _matches(secret, old):
            old = bcrypt.hashpw(secret, bcrypt.gensalt(COST))
        out.append(f"{name}:{old.decode()}:{role}\n")
    return "".join(out)


def _matches(secret: bytes, stored: bytes) -> bool:
    try:
        return bcrypt.checkpw(secret, stored)
    except ValueError:  # not a bcrypt hash (an old or hand-written line): replaced
        return False


def _stored_hashes(path: Path) -> dict[str, bytes]:
    try:
        return {name: hashed for name, (hashed, _) in read_entries(str(path), str.encode).items()}
    except ValueError:  # a line with an unknown role: its hash is no use, every line is written again
        return {}


def write(path: Path, given: dict) -> bool:
    """Write the file for ``given`` (name -> {"password", "role"}, as on stdin); whether it
    changed. ValueError, and nothing written, for a bad name, password or role."""
    accounts = accounts_of(given)
    current = path.read_text() if path.exists() else None
    text = lines(accounts, _stored_hashes(path) if current is not None else {})
    if text == current:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        if current is not None:
            st = path.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m labstats.viewer.users FILE < accounts.json", file=sys.stderr)
        return 2
    given = json.load(sys.stdin)
    if not isinstance(given, dict):
        print('stdin must be a JSON object: {"name": {"password": "...", "role": "reader"}}', file=sys.stderr)
        return 2
    try:
        changed = write(Path(args[0]), given)
    except ValueError as exc:
        print(f"refused, nothing written: {exc}", file=sys.stderr)
        return 2
    print("changed" if changed else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
