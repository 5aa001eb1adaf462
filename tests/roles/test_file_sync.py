"""The push (role file_send) and the web box's receiving modules and check (role
file_receive), rendered from their templates and run here, no box needed: the push's rsync
reaches the real receiving module through an `ssh` that runs its command locally, and the
check runs as root of a user namespace (it gives files to root), its unit's writable folders
each a mount of their own, as systemd makes them. What an archive file needs
to be shown, how a re-archived file replaces its copy, and what is never shown."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

ROLES = Path(__file__).resolve().parents[2] / "roles"
BOX = {"host": "trainbox", "source": "trainbox", "push_account": "labstats-in-1", "address": "10.0.0.2"}

pytestmark = pytest.mark.skipif(
    not shutil.which("rsync") or subprocess.run(["unshare", "-rm", "true"], check=False).returncode != 0,
    reason="needs rsync and user and mount namespaces",
)


def render(role: str, template: str, **context) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLES / role / "templates"), trim_blocks=True)
    env.filters["quote"] = lambda value: "'" + str(value).replace("'", "'\\''") + "'"
    env.filters["comment"] = lambda text: f"#\n# {text}\n#"
    env.filters["dirname"] = os.path.dirname
    return env.get_template(template).render(ansible_managed="Ansible managed", **context)


class Lab:
    """A training box's folders, its push, and the web box's folders, module and check, all
    under one temporary folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.archive = root / "train/archive"
        self.store = root / "train/artifacts"
        self.home = root / "train/push-home"
        self.incoming = root / "web/incoming"
        self.shown = root / "web/archive"
        self.state = root / "web/state"
        for folder in (self.archive, self.store, self.home / ".ssh", self.state / "over-quota",
                       self.state / "damaged", self.incoming / "trainbox", self.shown / "trainbox",
                       root / "web/artifacts/trainbox", root / "bin"):  # fmt: skip
            folder.mkdir(parents=True)
        (self.home / ".ssh/id_ed25519").touch()
        module = render(
            "file_receive",
            "rsyncd-module.conf.j2",
            item=BOX,
            file_receive_artifacts_dir=root / "web/artifacts",
            file_receive_incoming_dir=self.incoming,
            file_receive_archive_dir=self.shown,
            file_receive_max_file_mb=10,
        )
        max_size = render("file_receive", "labstats-file-max-size.j2", file_receive_max_file_mb=10)
        (root / "web/max-size").write_text(max_size)
        module = module.replace("/usr/local/sbin/labstats-file-quota", "true").replace(
            "/usr/local/sbin/labstats-file-max-size", f"sh {root}/web/max-size"
        )
        # A daemon started by root would become nobody; the receiving account is never root.
        as_self = f"uid = {os.getuid()}\ngid = {os.getgid()}\n"
        (root / "web/module.conf").write_text(as_self + module)
        # The SSH session: the command the push asks for, run here against the module above.
        fake_ssh = root / "bin/ssh"
        # bin/on-connect, when there, runs once as a push connects: before rsync lists its files.
        fake_ssh.write_text(
            f'#!/bin/sh\nhook="{root}/bin/on-connect"\n'
            'if [ -x "$hook" ]; then "$hook"; rm -f "$hook"; fi\n'
            'while [ "$1" != rsync ]; do shift; done\n'
            f'exec rsync --server --daemon --config="{root}/web/module.conf" .\n'
        )
        fake_ssh.chmod(0o755)
        # The push's home is /var/lib/<its user>: a relative name brings it here.
        user = os.path.relpath(self.home, "/var/lib")
        push = render(
            "file_send",
            "labstats-file-push.j2",
            file_send_user=user,
            file_send_remote_user="labstats-in-1",
            file_send_to="hub",
            file_send_artifacts_dir=self.store,
            file_send_archive_dir=self.archive,
            file_send_max_file_mb=10,
        )
        # The store's sealed files are root's; here, the test user's (the same when root).
        (root / "push").write_text(push.replace("-user root", f"-user {os.getuid()}"))
        verify = render(
            "file_receive",
            "labstats-file-verify.j2",
            file_receive_sources=[BOX],
            file_receive_artifacts_dir=root / "web/artifacts",
            file_receive_incoming_dir=self.incoming,
            file_receive_archive_dir=self.shown,
            file_receive_state_dir=self.state,
            file_receive_box_quota_mb=100,
            file_receive_damaged_retries=3,
        )
        (root / "verify").write_text(verify)
        unit = render(
            "file_receive",
            "labstats-file-verify.service.j2",
            file_receive_artifacts_dir=root / "web/artifacts",
            file_receive_archive_dir=self.shown,
            file_receive_state_dir=self.state,
        )
        # The check's unit makes each of these a mount of its own (parents first): so does its run here.
        (writable,) = (line for line in unit.splitlines() if line.startswith("ReadWritePaths="))
        self.writable = sorted(writable.removeprefix("ReadWritePaths=").split())

    def push(self) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{self.root}/bin:{os.environ['PATH']}"}
        result = subprocess.run(
            ["sh", self.root / "push"], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        return result

    def verify(self, path_first: Path | None = None) -> str:
        """The check's report; ``path_first``: a folder of programs found before the real ones
        (to act in the middle of a check)."""
        env = dict(os.environ)
        if path_first is not None:
            env["PATH"] = f"{path_first}:{env['PATH']}"
        as_the_unit = (
            'verify=$1; shift; for path; do mount --bind "$path" "$path" || exit 1; done; exec sh "$verify"'
        )
        result = subprocess.run(
            ["unshare", "-rm", "sh", "-c", as_the_unit, "sh", self.root / "verify", *self.writable],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stderr

    def archive_file(self, name: str, content: bytes) -> str:
        """Written as the archiver does: a hidden temporary name, then renamed."""
        tmp = self.archive / f".{name}.123.tmp"
        tmp.write_bytes(content)
        tmp.replace(self.archive / name)
        return hashlib.sha256(content).hexdigest()


@pytest.fixture
def lab(tmp_path):
    return Lab(tmp_path)


def test_an_archived_runs_file_is_shown_once_checked_and_a_re_archive_replaces_it(lab):
    digest = lab.archive_file("alice.run1.parquet", b"first version")
    (lab.archive / ".alice.run2.parquet.99.tmp").write_bytes(b"half written")
    lab.push()
    shown = lab.shown / "trainbox/alice.run1.parquet"
    assert not shown.exists()  # arrived, not checked yet
    assert (lab.incoming / "trainbox/SHA256SUMS").read_text() == f"{digest}  alice.run1.parquet\n"
    assert not (lab.incoming / "trainbox/.alice.run2.parquet.99.tmp").exists()
    said = lab.verify()
    assert "arrived: trainbox/alice.run1.parquet" in said
    assert shown.read_bytes() == b"first version"
    assert oct(shown.stat().st_mode & 0o7777) == "0o444"
    assert lab.verify() == ""  # shown already: nothing to do

    lab.archive_file("alice.run1.parquet", b"second version, longer")
    lab.push()
    lab.verify()
    assert shown.read_bytes() == b"second version, longer"
    assert [p.name for p in shown.parent.iterdir()] == ["alice.run1.parquet"]  # no hidden leftovers


def test_the_push_hashes_a_file_once_per_version(lab):
    lab.archive_file("alice.run1.parquet", b"x" * 1000)
    lab.push()
    hashed = (lab.home / "archive.hashed").read_text()
    sums = lab.home / "outbox/SHA256SUMS"
    before = sums.stat().st_mtime_ns
    lab.push()
    assert (lab.home / "archive.hashed").read_text() == hashed
    assert sums.stat().st_mtime_ns == before  # unchanged: not sent again


def test_a_copy_that_is_not_its_line_is_never_shown_and_sent_again_a_bounded_number_of_times(lab):
    lab.archive_file("alice.run1.parquet", b"the real content")
    lab.push()
    incoming = lab.incoming / "trainbox"
    listed = incoming / "SHA256SUMS"
    for attempt in (1, 2, 3):
        listed.chmod(0o644)
        listed.write_text(f"{'0' * 64}  alice.run1.parquet\n")
        said = lab.verify()
        assert f"(try {attempt} of 3;" in said, said
        assert not (lab.shown / "trainbox/alice.run1.parquet").exists()
        assert not (incoming / "alice.run1.parquet").exists()  # so that the next push sends it
        lab.push()
        assert (incoming / "alice.run1.parquet").exists()
    listed.chmod(0o644)
    listed.write_text(f"{'0' * 64}  alice.run1.parquet\n")
    assert "still not its SHA256SUMS line after 3 tries" in lab.verify()
    assert lab.verify() == ""  # reported once
    assert (incoming / "alice.run1.parquet").exists()  # left there, never shown
    assert not (lab.shown / "trainbox/alice.run1.parquet").exists()


def test_lines_that_are_not_a_run_ids_file_are_ignored(lab):
    incoming = lab.incoming / "trainbox"
    for name in ("../escape.parquet", ".hidden.parquet", "notes.txt"):
        path = incoming / name
        path.write_bytes(b"planted")
    digest = hashlib.sha256(b"planted").hexdigest()
    (incoming / "SHA256SUMS").write_text(
        "".join(f"{digest}  {name}\n" for name in ("../escape.parquet", ".hidden.parquet", "notes.txt"))
    )
    assert lab.verify() == ""
    assert list((lab.shown / "trainbox").iterdir()) == []
    assert not (lab.shown / "escape.parquet").exists()


def test_the_receiving_module_takes_only_archive_files_and_their_list(lab):
    (lab.archive / "alice.run1.parquet").write_bytes(b"ok")
    (lab.root / "bin/probe").write_text("x")
    env = {**os.environ, "PATH": f"{lab.root}/bin:{os.environ['PATH']}"}
    sent = subprocess.run(
        ["rsync", "-t", "-e", "ssh", str(lab.root / "bin/probe"), "labstats-in-1@hub::archive/"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert sent.returncode != 0 or not (lab.incoming / "trainbox/probe").exists()
    assert not (lab.incoming / "trainbox/probe").exists()
    lab.push()
    assert (lab.incoming / "trainbox/alice.run1.parquet").read_bytes() == b"ok"
    assert oct((lab.incoming / "trainbox/alice.run1.parquet").stat().st_mode & 0o777) == "0o444"


def test_a_list_replaced_during_the_check_judges_no_file_by_its_old_line(lab):
    """A push renames a new SHA256SUMS into place, then the file it lists: a check that read
    the old list must not judge the new file by its old line (before, it was removed as
    damaged and a try counted); the box's check starts over with the new list."""
    lab.archive_file("alice.run1.parquet", b"first version")
    lab.push()
    incoming = lab.incoming / "trainbox"
    second = hashlib.sha256(b"second version").hexdigest()
    (lab.root / "second").write_bytes(b"second version")
    (lab.root / "second.sums").write_text(f"{second}  alice.run1.parquet\n")
    # The check's first hard link runs once the old list was read: the push's two renames
    # happen just then, as rsync makes them (a new file under a temporary name, renamed).
    hooks = lab.root / "hooks"
    hooks.mkdir()
    ln = hooks / "ln"
    ln.write_text(
        f"#!/bin/sh\nroot={lab.root} in={incoming}\n"
        'if [ ! -e "$root/pushed" ]; then\n'
        '  touch "$root/pushed"\n'
        '  cp "$root/second.sums" "$in/.SHA256SUMS.tmp" && mv -f "$in/.SHA256SUMS.tmp" "$in/SHA256SUMS"\n'
        '  cp "$root/second" "$in/.alice.tmp" && mv -f "$in/.alice.tmp" "$in/alice.run1.parquet"\n'
        "fi\n"
        'PATH=${PATH#*:} exec ln "$@"\n'
    )
    ln.chmod(0o755)
    said = lab.verify(path_first=hooks)
    assert (lab.root / "pushed").exists()  # the push came in the middle of the check
    assert "not its SHA256SUMS line" not in said, said
    assert "trainbox/SHA256SUMS was replaced during its check: checked again" in said
    assert "arrived: trainbox/alice.run1.parquet" in said
    assert (lab.shown / "trainbox/alice.run1.parquet").read_bytes() == b"second version"
    assert not (lab.state / "archive-tries/trainbox/alice.run1.parquet.tries").exists()  # no try counted


def put_artifact(store: Path, content: bytes) -> Path:
    """Stored as the artifact store does: named by its SHA-256, in a folder of its first two."""
    digest = hashlib.sha256(content).hexdigest()
    path = store / digest[:2] / digest
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def test_the_push_sends_the_sealed_files_listed_before_it_starts_and_nothing_else(lab):
    """Before, the push listed the unsealed files to leave out and sent the rest of the store:
    a file that appeared during the push (a planted one, half written under its final name)
    was on no list and went. Now only the sealed files listed before the push leave."""
    copies = lab.root / "web/artifacts/trainbox"
    sealed = put_artifact(lab.store, b"a sealed file")
    unsealed = None
    if os.geteuid() == 0:  # a file of a training user: not sealed yet
        unsealed = put_artifact(lab.store, b"a file its writer still owns")
        os.chown(unsealed, 65534, 65534)
    late = hashlib.sha256(b"whole content").hexdigest()
    hook = lab.root / "bin/on-connect"
    hook.write_text(
        f"#!/bin/sh\nmkdir -p {lab.store}/{late[:2]}\nprintf half >{lab.store}/{late[:2]}/{late}\n"
    )
    hook.chmod(0o755)
    lab.push()
    assert not hook.exists()  # the file appeared once the push had begun
    assert (copies / sealed.relative_to(lab.store)).read_bytes() == b"a sealed file"
    assert not (copies / late[:2] / late).exists()
    if unsealed is not None:
        assert not (copies / unsealed.relative_to(lab.store)).exists()


def test_no_file_over_the_receiving_sides_cap_arrives_whatever_the_push_asks(lab):
    """rsync's daemon has no size cap of its own: a push that asked for none (or a larger one)
    could fill the box's quota with one file. Now a push must ask for at most the receiving
    side's cap per file (10 MiB here), else it is refused whole; the receiver skips a larger
    file."""
    big = lab.root / "big.parquet"
    big.write_bytes(b"x" * (11 << 20))
    small = lab.root / "small.parquet"
    small.write_bytes(b"small")
    env = {**os.environ, "PATH": f"{lab.root}/bin:{os.environ['PATH']}"}
    incoming = lab.incoming / "trainbox"

    def send(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["rsync", "-t", *options, "-e", "ssh", str(big), str(small), "labstats-in-1@hub::archive/"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip

    for options in ((), ("--max-size=11m",), ("--max-size=1m", "-M--max-size=100m")):
        sent = send(*options)
        assert sent.returncode != 0, options
        assert "must ask for --max-size of at most 10 MiB" in sent.stderr + sent.stdout, options
        assert sorted(p.name for p in incoming.iterdir()) == [], options
    sent = send("--max-size=10m")
    assert sent.returncode == 0, sent.stderr
    assert sorted(p.name for p in incoming.iterdir()) == ["small.parquet"]  # the big one stays
    lab.archive_file("alice.run1.parquet", b"ok")
    lab.push()  # the push asks for its own cap (10 MiB here): taken
    assert (incoming / "alice.run1.parquet").read_bytes() == b"ok"


def test_a_damaged_copy_is_set_aside_by_a_rename(lab):
    """The damaged copies' folder was in the check's state, a mount of its own under its unit:
    setting a copy aside copied it (twice the disk for a moment, and a half copy if the check
    stopped). Now it is beside the copies, in the same tree: the move keeps the file's inode."""
    content = b"what the training box sent"
    digest = hashlib.sha256(content).hexdigest()
    copy = lab.root / "web/artifacts/trainbox" / digest[:2] / digest
    copy.parent.mkdir()
    copy.write_bytes(b"damaged on the way")
    inode = copy.stat().st_ino
    said = lab.verify()
    assert f"damaged copy of trainbox/{digest} moved aside (try 1 of 3;" in said, said
    assert not copy.exists()
    (aside,) = (p for p in (lab.root / "web").rglob(digest) if p != copy)
    assert aside.stat().st_ino == inode
    assert aside.read_bytes() == b"damaged on the way"
    assert aside.parent == lab.root / "web/artifacts/.damaged/trainbox"
    assert (aside.parent / f"{digest}.tries").read_text() == "1\n"
