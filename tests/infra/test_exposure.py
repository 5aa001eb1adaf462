"""Seen from outside: the outsider scans every TCP port of each box, and the open set must
equal the allowlist exactly (no more, and no fewer: a scan that sees nothing proves nothing)."""

import re

import pytest
from conftest import EXPOSED_TCP, box, hosts_in

testinfra_hosts = ["outsiders"]

TARGETS = {name: group for group in ("training", "web") for name in hosts_in(group)}


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


def test_wireguard_port_answers_no_rejection_on_the_web_box(host):
    # WireGuard stays silent to strangers, so UDP can only show "open|filtered" from here;
    # "closed" would mean nothing listens. Which UDP ports the firewall opens is checked on
    # the boxes themselves (test_boxes.py).
    address = box("webbox").ansible.get_variables()["ansible_host"]
    with host.sudo():
        out = host.check_output(f"nmap -n -Pn -sU -p 51820 --max-retries 2 -oG - {address}")
    assert "51820/open|filtered/udp" in out


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_redis_is_unreachable_from_outside(host, name):
    # Only the boxes' own addresses on the scenario network are probed (never an address
    # outside the project's containers); the tunnel subnet is not routed to the outsider.
    address = box(name).ansible.get_variables()["ansible_host"]
    assert host.run(f"timeout 5 bash -c 'echo > /dev/tcp/{address}/22'").rc == 0  # the probe works
    probe = host.run(f"timeout 5 bash -c 'echo PING > /dev/tcp/{address}/6379'")
    assert probe.rc != 0, f"Redis answered the outsider on {address}"


def test_web_box_speaks_only_tls_1_2_and_1_3(host):
    address = box("webbox").ansible.get_variables()["ansible_host"]
    with host.sudo():
        out = host.check_output(f"nmap -n -Pn -p 443 --script ssl-enum-ciphers {address}")
    offered = set(re.findall(r"\|\s+(TLSv1\.\d|SSLv\d)", out))
    assert offered == {"TLSv1.2", "TLSv1.3"}, out


def test_the_web_box_routes_nothing_from_its_lan_into_the_tunnel(host):
    """The outsider routes the tunnel's subnet through the web box and dials the master's
    Redis: the web box's forward chain drops it (its counters prove the packets got there)."""
    web, train = box("webbox"), box("trainbox")
    with train.sudo():
        target = train.check_output("ip -4 -o addr show dev wg0").split(" inet ", 1)[1].split("/", 1)[0]
    subnet = ".".join(target.split(".")[:3]) + ".0/24"
    gateway = web.ansible.get_variables()["ansible_host"]

    def dropped() -> int:
        with web.sudo():
            out = web.check_output("nft list chain inet labstats forward")
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))

    before = dropped()
    with host.sudo():
        host.check_output(f"ip route replace {subnet} via {gateway}")
        try:
            probe = host.run(f"timeout 5 bash -c 'echo PING > /dev/tcp/{target}/6379'")
        finally:
            host.run(f"ip route del {subnet}")
    assert probe.rc != 0, "the master's Redis answered through the web box"
    assert dropped() > before  # the SYNs reached the web box and were dropped there
