"""Every provisioned box (training and web): SSH, admin user, firewall, listening sockets."""

import json

from conftest import (
    ALLOWED_LISTENERS,
    EXPOSED_TCP,
    EXPOSED_UDP,
    assert_service_running,
    group_of,
    non_loopback_listeners,
    tunnel_address,
)

testinfra_hosts = ["training", "web"]


def test_sshd_runs(host):
    assert_service_running(host, "ssh")


def test_sshd_allows_keys_only_and_no_root(host):
    with host.sudo():
        effective = host.check_output("sshd -T")
    assert "passwordauthentication no" in effective
    assert "permitrootlogin no" in effective
    assert "pubkeyauthentication yes" in effective


def test_admin_user_is_not_root_and_has_sudo(host):
    admin = host.user()  # the user Ansible and testinfra log in as
    assert admin.uid != 0
    assert "sudo" in admin.groups
    assert host.run("sudo -n true").rc == 0


def test_firewall_is_loaded_with_policy_drop(host):
    assert_service_running(host, "labstats-firewall")
    with host.sudo():
        chain = host.check_output("nft list chain inet labstats input")
    assert "policy drop;" in chain


def test_firewall_leaves_docker_dns_working(host):
    # Our table must not flush others: name lookups through Docker's 127.0.0.11 still work.
    assert host.run("getent hosts deb.debian.org").rc == 0


def test_only_allowlisted_sockets_listen_beyond_loopback(host):
    allowed = ALLOWED_LISTENERS[group_of(host)]
    wg = tunnel_address(host)
    unexpected = []
    for proto, port, address, process in non_loopback_listeners(host):
        where = "wg" if address == wg else "any" if address in ("*", "0.0.0.0", "::") else address
        if (proto, port, where, process) not in allowed and (proto, None, where, process) not in allowed:
            unexpected.append((proto, port, address, process))
    assert unexpected == []


def test_firewall_opens_exactly_the_allowlist_to_everyone(host):
    # Rules that accept a port from anywhere, read from the loaded ruleset itself.
    with host.sudo():
        ruleset = json.loads(host.check_output("nft -j list chain inet labstats input"))
    open_ports = set()
    for item in ruleset["nftables"]:
        rule = item.get("rule")
        if not rule or not any("accept" in e for e in rule["expr"]):
            continue
        matches = [e["match"] for e in rule["expr"] if "match" in e]
        ports = [m for m in matches if m["left"].get("payload", {}).get("field") == "dport"]
        others = [m for m in matches if m not in ports]
        if ports and not others:  # no interface or source condition: open to the world
            open_ports.add((ports[0]["left"]["payload"]["protocol"], ports[0]["right"]))
    group = group_of(host)
    expected = {("tcp", p) for p in EXPOSED_TCP[group]} | {("udp", p) for p in EXPOSED_UDP[group]}
    assert open_ports == expected
