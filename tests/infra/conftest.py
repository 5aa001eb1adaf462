"""Shared helpers for the testinfra suites that Molecule runs against the lab containers.

The allowlists below are the security spec (docs/security.md), written down independently
of the roles, so that a role opening an extra port makes these tests fail.
"""

import ipaddress
import os

import pytest
import testinfra

# Ports that may be reached from outside each kind of box (what the outsider's scan must see).
EXPOSED_TCP = {"training": {22}, "web": {22}}
EXPOSED_UDP = {"training": set(), "web": set()}


def inventory_file() -> str:
    try:
        return os.environ["MOLECULE_INVENTORY_FILE"]
    except KeyError:
        pytest.fail("run these tests through `molecule verify` (MOLECULE_INVENTORY_FILE unset)")


def box(name: str):
    """A testinfra host for another box of the scenario, by inventory name."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory_file()}")


def group_of(host) -> str:
    names = host.ansible.get_variables()["group_names"]
    for group in ("training", "web", "outsiders"):
        if group in names:
            return group
    pytest.fail(f"host in no known group: {names}")


def assert_service_running(host, name: str) -> None:
    """Assert a unit is running and enabled; show its journal when it is not."""
    service = host.service(name)
    if not (service.is_running and service.is_enabled):
        with host.sudo():
            journal = host.run(f"journalctl -u {name} -n 40 --no-pager").stdout
        pytest.fail(f"{name}: running={service.is_running} enabled={service.is_enabled}\n{journal}")


def non_loopback_listeners(host) -> set[tuple[str, int]]:
    """(proto, port) of every socket listening on an address other than loopback."""
    found = set()
    for spec in host.socket.get_listening_sockets():
        proto, _, rest = spec.partition("://")
        if proto not in ("tcp", "udp"):
            continue
        address, _, port = rest.rpartition(":")
        if address and ipaddress.ip_address(address).is_loopback:
            continue
        found.add((proto, int(port)))
    return found
