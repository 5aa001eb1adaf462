"""Shared helpers for the testinfra suites that Molecule runs against the lab containers.

The allowlists below are the security spec (docs/security.md), written down independently
of the roles, so that a role opening an extra port makes these tests fail.
"""

import ipaddress
import os
import shlex
import time

import pytest
import testinfra

# What an upgrade kept is checked where there was one: Molecule's default scenario, which
# deploys the previous release first and says so in the environment (molecule.yml).
collect_ignore = [] if os.environ.get("LABSTATS_UPGRADE_SCENARIO") else ["test_after_upgrade.py"]

# Ports that may be reached from outside each kind of box (what the outsider's scan must see).
EXPOSED_TCP = {"training": {22}, "web": {22, 80, 443}}
EXPOSED_UDP = {"training": set(), "web": {51820}}

# Sockets allowed to listen beyond loopback: (proto, port or None for any, where, process).
# "any" = every address; "wg" = the tunnel address only.
ALLOWED_LISTENERS = {
    "training": {
        ("tcp", 22, "any", "sshd"),
        ("tcp", 6379, "wg", "redis-server"),
        ("udp", None, "any", "wireguard-go"),  # its port is random: a spoke only dials out
    },
    "web": {
        ("tcp", 22, "any", "sshd"),
        ("udp", 51820, "any", "wireguard-go"),
        ("tcp", 80, "any", "nginx"),
        ("tcp", 443, "any", "nginx"),
        ("tcp", 9187, "wg", "nginx"),  # /metrics for Prometheus inside the tunnel
    },
}


def inventory_file() -> str:
    try:
        return os.environ["MOLECULE_INVENTORY_FILE"]
    except KeyError:
        pytest.fail("run these tests through `molecule verify` (MOLECULE_INVENTORY_FILE unset)")


def box(name: str):
    """A testinfra host for another box of the scenario, by inventory name."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory_file()}")


def hosts_in(group: str) -> list[str]:
    """The inventory's hosts of a group (training boxes: two in Molecule, one in the lab)."""
    from testinfra.utils.ansible_runner import AnsibleRunner

    return sorted(AnsibleRunner(inventory_file()).get_hosts(group))


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


def non_loopback_listeners(host) -> list[tuple[str, int, str, str]]:
    """(proto, port, address, process) of every socket listening beyond loopback."""
    found = []
    with host.sudo():
        lines = host.check_output("ss -H -tulnp").splitlines()
    for line in lines:
        fields = line.split()
        proto, local = fields[0], fields[4]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        if address not in ("*", "0.0.0.0", "::") and ipaddress.ip_address(address).is_loopback:
            continue
        process = line.split('(("', 1)[1].split('"', 1)[0] if '(("' in line else "?"
        found.append((proto, int(port), address, process))
    return found


def credentials_dir() -> str:
    try:
        return os.environ["LABSTATS_CREDENTIALS_DIR"]
    except KeyError:
        pytest.fail("LABSTATS_CREDENTIALS_DIR unset (Molecule's provisioner env sets it)")


def password(user: str) -> str:
    """A Redis user's generated password: a training account's own, or a service user's."""
    own = os.path.join(credentials_dir(), "redis", "users", f"{user}.password")
    path = own if os.path.exists(own) else os.path.join(credentials_dir(), "redis", f"{user}.password")
    with open(path) as f:
        return f.read().strip()


def redis_cli(host, user: str | None, *args: str, port: int = 6379, address: str = "127.0.0.1"):
    """Run redis-cli on a box as a Redis user (the password goes through the environment,
    not the command line). Returns testinfra's CommandResult."""
    auth = f"REDISCLI_AUTH={shlex.quote(password(user))} " if user else ""
    user_arg = f"--user {user} " if user else ""
    quoted = " ".join(shlex.quote(a) for a in args)
    return host.run(f"{auth}redis-cli -h {address} -p {port} {user_arg}--no-auth-warning {quoted}")


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def tunnel_address(host) -> str:
    """The box's own address on wg0, as the kernel reports it."""
    out = host.check_output("ip -4 -o addr show dev wg0")
    return out.split(" inet ", 1)[1].split("/", 1)[0]


RUN_SCRIPT = """
import sys, numpy as np, labstats
w = np.zeros((4, 8), dtype=np.float32)
with labstats.Stats("runs/" + sys.argv[1], config={"lr": 0.01, "note": "<b>not bold</b>"}) as stats:
    stats.watch(w, "weights")
    stats.watch(w, "weights_hist", kind="histogram", bins=8)
    for step in range(int(sys.argv[2])):
        w += 0.01
        stats.update(0, 100000, 1, step)
        stats.log(step=step, loss=1.0 / (step + 1), acc=step / int(sys.argv[2]))
print(stats.name)
print(stats.run_id)
"""


def log_run_on_trainbox(name: str, steps: int = 500) -> tuple[str, str]:
    """Log a run on the training box as the training user, with the deployed client.
    Returns (run name, run id)."""
    train = box("trainbox")
    with train.sudo("researcher"):
        result = train.run("cd ~ && /opt/labstats/venv/bin/python -c %s %s %s", RUN_SCRIPT, name, str(steps))
    assert result.rc == 0, result.stderr
    run_name, run_id = result.stdout.strip().splitlines()[-2:]
    return run_name, run_id


def web_url(path: str) -> str:
    return f"https://{box('webbox').ansible.get_variables()['ansible_host']}{path}"


def web_password(user: str = "labstats") -> str:
    with open(os.path.join(credentials_dir(), "web", f"{user}.password")) as f:
        return f.read().strip()


def web_token(name: str = "labstats") -> str:
    """The API token scripts use (Authorization: Bearer ...)."""
    with open(os.path.join(credentials_dir(), "web", f"{name}.token")) as f:
        return f.read().strip()


def https_request(path: str, method: str = "GET", token: str | None = None, headers: dict | None = None,
                  data: bytes | None = None, timeout: float = 10.0):  # fmt: skip
    """A request through nginx from the controller, following no redirect.
    Returns (status, headers, body)."""
    import ssl
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the lab's certificate is self-signed
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect)
    request = urllib.request.Request(web_url(path), data=data, method=method, headers=headers or {})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def https_get(path: str, token: str | None = None, headers: dict | None = None, timeout: float = 10.0):
    return https_request(path, token=token, headers=headers, timeout=timeout)


def viewer_login(page, user: str = "labstats") -> None:
    """Log in to the viewer in a browser page as a person does: the login form."""
    page.goto(web_url("/login"))
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", web_password(user))
    page.click("form.login button")
    page.wait_for_url(lambda url: "/login" not in url)
