"""Backups on the web box: restic takes the replicas' snapshots on a timer; the restore
drill restores the latest backup into a scratch folder and finds it equal to the live data."""

import json
import re

from conftest import log_run_on_trainbox, redis_cli, wait_until

testinfra_hosts = ["webbox"]


def test_backup_timers_are_on_and_the_secrets_are_root_only(host):
    for timer in ("labstats-backup.timer", "labstats-backup-check.timer"):
        assert host.service(timer).is_enabled
        assert host.service(timer).is_running
    with host.sudo():
        for path in ("/etc/labstats/backup/restic.password", "/etc/labstats/backup/env"):
            secret = host.file(path)
            assert (secret.mode, secret.user) == (0o600, "root"), path
        assert host.file("/etc/labstats/backup").mode == 0o700


def test_a_backup_restores_equal_to_the_live_data(host):
    _, run_id = log_run_on_trainbox("backup-check", steps=2000)
    replicated = lambda: redis_cli(host, "viewer", "hget", f"ls:run:{run_id}", "status").stdout.strip()  # noqa: E731
    assert wait_until(lambda: replicated() == "finished", timeout=30)
    with host.sudo():
        backup = host.run("systemctl start labstats-backup.service")
        assert backup.rc == 0, host.run("journalctl -u labstats-backup -n 30 --no-pager").stdout
        listing = "set -a; . /etc/labstats/backup/env; restic snapshots --json --tag labstats"
        snapshots = json.loads(host.check_output("bash -c %s", listing))
        assert snapshots
        drill = host.run("/usr/local/sbin/labstats-restore-drill")
    print(drill.stdout)
    assert drill.rc == 0, drill.stdout + drill.stderr
    assert "restore drill: EQUAL" in drill.stdout
    checked = re.search(r"checked (\d+) runs \((\d+) finished", drill.stdout)
    assert int(checked.group(1)) >= 1  # a drill that compared nothing proves nothing
    assert int(checked.group(2)) >= 1


def test_the_drill_notices_a_difference(host):
    # Change one finished run on the live replica's side of the comparison: a run the backup
    # holds is renamed away (through the ops user, on this replica only), then put back.
    index = "ls:owner:researcher:runs"  # the training account's runs (their ids name it)
    with host.sudo():
        ids = redis_cli(host, "ops", "zrange", index, "0", "0").stdout.split()
        assert ids
        redis_cli(host, "ops", "config", "set", "replica-read-only", "no")
        try:
            score = redis_cli(host, "ops", "zscore", index, ids[0]).stdout.strip()
            redis_cli(host, "ops", "zrem", index, ids[0])
            drill = host.run("/usr/local/sbin/labstats-restore-drill")
            redis_cli(host, "ops", "zadd", index, score, ids[0])
        finally:
            redis_cli(host, "ops", "config", "set", "replica-read-only", "yes")
    assert drill.rc == 1
    assert f"DIFFERS: run {ids[0]}: in the backup, not in the live store" in drill.stdout


def test_the_repository_checks_clean(host):
    with host.sudo():
        check = host.run("systemctl start labstats-backup-check.service")
        assert check.rc == 0, host.run("journalctl -u labstats-backup-check -n 30 --no-pager").stdout
