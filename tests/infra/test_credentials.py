"""Generated secrets on the controller: readable by their owner only (files 0600, folders
0700), and not under version control."""

import os
import stat
import subprocess
from pathlib import Path

from conftest import credentials_dir

testinfra_hosts = ["local://"]


def test_generated_secrets_are_owner_only():
    root = Path(credentials_dir())
    # Public halves are no secrets: SSH public keys, and the web box's certificate (for curl).
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".pub", ".crt"))]
    assert {p.relative_to(root).as_posix() for p in files} >= {
        "redis/users/researcher.password",  # each training account its own Redis user
        "redis/users/student.password",
        "redis/viewer.password",
        "redis/replication.password",
        "redis/ops.password",
        "redis/archiver.password",
        "file-push/trainbox",  # the training box's push key (the web box holds none for it)
        "web/labstats.password",
        "web/jupyter.password",
    }
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_the_project_ignores_its_credentials_folder():
    project = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[2]))
    check = subprocess.run(["git", "check-ignore", "-q", "credentials/x.password"], cwd=project, check=False)
    assert check.returncode == 0
