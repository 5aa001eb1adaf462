"""The box agent (labstats.ops.agent) against a training user's hostile run records: a run's
record is its owner's to write (status, host, pid, heartbeat), so it may name a process that
is not its own. Real redis-server, real processes."""

from __future__ import annotations

import getpass
import socket
import subprocess
import sys
import time

import pytest

from labstats.format.keys import Keys
from labstats.ops import agent

HOST = socket.gethostname()
ME = getpass.getuser()
OTHER = "nobody" if ME != "nobody" else "daemon"  # an account on this box that is not mine
KEYS = Keys("ls")


@pytest.fixture
def my_process():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc
    proc.stdin.close()
    proc.wait(10)


def forge_running(client, run_id: str, pid: int) -> None:
    """A running record naming ``pid``, listed in its owner's index, as its owner may write it."""
    owner, now = run_id.split(".")[0], time.time()
    client.hset(KEYS.run(run_id), mapping={"status": "running", "host": HOST, "pid": pid,
                                           "started": now, "heartbeat": now})  # fmt: skip
    client.sadd(KEYS.owners, owner)
    client.sadd(KEYS.owner_status(owner, "running"), run_id)


def test_a_run_of_an_account_here_claims_only_that_accounts_processes(redis_server, my_process):
    client = redis_server.client()
    forge_running(client, f"{ME}.20261205-100000-aaaaaa", my_process.pid)  # its own: kept
    forge_running(client, f"{OTHER}.20261205-100000-bbbbbb", my_process.pid)  # mine, not theirs
    forge_running(client, f"{OTHER}.20261205-100000-cccccc", 1)  # init: every GPU process's parent
    found = agent.running_on_box(client, KEYS, HOST, time.time())
    assert found == {my_process.pid: f"{ME}.20261205-100000-aaaaaa"}
