"""A training box that runs containers: a network namespace behind a bridge with masquerade and
a forward chain of its own, set up as Docker (or nvidia-docker) sets up a container, still
reaches the network after a converge; the tunnel stays closed to it. (A policy drop in the
kit's forward chain once cut every container off: nftables drops a packet that any base
chain drops, whatever another table accepted.)"""

import re

import pytest
from conftest import box, tunnel_address

testinfra_hosts = ["trainbox"]

NS, BRIDGE, VETH, TABLE = "labstats-ctr", "lsbr0", "lsveth0", "labstats_test_engine"
SUBNET, GATEWAY, CONTAINER = "172.31.254.0/24", "172.31.254.1", "172.31.254.2"

# Docker's own rules, in its own table: forward policy drop, its bridge's traffic accepted,
# masquerade on the way out. The kit's table must leave this decision to them.
ENGINE_RULES = f"""
table ip {TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy drop;
    iifname "{BRIDGE}" accept
    oifname "{BRIDGE}" ct state established,related accept
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {SUBNET} oifname != "{BRIDGE}" masquerade
  }}
}}
"""

SETUP = f"""set -e
ip netns add {NS}
ip link add {BRIDGE} type bridge
ip addr add {GATEWAY}/24 dev {BRIDGE}
ip link set {BRIDGE} up
ip link add {VETH} type veth peer name {VETH}c
ip link set {VETH} master {BRIDGE} up
ip link set {VETH}c netns {NS}
ip -n {NS} addr add {CONTAINER}/24 dev {VETH}c
ip -n {NS} link set {VETH}c up
ip -n {NS} link set lo up
ip -n {NS} route add default via {GATEWAY}
nft -f - <<'NFT'
{ENGINE_RULES}
NFT
"""

TEARDOWN = f"ip netns del {NS}; ip link del {BRIDGE}; ip link del {VETH}; nft delete table ip {TABLE}; true"


@pytest.fixture(scope="module")
def container(host):
    with host.sudo():
        assert host.file("/proc/sys/net/ipv4/ip_forward").content_string.strip() == "1", (
            "this box does not forward: the engine's own setting, not the kit's"
        )
        host.run(TEARDOWN)  # what an interrupted run left
        done = host.run("bash -c %s", SETUP)
        assert done.rc == 0, done.stderr
    yield
    with host.sudo():
        host.run(TEARDOWN)


def dial(host, address: str, port: int):
    with host.sudo():
        return host.run(f"ip netns exec {NS} timeout 5 bash -c 'echo > /dev/tcp/{address}/{port}'")


def tunnel_drops(host) -> int:
    with host.sudo():
        out = host.check_output("nft list chain inet labstats forward")
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def test_a_container_reaches_the_web_box_after_a_converge(host, container):
    web = box("webbox").ansible.get_variables()["ansible_host"]
    reached = dial(host, web, 443)
    assert reached.rc == 0, f"a container on the training box cannot reach {web}:443: {reached.stderr}"


def test_a_container_cannot_use_the_tunnel(host, container):
    before = tunnel_drops(host)
    hub = tunnel_address(box("webbox"))
    assert dial(host, hub, 443).rc != 0, "a container reached the web box through the tunnel"
    assert tunnel_drops(host) > before  # dropped by the kit's forward chain, counted
