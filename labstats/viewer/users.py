"""Write the viewer's users file: one ``name:bcrypt-hash`` line per login user.

    echo '{"alice": "her password"}' | python -m labstats.viewer.users /etc/labstats/viewer-users

The viewer role runs this on the web box with every user's password on stdin and prints
``changed`` or ``unchanged``. A user whose stored hash still matches its password keeps that
hash (bcrypt salts are random: hashing again would rewrite the file on every converge); a user
no longer listed is dropped, so it can no longer log in. The file is replaced whole, never
half written, and keeps its owner and mode.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import bcrypt

from labstats.viewer.auth import read_pairs

COST = 12  # about 0.2 s a check: what a login costs, and a guess


def lines(passwords: dict[str, str], stored: dict[str, bytes]) -> str:
    """The file's text for these users, reusing each stored hash that matches its password."""
    out = []
    for name, password in sorted(passwords.items()):
        # What the viewer reads back (auth.read_pairs): stripped lines, "#" comments.
        if not name or ":" in name or name.startswith("#") or any(c.isspace() or ord(c) < 32 for c in name):
            raise ValueError(f"a user name cannot be {name!r}")
        secret = password.encode()[:72]  # bcrypt reads at most 72 bytes
        old = stored.get(name)
        if old is None or not _matches(secret, old):
            old = bcrypt.hashpw(secret, bcrypt.gensalt(COST))
        out.append(f"{name}:{old.decode()}\n")
    return "".join(out)


def _matches(secret: bytes, stored: bytes) -> bool:
    try:
        return bcrypt.checkpw(secret, stored)
    except ValueError:  # not a bcrypt hash (an old or hand-written line): replaced
        return False


def write(path: Path, passwords: dict[str, str]) -> bool:
    """Write the file for ``passwords``; whether it changed."""
    current = path.read_text() if path.exists() else None
    text = lines(passwords, read_pairs(str(path), str.encode) if current is not None else {})
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
        print("usage: python -m labstats.viewer.users FILE < passwords.json", file=sys.stderr)
        return 2
    passwords = json.load(sys.stdin)
    if not isinstance(passwords, dict) or not all(isinstance(v, str) for v in passwords.values()):
        print("stdin must be a JSON object of user name -> password", file=sys.stderr)
        return 2
    print("changed" if write(Path(args[0]), passwords) else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
