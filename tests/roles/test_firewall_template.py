"""Render the firewall ruleset template and check its lines, no host needed (nft --check
itself runs on the boxes through the role's `validate:`)."""

import shutil
import subprocess
from pathlib import Path

import jinja2

ROLE = Path(__file__).resolve().parents[2] / "roles" / "firewall"


def render(rules, **overrides):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True)
    env.filters["comment"] = lambda text: f"#\n# {text}\n#"
    env.tests["match"] = lambda value, pattern: bool(__import__("re").match(pattern, value))
    context = {
        "ansible_managed": "Ansible managed",
        "firewall_table": "labstats",
        "firewall_ssh_port": 22,
        "firewall_allow_icmp": True,
        "_firewall_rules": rules,
        **overrides,
    }
    return env.get_template("labstats.nft.j2").render(context)


def rule_lines(text):
    return [line.strip() for line in text.splitlines() if "dport" in line]


def test_input_policy_is_drop_and_only_our_table_is_replaced():
    text = render([])
    assert "type filter hook input priority filter; policy drop;" in text
    assert "flush ruleset" not in text
    assert "table inet labstats\ndelete table inet labstats" in text


def test_ssh_is_always_open_and_not_duplicated():
    rules = [{"name": "ssh", "proto": "tcp", "port": 22}]
    assert rule_lines(render(rules)) == ['tcp dport 22 accept comment "ssh"']
    assert rule_lines(render([], firewall_ssh_port=2222)) == ['tcp dport 2222 accept comment "ssh"']


def test_service_rules_with_interface_and_source():
    rules = [
        {"name": "wireguard", "proto": "udp", "port": 51820},
        {"name": "redis-replication", "proto": "tcp", "port": 6379, "iifname": "wg0", "saddr": "10.77.0.1"},
    ]
    assert rule_lines(render(rules))[1:] == [
        'udp dport 51820 accept comment "wireguard"',
        'iifname "wg0" ip saddr 10.77.0.1 tcp dport 6379 accept comment "redis-replication"',
    ]


def test_icmp_can_be_turned_off():
    assert "icmp" in render([])
    assert "icmp" not in render([], firewall_allow_icmp=False)


def test_rendered_ruleset_passes_nft_check(tmp_path):
    assert shutil.which("nft"), "nft missing: scripts/host-setup.sh installs nftables"
    path = tmp_path / "rules.nft"
    rules = [{"name": "web", "proto": "tcp", "port": 443}]
    path.write_text(render(rules, firewall_drop_forward=True, firewall_tunnel_interfaces=["wg0"]))
    subprocess.run(["nft", "--check", "--file", str(path)], check=True)


def forward_chain(text):
    chain = text.split("chain forward {", 1)[1].split("}", 1)[0]
    return [line.strip() for line in chain.strip().splitlines()]


def test_only_forwarding_through_the_tunnel_is_dropped():
    # Docker's, Podman's or libvirt's forwarding is theirs to decide: a policy drop here cut
    # every container off the network, whatever their own rules accepted.
    text = render([], firewall_drop_forward=True, firewall_tunnel_interfaces=["wg0"])
    assert forward_chain(text) == [
        "type filter hook forward priority filter; policy accept;",
        'oifname "wg0" counter drop comment "routed into the tunnel"',
        'iifname "wg0" counter drop comment "routed out of the tunnel"',
    ]
    assert "chain forward" not in render([], firewall_drop_forward=False, firewall_tunnel_interfaces=["wg0"])
