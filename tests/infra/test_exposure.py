"""Seen from outside: the outsider scans every TCP port of each box, and the open set must
equal the allowlist exactly (no more, and no fewer: a scan that sees nothing proves nothing)."""

import re

import pytest
from conftest import EXPOSED_TCP, box

testinfra_hosts = ["outsiders"]

TARGETS = {"trainbox": "training", "webbox": "web"}


def open_tcp_ports(host, address: str) -> set[int]:
    # SYN scan of all ports, bounded in time; filtered (dropped) ports do not count as open.
    with host.sudo():
        out = host.check_output(
            f"nmap -n -Pn -sS -p 1-65535 -T4 --min-rate 4000 --max-retries 1 "
            f"--host-timeout 240s -oG - {address}"
        )
    assert "Status: Timeout" not in out, out
    return {int(port) for port in re.findall(r"(\d+)/open/tcp", out)}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_open_tcp_ports_equal_allowlist(host, name):
    address = box(name).ansible.get_variables()["ansible_host"]
    assert open_tcp_ports(host, address) == EXPOSED_TCP[TARGETS[name]]
