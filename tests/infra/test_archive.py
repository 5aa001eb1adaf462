"""The archive tier on the real boxes: an ended run moved to Parquet on the training box,
its points gone from Redis (master and replica), the file pushed to the web box over the
tunnel (the one way files leave a training box) and shown there only once its SHA-256 is
the one the training box sent, a re-archived run's file replacing the old one, and the run
read the same from the training user's reader, the viewer's API and Jupyter's reader. The
web box holds no key that any training box accepts: nothing on it can read an archive."""

import json
import secrets
import shlex

import pytest
from conftest import (
    box,
    hosts_in,
    https_get,
    log_run_on_trainbox,
    redis_cli,
    tunnel_address,
    wait_until,
    web_token,
)

testinfra_hosts = ["trainbox"]

READ = """
import sys, labstats
run = labstats.connect().run(sys.argv[1])
s = run.series("loss")
print(run.archived, len(s), s.values[10:13].tolist())
"""
ARCHIVE = "/var/lib/labstats/archive"
SHOWN = "/var/lib/labstats/archive/trainbox"  # on the web box: what the viewer and Jupyter read
INCOMING = "/var/lib/labstats/incoming/trainbox"  # on the web box: as pushed, before the check
TRIES = "/var/lib/labstats-file-verify/archive-tries/trainbox"
PUSH_SSH = (
    "ssh -i /var/lib/labstats-push/.ssh/id_ed25519 -o BatchMode=yes -o ConnectTimeout=10 "
    "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/var/lib/labstats-push/.ssh/known_hosts"
)


def point_keys(host, run_id: str, port: int = 6379) -> int:
    out = redis_cli(host, "ops", "--scan", "--pattern", f"ls:run:{run_id}:s:*", port=port).stdout
    return len(out.split())


@pytest.fixture(scope="module")
def archived_run(host):
    name, run_id = log_run_on_trainbox("archive-check", steps=300)
    web = box("webbox")
    assert wait_until(lambda: point_keys(web, run_id) > 0, timeout=30)
    with host.sudo():
        result = host.run("labstats-archiver archive %s", name)
    assert result.rc == 0, result.stderr
    assert f"archived  {name}  " in result.stdout
    return name, run_id


def test_a_training_account_asking_to_archive_is_told_who_can(host):
    """`labstats archive RUN`, as the README lists it, typed by the training account in its
    shell: one line saying who archives, no traceback, nothing archived."""
    name, run_id = log_run_on_trainbox("archive-asked", steps=20)
    with host.sudo("researcher"):
        asked = host.run("cd ~ && /opt/labstats/venv/bin/labstats archive %s", name)
    assert asked.rc == 1
    assert "Traceback" not in asked.stderr
    assert asked.stderr.strip().splitlines()[-1] == (  # (ssh may say a line of its own first)
        "labstats: cannot write the archive folder /var/lib/labstats/archive; on a lab's training "
        "box the archive account does it: sudo labstats-archiver archive RUN..."
    )
    assert redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "archived").stdout.strip() == ""


def test_the_timer_and_the_archive_folder_are_in_place(host):
    timer = host.service("labstats-archive.timer")
    assert timer.is_enabled
    assert timer.is_running
    folder = host.file("/var/lib/labstats/archive")
    assert folder.user == "labstats-archive"
    assert folder.mode == 0o755
    with host.sudo():
        assert host.file("/etc/labstats/archiver.toml").mode == 0o600
    assert host.run("cat /etc/labstats/archiver.toml").rc != 0


def test_archiving_frees_master_and_replica_and_the_trainer_reads_the_same(host, archived_run):
    name, run_id = archived_run
    assert point_keys(host, run_id) == 0
    assert wait_until(lambda: point_keys(box("webbox"), run_id) == 0, timeout=30)
    assert (
        redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "archived").stdout.strip()
        == f"{run_id}.parquet"
    )
    with host.sudo("researcher"):
        out = host.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s %s", READ, name)
    assert out.split()[:2] == ["True", "300"]
    assert json.loads(out.split(" ", 2)[2]) == [1 / 11, 1 / 12, 1 / 13]


def web_clock() -> str:
    """Now on the web box, for journalctl --since."""
    return box("webbox").check_output("date +@%s")


def push_and_check(host, since: str) -> str:
    """One push from the training box and one check on the web box, now (their timers do
    the same every few seconds); what the checks said since then."""
    with host.sudo():
        host.check_output("systemctl start labstats-file-push.service")
    return check_on_the_web_box(since)


def idle(host, unit: str) -> None:
    """Wait while a run of ``unit`` (a oneshot its timer started) is still going: starting it
    then would only wait for that run, which may have begun before what the test just did."""
    running = f'[ "$(systemctl show -p ActiveState --value {unit})" = activating ]'
    host.check_output(f"for _ in $(seq 600); do {running} || exit 0; sleep 0.1; done; false")


def check_on_the_web_box(since: str) -> str:
    web = box("webbox")
    with web.sudo():
        idle(web, "labstats-file-verify.service")
        web.check_output("systemctl start labstats-file-verify.service")
        return web.check_output("journalctl -u labstats-file-verify --since %s -o cat", since)


def test_the_push_brings_the_file_to_the_web_box_and_the_viewer_and_jupyter_read_it(host, archived_run):
    name, run_id = archived_run
    web = box("webbox")
    with host.sudo():
        original = host.file(f"{ARCHIVE}/{run_id}.parquet").sha256sum
    push_and_check(host, web_clock())
    with web.sudo():
        copy = web.file(f"{SHOWN}/{run_id}.parquet")
        assert copy.exists
        assert copy.sha256sum == original
        assert (copy.user, copy.mode) == ("root", 0o444)  # the receiving account can no longer change it
    status, _, body = https_get(
        f"/api/runs/trainbox/{run_id}/series/loss?start=10&stop=12", token=web_token()
    )
    assert status == 200, body
    assert json.loads(body)["values"] == [1 / 11, 1 / 12, 1 / 13]
    with web.sudo("jupyter"):
        out = web.check_output(
            "cd /var/lib/labstats-jupyter && HOME=/var/lib/labstats-jupyter "
            "/opt/labstats-jupyter/venv/bin/python -c %s %s",
            READ,
            name,
        )
    assert out.split()[:2] == ["True", "300"]


def test_an_archive_file_is_shown_only_when_it_is_what_the_training_box_listed(host, archived_run):
    """Pushed by hand with the box's own key: a file whose SHA-256 is not its line in
    SHA256SUMS is never shown (removed, sent again by the next push, a bounded number of
    times); once it matches, it is shown, root's and read-only."""
    web = box("webbox")
    hub = tunnel_address(web)
    forged = f"forged-{secrets.token_hex(4)}.parquet"
    work = "/var/lib/labstats-push/forge"
    module = f"labstats-in-1@{hub}::archive/"
    since = web_clock()
    with host.sudo():  # its own push would send the box's SHA256SUMS in between
        host.check_output("systemctl stop labstats-file-push.timer")
        idle(host, "labstats-file-push.service")  # nor may a push the timer started be under way
    with host.sudo("labstats-push"):
        host.check_output(f"rm -rf {work} && mkdir -p {work} && head -c 2000 /dev/urandom >{work}/{forged}")
        real = host.check_output(f"sha256sum <{work}/{forged}").split()[0]

    def send(listed_sum: str) -> None:
        with host.sudo("labstats-push"):
            host.check_output(f"echo '{listed_sum}  {forged}' >{work}/SHA256SUMS")
            # By checksum: the forged and the real list have one size and may have one second.
            for part in ("SHA256SUMS", forged):
                host.check_output(
                    f"rsync -t --checksum --max-size=10240m -e {shlex.quote(PUSH_SSH)} {work}/{part} {module}"
                )

    try:
        send("0" * 64)
        said = check_on_the_web_box(since)
        assert f"copy of trainbox/{forged} is not its SHA256SUMS line: removed, not shown (try 1 of 3" in said
        with web.sudo():
            assert not web.file(f"{SHOWN}/{forged}").exists
            assert not web.file(f"{INCOMING}/{forged}").exists  # so that the next push sends it again
        send(real)
        said = check_on_the_web_box(since)
        assert f"arrived: trainbox/{forged}" in said
        with web.sudo():
            shown = web.file(f"{SHOWN}/{forged}")
            assert shown.sha256sum == real
            assert (shown.user, shown.mode) == ("root", 0o444)
            assert not web.file(f"{TRIES}/{forged}.tries").exists  # a good copy forgets the tries
    finally:
        with web.sudo():
            web.run(f"rm -f {SHOWN}/{forged} {INCOMING}/{forged} {TRIES}/{forged}.tries")
        with host.sudo():
            host.run(f"rm -rf {work}")
            host.check_output("systemctl start labstats-file-push.timer")
        push_and_check(host, since)  # the box's own SHA256SUMS again
    with web.sudo():
        listed = web.check_output(f"cat {INCOMING}/SHA256SUMS")
    assert forged not in listed
    assert f"  {archived_run[1]}.parquet" in listed


def private_keys_on_the_web_box() -> dict[str, str]:
    """Every private key on the web box that ssh-keygen can read (the host keys among them,
    and keys a package ships as test data: an attacker can copy any file), by file, as the
    public key blob it derives."""
    web = box("webbox")
    with web.sudo():
        out = web.check_output(
            "find /root /home /etc /var /opt /srv /usr/local /tmp -xdev -type f -size -64k "
            "-exec grep -l -s -e '-----BEGIN .*PRIVATE KEY-----' {} + | while read -r path; do "
            'install -m 0600 "$path" /tmp/probe.key && '
            'echo "$path $(ssh-keygen -y -P "" -f /tmp/probe.key 2>/dev/null | cut -d" " -f2)"; '
            "done; rm -f /tmp/probe.key"
        )
    return {path: blob for path, _, blob in (line.partition(" ") for line in out.splitlines()) if blob}


def accepted_keys(trainer) -> set[str]:
    """Every public key blob a training box's sshd accepts, for any account: the files it
    reads (checked: only these two) of every account."""
    with trainer.sudo():
        sshd = trainer.check_output("sshd -T")
        assert "authorizedkeysfile /etc/ssh/authorized_keys/%u .ssh/authorized_keys" in sshd
        assert "authorizedkeyscommand none" in sshd
        lines = trainer.check_output(
            "getent passwd | while IFS=: read -r user _ _ _ _ home _; do "
            'cat "/etc/ssh/authorized_keys/$user" "$home/.ssh/authorized_keys" 2>/dev/null; done; true'
        )
    blobs = set()
    for line in lines.splitlines():
        fields = line.split()
        blobs |= {f for f in fields if f.startswith("AAAA")}
    return blobs


@pytest.mark.parametrize("trainer_name", hosts_in("training"))
def test_no_key_on_the_web_box_is_accepted_by_a_training_box(trainer_name):
    keys = private_keys_on_the_web_box()
    assert "/etc/ssh/ssh_host_ed25519_key" in keys  # the search finds keys (it could fail)
    accepted = accepted_keys(box(trainer_name))
    assert accepted  # the admin's key at least: the search finds accepted keys too
    assert not {path for path, blob in keys.items() if blob in accepted}
    web = box("webbox")
    assert not web.user("labstats-sync").exists  # the pull account of earlier versions is gone
    with box(trainer_name).sudo():
        assert not box(trainer_name).file("/var/lib/labstats-archive/.ssh").exists
        assert box(trainer_name).user("labstats-archive").shell == "/usr/sbin/nologin"


@pytest.mark.parametrize("trainer_name", hosts_in("training"))
def test_root_on_the_web_box_cannot_read_a_training_boxs_archive(trainer_name):
    """An attacker with root on the web box reads the archive over the tunnel with rsync, then
    tries every private key there (a copy of each, owner-only, as ssh wants it), and none,
    as the archive account, root and the push account, over the tunnel and over the public
    address; and an rsync daemon. Each is refused. (OpenSSH 9.8 and later, Debian 13, stops
    answering a source after a few failures: later tries may be refused that way; that no
    key fits at all is what the test above proves.)"""
    web, trainer = box("webbox"), box(trainer_name)
    addresses = " ".join([tunnel_address(trainer), trainer.ansible.get_variables()["ansible_host"]])
    keys = " ".join(private_keys_on_the_web_box())
    options = (
        "-o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o ConnectTimeout=10"
    )
    script = f"""
        tried=0
        for address in {addresses}; do
          for user in labstats-archive root labstats-push; do
            ssh -n {options} "$user@$address" true 2>/dev/null && echo "ACCEPTED: none, $user@$address"
            for key in {keys}; do
              install -m 0600 "$key" /tmp/try.key
              ssh -n {options} -i /tmp/try.key "$user@$address" true 2>/dev/null \\
                && echo "ACCEPTED: $key, $user@$address"
              tried=$((tried + 1))
            done
          done
          rsync --contimeout=5 "rsync://$address/" >/dev/null 2>&1 && echo "ACCEPTED: rsync at $address"
        done
        rm -f /tmp/try.key
        echo "tried $tried"
    """
    with web.sudo():
        tunnel = addresses.split()[0]
        stolen = f"rsync -e {shlex.quote('ssh ' + options)} labstats-archive@{tunnel}:{ARCHIVE}/ /tmp/x"
        archive = web.run(f"{stolen}; echo status=$?")  # first: before any failure counts against us
        out = web.check_output("bash -c %s", script)
    assert "status=0" not in archive.stdout
    assert "Permission denied (publickey" in archive.stderr
    assert out.strip().endswith(f"tried {2 * 3 * len(keys.split())}"), out
    assert "ACCEPTED" not in out, out


def test_unarchive_puts_the_points_back(host, archived_run):
    name, run_id = archived_run
    with host.sudo():
        result = host.run("labstats-archiver unarchive %s", name)
    assert result.rc == 0, result.stderr
    assert f"restored  {name}  " in result.stdout
    assert point_keys(host, run_id) > 0
    with host.sudo("researcher"):
        out = host.check_output("cd ~ && /opt/labstats/venv/bin/python -c %s %s", READ, name)
    assert out.split()[:2] == ["False", "300"]


def test_a_re_archived_run_replaces_its_file_on_the_web_box(host, archived_run):
    """After an unarchive (the test before) the run is archived again: the training box's
    new file replaces the web box's copy in one step, checked like the first."""
    name, run_id = archived_run
    web = box("webbox")
    since = web_clock()
    with web.sudo():
        before = web.check_output("stat -c %%i:%%Y %s", f"{SHOWN}/{run_id}.parquet")
    with host.sudo():
        result = host.run("labstats-archiver archive %s", name)
        assert result.rc == 0, result.stderr
        now = host.file(f"{ARCHIVE}/{run_id}.parquet")
        original, mtime = now.sha256sum, now.mtime
    said = push_and_check(host, since)  # (or the timers did it already: the journal has it)
    assert f"arrived: trainbox/{run_id}.parquet" in said
    with web.sudo():
        copy = web.file(f"{SHOWN}/{run_id}.parquet")
        assert copy.sha256sum == original
        assert copy.mtime == mtime
        assert web.check_output("stat -c %%i:%%Y %s", copy.path) != before
    status, _, body = https_get(
        f"/api/runs/trainbox/{run_id}/series/loss?start=10&stop=12", token=web_token()
    )
    assert status == 200, body
    assert json.loads(body)["values"] == [1 / 11, 1 / 12, 1 / 13]


def test_a_trashed_run_is_purged_by_root_only_and_leaves_every_box(host):
    _, run_id = log_run_on_trainbox("purge-check", steps=50)
    venv = "/opt/labstats/venv/bin/labstats"
    with host.sudo("researcher"):
        assert host.run(f"{venv} trash %s", run_id).rc == 0  # its owner puts it in the trash
        refused = host.run(f"{venv} purge %s", run_id)  # but may not purge it
    assert refused.rc != 0
    assert "labstats-purge" in refused.stderr
    assert "Traceback" not in refused.stderr
    with host.sudo():
        assert host.service("labstats-purge.timer").is_enabled
        done = host.run("labstats-purge %s", run_id)
    assert done.rc == 0, done.stderr
    assert f"purged    {run_id}" in done.stdout
    assert redis_cli(host, "ops", "exists", f"ls:run:{run_id}").stdout.strip() == "0"
    web = box("webbox")
    assert wait_until(lambda: redis_cli(web, "viewer", "exists", f"ls:run:{run_id}").stdout.strip() == "0")
    assert redis_cli(host, "ops", "exists", f"ls:ann:{run_id}").stdout.strip() == "0"
    # The web box's copies go with its daily prune (the push never deletes): its job, at once.
    with web.sudo():
        assert web.service("labstats-copies-prune.timer").is_enabled
        pruned = web.run(
            "LABSTATS_CONFIG=/etc/labstats/viewer.toml /opt/labstats-viewer/venv/bin/labstats prune-copies"
            " --min-age-hours 0"
        )
    assert pruned.rc == 0, pruned.stderr
    assert "trainbox: " in pruned.stdout
