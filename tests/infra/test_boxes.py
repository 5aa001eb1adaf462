"""Every provisioned box (training and web): SSH, admin user, firewall, listening sockets."""

from conftest import EXPOSED_TCP, EXPOSED_UDP, assert_service_running, group_of, non_loopback_listeners

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


def test_only_allowlisted_ports_listen_beyond_loopback(host):
    group = group_of(host)
    allowed = {("tcp", p) for p in EXPOSED_TCP[group]} | {("udp", p) for p in EXPOSED_UDP[group]}
    assert non_loopback_listeners(host) <= allowed
